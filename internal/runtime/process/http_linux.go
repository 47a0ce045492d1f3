package process

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gust-faas/gust/internal/cgi"
	"github.com/gust-faas/gust/internal/deadline"
	"github.com/gust-faas/gust/internal/runtime"
)

// sandboxPort is what $PORT says in a sandbox with its own network.
const sandboxPort = 8080

// httpSandbox is a program serving HTTP on $PORT in its sandbox. With a
// concurrency of n it serves n slots at once.
type httpSandbox struct {
	key    string
	sb     *sandbox
	netns  *os.File // the sandbox's network namespace; nil on the host's
	port   int
	stderr *runtime.StderrLog

	// Guarded by prepared.mu.
	slots, capacity int
	ready           chan struct{} // closed when the program listens, or failed to
	err             error
	first           net.Conn // the connection that found it listening
}

// httpInstance is one slot of an httpSandbox: it serves one request at a
// time on a connection of its own, speaking HTTP/1.1 directly.
type httpInstance struct {
	p      *prepared
	s      *httpSandbox
	limits runtime.Limits

	conn net.Conn         // nil until the first request, and after a failure
	lr   io.LimitedReader // bounds what one response may send
	br   *bufio.Reader
	bw   *bufio.Writer
}

// startHTTP returns a slot of a program that has one free, or starts one.
func (p *prepared) startHTTP(ctx context.Context, cfg runtime.Config) (runtime.Instance, error) {
	key := sandboxKey(cfg)
	p.mu.Lock()
	var s *httpSandbox
	for _, c := range p.shared[key] {
		if c.slots < c.capacity && (c.sb == nil || !c.sb.exited()) {
			s = c
			break
		}
	}
	starter := s == nil
	if starter {
		s = &httpSandbox{key: key, capacity: max(1, cfg.Process.Concurrency), ready: make(chan struct{})}
		p.shared[key] = append(p.shared[key], s)
	}
	s.slots++
	p.mu.Unlock()
	if starter {
		s.err = p.bootHTTP(ctx, s, cfg)
		close(s.ready)
	}
	select {
	case <-s.ready:
	case <-ctx.Done():
		p.release(s)
		return nil, runtime.Errorf(runtime.Timeout, "the function's program did not start before the deadline")
	}
	if s.err != nil {
		p.release(s)
		return nil, s.err
	}
	h := &httpInstance{p: p, s: s, limits: cfg.Limits}
	p.mu.Lock()
	if c := s.first; c != nil {
		s.first = nil
		h.setConn(c)
	}
	p.mu.Unlock()
	return h, nil
}

// sandboxKey tells apart the configurations that slots may share a
// program under.
func sandboxKey(cfg runtime.Config) string {
	var b strings.Builder
	for _, list := range [][]string{cfg.Env, cfg.Process.Command} {
		for _, s := range list {
			fmt.Fprintf(&b, "%d:%s", len(s), s)
		}
		b.WriteByte('|')
	}
	fmt.Fprintf(&b, "%d|%t|%d", cfg.Limits.MemoryBytes, cfg.Process.Network, cfg.Process.Concurrency)
	return b.String()
}

// release gives back a slot of s; the last one stops the program.
func (p *prepared) release(s *httpSandbox) {
	p.mu.Lock()
	s.slots--
	last := s.slots == 0
	if last {
		p.shared[s.key] = slices.DeleteFunc(p.shared[s.key], func(c *httpSandbox) bool { return c == s })
		if len(p.shared[s.key]) == 0 {
			delete(p.shared, s.key)
		}
		if s.first != nil {
			s.first.Close()
		}
	}
	p.mu.Unlock()
	if last && s.sb != nil {
		s.sb.close()
		if s.netns != nil {
			s.netns.Close()
		}
	}
}

