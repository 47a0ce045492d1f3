package process

import (
	"bufio"
	"bytes"
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
	"syscall"
	"time"

	"github.com/gust-faas/gust/internal/runtime"
)

// sandboxPort is what $PORT says in a sandbox with its own network.
const sandboxPort = 8080

// httpInstance is a program serving HTTP on $PORT in its sandbox. It
// serves one request at a time, so it keeps one connection to the
// program and speaks HTTP/1.1 on it directly: no transport goroutines.
type httpInstance struct {
	sb     *sandbox
	netns  *os.File // the sandbox's network namespace; nil on the host's
	port   int
	stderr *runtime.StderrLog
	limits runtime.Limits

	conn net.Conn // nil until the first request, and after a failure
	br   *bufio.Reader
	bw   *bufio.Writer
}

func (p *prepared) startHTTP(ctx context.Context, cfg runtime.Config) (runtime.Instance, error) {
	port := sandboxPort
	if cfg.Process.Network {
		var err error
		if port, err = freePort(); err != nil {
			return nil, err
		}
	}
	cfg.Env = programEnv(cfg.Env, "PORT="+strconv.Itoa(port))
	sb, err := p.r.start(ctx, p.dir, cfg, startIO{stdout: cfg.Stderr, stderr: cfg.Stderr}, false)
	if err != nil {
		return nil, err
	}
	h := &httpInstance{sb: sb, port: port, stderr: cfg.Stderr, limits: cfg.Limits}
	if !cfg.Process.Network {
		if h.netns, err = os.Open(fmt.Sprintf("/proc/%d/ns/net", sb.cmd.Process.Pid)); err != nil {
			sb.close()
			return nil, err
		}
	}
	if err := sb.exec(ctx, nil); err != nil {
		h.Close(ctx)
		return nil, err
	}
	if err := h.awaitListen(ctx, cfg.Process.InitTimeout); err != nil {
		h.Close(ctx)
		return nil, err
	}
	return h, nil
}

func (h *httpInstance) dial(ctx context.Context) (net.Conn, error) {
	if h.netns == nil {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(h.port)))
	}
	return dialInNetNS(ctx, int(h.netns.Fd()), h.port)
}

// awaitListen dials until the program accepts, it exits, or the init
// timeout passes. The connection that succeeds serves the first request.
func (h *httpInstance) awaitListen(ctx context.Context, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	wait := 100 * time.Microsecond
	for {
		c, err := h.dial(ctx)
		if err == nil {
			h.setConn(c)
			return nil
		}
		if h.sb.exited() {
			e := h.sb.failure(h.stderr)
			e.Message += " before it listened on $PORT"
			return e
		}
		if !isRefused(err) && ctx.Err() == nil {
			return runtime.Errorf(runtime.Crashed, "cannot reach the function's program: %v", err)
		}
		select {
		case <-ctx.Done():
			return &runtime.Error{Kind: runtime.Timeout, Message: fmt.Sprintf("the function's program did not listen on $PORT (%d) within %s", h.port, timeout), Stderr: tail(h.stderr)}
		case <-h.sb.done:
		case <-time.After(wait):
			wait = min(2*wait, 5*time.Millisecond)
		}
	}
}

func (h *httpInstance) setConn(c net.Conn) {
	h.conn = c
	if h.br == nil {
		h.br, h.bw = bufio.NewReaderSize(c, 16<<10), bufio.NewWriterSize(c, 16<<10)
	} else {
		h.br.Reset(c)
		h.bw.Reset(c)
	}
}

func (h *httpInstance) dropConn() {
	if h.conn != nil {
		h.conn.Close()
		h.conn = nil
	}
}

// hopHeaders are a response's headers about its connection, not passed on.
var hopHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Te": true, "Trailer": true,
	"Transfer-Encoding": true, "Upgrade": true, "Content-Length": true,
}

func (h *httpInstance) Invoke(ctx context.Context, req *runtime.Request, log *slog.Logger) (*runtime.Response, error) {
	h.stderr.Begin(log)
	if h.conn == nil {
		c, err := h.dial(ctx)
		if err != nil {
			return nil, h.failed(ctx, err)
		}
		h.setConn(c)
	}
	// The deadline, or a cancellation, ends the exchange at once.
	if dl, ok := ctx.Deadline(); ok {
		h.conn.SetDeadline(dl)
	} else {
		h.conn.SetDeadline(time.Time{})
	}
	conn := h.conn
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	resp, err := h.exchange(req)
	if err != nil {
		h.dropConn()
		return nil, h.failed(ctx, err)
	}
	return resp, nil
}

// exchange writes req on the connection and reads the response.
func (h *httpInstance) exchange(req *runtime.Request) (*runtime.Response, error) {
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	path := req.Path
	if path == "" || path[0] != '/' {
		path = "/" + path
	}
	bw := h.bw
	bw.WriteString(method)
	bw.WriteByte(' ')
	bw.WriteString(path)
	if req.RawQuery != "" {
		bw.WriteByte('?')
		bw.WriteString(req.RawQuery)
	}
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(req.Host)
	bw.WriteString("\r\nX-Gust-Invocation-Id: ")
	bw.WriteString(req.InvocationID)
	for k, vs := range req.Header {
		if runtime.HiddenHeader(k) {
			continue
		}
		for _, v := range vs {
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
	resp, err := http.ReadResponse(h.br, &http.Request{Method: method})
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, int64(h.limits.MaxOutputBytes)+1))
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	if len(body) > h.limits.MaxOutputBytes {
		h.dropConn()
		return nil, runtime.Errorf(runtime.BadResponse, "response is larger than %d bytes", h.limits.MaxOutputBytes)
	}
	if resp.Close {
		h.dropConn()
	}
	for k := range resp.Header {
		if hopHeaders[k] {
			delete(resp.Header, k)
		}
	}
	return &runtime.Response{Status: resp.StatusCode, Header: resp.Header, Body: body}, nil
}

// failed explains a request that got no whole response.
func (h *httpInstance) failed(ctx context.Context, err error) error {
	var re *runtime.Error
	if errors.As(err, &re) {
		return re
	}
	if ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) {
		// The connection's deadline is the context's, and may pass first.
		return &runtime.Error{Kind: runtime.Timeout, Message: "the function did not answer before its deadline", Stderr: tail(h.stderr)}
	}
	select {
	case <-h.sb.done:
		return h.sb.failure(h.stderr)
	case <-time.After(50 * time.Millisecond):
		// The program may be dying: give the kernel a moment to say so.
	}
	if h.sb.exited() {
		return h.sb.failure(h.stderr)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
		// A handler that panicked: Go's and most servers' recover by
		// dropping the connection.
		return &runtime.Error{Kind: runtime.Crashed, Message: "the function's program closed the connection without answering", Stderr: tail(h.stderr)}
	}
	return &runtime.Error{Kind: runtime.BadResponse, Message: "the function's program did not answer with HTTP", Err: err, Stderr: tail(h.stderr)}
}

func (h *httpInstance) Reusable() bool { return !h.sb.exited() }

func (h *httpInstance) Close(context.Context) error {
	h.sb.close()
	h.dropConn()
	if h.netns != nil {
		h.netns.Close()
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
		k, _, _ := bytes.Cut([]byte(kv), []byte("="))
		if i, ok := seen[string(k)]; ok {
			out[i] = kv
			continue
		}
		seen[string(k)] = len(out)
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