// bootHTTP starts s's program and waits for it to listen.
func (p *prepared) bootHTTP(ctx context.Context, s *httpSandbox, cfg runtime.Config) error {
	s.port = sandboxPort
	if cfg.Process.Network {
		var err error
		if s.port, err = freePort(); err != nil {
			return err
		}
	}
	cfg.Env = programEnv(cfg.Env, "PORT="+strconv.Itoa(s.port))
	s.stderr = cfg.Stderr
	sb, err := p.r.start(ctx, p.dir, cfg, startOptions{output: cfg.Stderr})
	if err != nil {
		return err
	}
	p.mu.Lock() // startHTTP looks at it under the lock
	s.sb = sb
	p.mu.Unlock()
	if !cfg.Process.Network {
		if s.netns, err = os.Open(fmt.Sprintf("/proc/%d/ns/net", sb.cmd.Process.Pid)); err != nil {
			return err
		}
	}
	if err := sb.exec(ctx, nil); err != nil {
		return err
	}
	return s.awaitListen(ctx, cfg.Process.InitTimeout)
}

func (s *httpSandbox) dial(ctx context.Context) (net.Conn, error) {
	if s.netns == nil {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)))
	}
	return dialInNetNS(ctx, int(s.netns.Fd()), s.port)
}

// awaitListen dials until the program accepts, it exits, or the init
// timeout passes. The connection that succeeds serves the first slot.
func (s *httpSandbox) awaitListen(ctx context.Context, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// Most programs listen within a hundred milliseconds, and each
	// millisecond of waiting past that is a cold start's: dial every
	// millisecond until then, then back off to every five.
	started := time.Now()
	wait := 100 * time.Microsecond
	for {
		c, err := s.dial(ctx)
		if err == nil {
			s.first = c
			return nil
		}
		if s.sb.exited() {
			e := s.sb.failure(s.stderr, program)
			e.Message += " before it listened on $PORT"
			return e
		}
		if !isRefused(err) && ctx.Err() == nil {
			return runtime.Errorf(runtime.Crashed, "cannot reach the function's program: %v", err)
		}
		select {
		case <-ctx.Done():
			return &runtime.Error{Kind: runtime.Timeout, Message: fmt.Sprintf("the function's program did not listen on $PORT (%d) within %s", s.port, timeout), Stderr: tail(s.stderr)}
		case <-s.sb.done:
		case <-time.After(wait):
			most := time.Millisecond
			if time.Since(started) > 100*time.Millisecond {
				most = 5 * time.Millisecond
			}
			wait = min(2*wait, most)
		}
	}
}

func (h *httpInstance) setConn(c net.Conn) {
	h.conn = c
	h.lr.R = c
	if h.br == nil {
		h.br, h.bw = bufio.NewReaderSize(&h.lr, 16<<10), bufio.NewWriterSize(c, 16<<10)
	} else {
		h.br.Reset(&h.lr)
		h.bw.Reset(c)
	}
}

func (h *httpInstance) dropConn() {
	if h.conn != nil {
		h.conn.Close()
		h.conn = nil
	}
}

func (h *httpInstance) Invoke(ctx context.Context, req *runtime.Request, log *slog.Logger) (*runtime.Response, error) {
	// With a concurrency above 1, the program's lines go to the latest
	// invocation's log.
	h.s.stderr.Begin(log)
	// A kept connection goes unless it is open with nothing unread: servers
	// close idle connections after a few seconds (Node.js after 5, gunicorn
	// after 2), and bytes that came after the last response are not this
	// request's answer.
	if h.conn != nil && !open(h.conn) {
		h.dropConn()
	}
	reused := h.conn != nil
	resp, err := h.roundTrip(ctx, req)
	if err != nil && reused && h.lr.N == h.responseLimit() && closedByPeer(err) && replayable(req) && ctx.Err() == nil {
		// The program closed the kept connection as the request went out,
		// and answered none of it: a request that may run twice goes again,
		// on a new connection, as Go's and browsers' clients do.
		h.dropConn()
		resp, err = h.roundTrip(ctx, req)
	}
	if err != nil {
		h.dropConn()
		return nil, h.failed(ctx, err)
	}
	return resp, nil
}

// roundTrip sends req on the kept connection, or on a new one, within ctx.
func (h *httpInstance) roundTrip(ctx context.Context, req *runtime.Request) (*runtime.Response, error) {
	if h.conn == nil {
		c, err := h.s.dial(ctx)
		if err != nil {
			return nil, err
		}
		h.setConn(c)
	}
	// The deadline, as the connection's, or a cancellation ends the
	// exchange at once. The cancellation is watched on the context without
	// its deadline, which would otherwise arm a timer for every request.
	if dl, ok := ctx.Deadline(); ok {
		h.conn.SetDeadline(dl)
	} else {
		h.conn.SetDeadline(time.Time{})
	}
	conn := h.conn
	stop := context.AfterFunc(deadline.WithoutDeadline(ctx), func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	return h.exchange(req)
}

// open reports whether the program has neither closed c nor sent anything
// unasked on it, without waiting.
func open(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var buf [1]byte
	var perr error
	if err := rc.Read(func(fd uintptr) bool {
		_, _, perr = unix.Recvfrom(int(fd), buf[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return true
	}); err != nil {
		return false
	}
	return perr == unix.EAGAIN
}

// reusableAfter reports whether a connection may carry another caller's
// request after req and its response. Not after a request with a body: a
// program that does not read a body it ignores (Python's http.server does
// not) takes what the body holds for a request of its own, whose answer a
// hostile caller could make the next caller's. Not after a response that
// has no body by definition (to a HEAD, a 204, a 304), which a program
// may send one with all the same.
func reusableAfter(req *runtime.Request, resp *http.Response) bool {
	return len(req.Body) == 0 && req.Method != http.MethodHead &&
		resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusNotModified
}

// closedByPeer reports whether err is the end of a connection the other
// side closed.
func closedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// replayable reports whether req may be sent twice: its method is safe, or
// the caller marked it idempotent.
func replayable(req *runtime.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return req.Header.Get("Idempotency-Key") != "" || req.Header.Get("X-Idempotency-Key") != ""
}

// responseLimit is how many bytes one response may take from the
// connection, head and body.
func (h *httpInstance) responseLimit() int64 {
	return int64(h.limits.MaxOutputBytes) + cgi.MaxHeaderBytes
}

// exchange writes req on the connection and reads the response. Nothing
// of the caller's reaches the request line or a header unescaped; a
// connection with anything left unread after the response, or after an
// exchange a program may frame wrongly (see reusableAfter), is dropped,
// and a kept one is checked for unread bytes before its next request.
// (A program that sends what nobody asked for, on its own, can still
// reach a caller: nothing tells its bytes from an answer.)
func (h *httpInstance) exchange(req *runtime.Request) (*runtime.Response, error) {
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	if !validToken(method) {
		return nil, runtime.Errorf(runtime.BadResponse, "the request's method %q cannot be forwarded", method)
	}
	h.lr.N = h.responseLimit() // and nothing read yet
	bw := h.bw
	bw.WriteString(method)
	bw.WriteByte(' ')
	bw.WriteString(req.EscapedPath())
	if req.RawQuery != "" {
		bw.WriteByte('?')
		bw.WriteString(runtime.EscapeControls(req.RawQuery))
	}
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(runtime.EscapeControls(req.Host))
	bw.WriteString("\r\nX-Gust-Invocation-Id: ")
	bw.WriteString(runtime.EscapeControls(req.InvocationID))
	if req.Source != "" {
		bw.WriteString("\r\nX-Gust-Source-Invocation: ")
		bw.WriteString(runtime.EscapeControls(req.Source))
	}
	for k, vs := range req.Header {
		if runtime.HiddenHeader(k) || !validToken(k) {
			continue
		}
		for _, v := range vs {
			if strings.ContainsAny(v, "\r\n\x00") {
				continue
			}
			bw.WriteString("\r\n")
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
		}
	}
	bw.WriteString("\r\nContent-Length: ")
	bw.WriteString(strconv.Itoa(len(req.Body)))
	bw.WriteString("\r\n\r\n")
	bw.Write(req.Body)
	if err := bw.Flush(); err != nil {
		return nil, err
	}
	tooLarge := func() error {
		return runtime.Errorf(runtime.BadResponse, "response is larger than %d bytes", h.limits.MaxOutputBytes)
	}
	var resp *http.Response
	for {
		var err error
		if resp, err = http.ReadResponse(h.br, &http.Request{Method: method}); err != nil {
			if h.lr.N <= 0 {
				return nil, tooLarge()
			}
			return nil, err
		}
		if resp.StatusCode == http.StatusSwitchingProtocols || resp.StatusCode >= 200 {
			break
		}
		// 100 Continue, 103 Early Hints: the answer follows.
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		h.dropConn()
		return nil, runtime.Errorf(runtime.BadResponse, "the function switched protocols, which Gust does not forward")
	}
	if resp.StatusCode > 599 {
		h.dropConn()
		return nil, runtime.Errorf(runtime.BadResponse, "status %d is not an HTTP status (200 to 599)", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, int64(h.limits.MaxOutputBytes)+1))
	resp.Body.Close()
	if err != nil {
		if h.lr.N <= 0 {
			return nil, tooLarge()
		}
		return nil, err
	}
	if len(body) > h.limits.MaxOutputBytes {
		h.dropConn()
		return nil, tooLarge()
	}
	if resp.Close || h.br.Buffered() > 0 || !reusableAfter(req, resp) {
		h.dropConn() // what it sent beyond its answer must not become the next one's
	}
	lines := 0
	for k, vs := range resp.Header {
		lines += len(vs)
		if runtime.DroppedResponseHeader(k) {
			delete(resp.Header, k)
		}
	}
	if lines > cgi.MaxHeaders {
		h.dropConn()
		return nil, runtime.Errorf(runtime.BadResponse, "response has %d header lines, at most %d are allowed", lines, cgi.MaxHeaders)
	}
	out := &runtime.Response{Status: resp.StatusCode, Header: resp.Header, Body: body}
	if method == http.MethodHead && resp.ContentLength > 0 {
		out.HeadLength = resp.ContentLength
	}
	return out, nil
}

// validToken reports whether s is an HTTP token: a method or a header name.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// failed explains a request that got no whole response.
func (h *httpInstance) failed(ctx context.Context, err error) error {
	var re *runtime.Error
	if errors.As(err, &re) {
		return re
	}
	s := h.s
	if ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) {
		// The connection's deadline is the context's, and may pass first.
		return &runtime.Error{Kind: runtime.Timeout, Message: "the function did not answer before its deadline", Stderr: tail(s.stderr)}
	}
	select {
	case <-s.sb.done:
		return s.sb.failure(s.stderr, program)
	case <-time.After(50 * time.Millisecond):
		// The program may be dying: give the kernel a moment to say so.
	}
	if s.sb.exited() {
		return s.sb.failure(s.stderr, program)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
		// A handler that panicked: Go's and most servers' recover by
		// dropping the connection.
		return &runtime.Error{Kind: runtime.Crashed, Message: "the function's program closed the connection without answering", Stderr: tail(s.stderr)}
	}
	return &runtime.Error{Kind: runtime.BadResponse, Message: "the function's program did not answer with HTTP", Err: err, Stderr: tail(s.stderr)}
}

func (h *httpInstance) Reusable() bool { return !h.s.sb.exited() }

// Close gives the slot back; the program stops with its last slot. A
// faulted slot of a program of concurrency 1 is its last.
func (h *httpInstance) Close(context.Context) error {
	h.dropConn()
	if h.p != nil {
		h.p.release(h.s)
		h.p = nil
	}
	return nil
}

// programEnv is the environment every program gets, then env, then extra;
// a later value of a name replaces an earlier one.
func programEnv(env []string, extra ...string) []string {
	base := []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp", "TMPDIR=/tmp", "LANG=C.UTF-8"}
	var out []string
	seen := map[string]int{}
	for _, kv := range slices.Concat(base, env, extra) {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := seen[k]; ok {
			out[i] = kv
			continue
		}
		seen[k] = len(out)
		out = append(out, kv)
	}
	return out
}

// freePort returns a TCP port of the host's loopback that nothing uses now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
