package process

import (
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

// httpInstance is a program serving HTTP on $PORT in its sandbox.
type httpInstance struct {
	sb        *sandbox
	netns     *os.File // the sandbox's network namespace; nil on the host's
	port      int
	transport *http.Transport
	stderr    *runtime.StderrLog
	limits    runtime.Limits
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
	h.transport = &http.Transport{
		DialContext:         h.dial,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
		// The program's answer may take as long as the function's timeout.
		ResponseHeaderTimeout: 0,
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

func (h *httpInstance) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	if h.netns == nil {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(h.port)))
	}
	return dialInNetNS(ctx, int(h.netns.Fd()), h.port)
}

// awaitListen dials until the program accepts, it exits, or the init
// timeout passes.
func (h *httpInstance) awaitListen(ctx context.Context, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	wait := 100 * time.Microsecond
	for {
		c, err := h.dial(ctx, "", "")
		if err == nil {
			c.Close()
			return nil
		}
		if h.sb.exited() {
			e := h.sb.failure(h.stderr)
			e.Message += " before it listened on $PORT"
			return e
		}
		if !isRefused(err) && !errors.Is(err, context.DeadlineExceeded) {
			var opErr *net.OpError
			if !errors.As(err, &opErr) {
				return runtime.Errorf(runtime.Crashed, "cannot reach the function's program: %v", err)
			}
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

// hopHeaders are a connection's own, not forwarded either way.
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length"}

func (h *httpInstance) Invoke(ctx context.Context, req *runtime.Request, log *slog.Logger) (*runtime.Response, error) {
	h.stderr.Begin(log)
	u := "http://" + req.Host + req.Path
	if req.RawQuery != "" {
		u += "?" + req.RawQuery
	}
	hreq, err := http.NewRequestWithContext(ctx, req.Method, u, bytes.NewReader(req.Body))
	if err != nil {
		return nil, runtime.Errorf(runtime.BadResponse, "cannot forward the request: %v", err)
	}
	hreq.Header = req.Header.Clone()
	if hreq.Header == nil {
		hreq.Header = http.Header{}
	}
	for _, k := range hopHeaders {
		hreq.Header.Del(k)
	}
	hreq.Header.Set("X-Gust-Invocation-Id", req.InvocationID)
	hreq.ContentLength = int64(len(req.Body))
	resp, err := h.transport.RoundTrip(hreq)
	if err != nil {
		return nil, h.failed(ctx, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, int64(h.limits.MaxOutputBytes)+1))
	if err != nil {
		return nil, h.failed(ctx, err)
	}
	if len(body) > h.limits.MaxOutputBytes {
		return nil, runtime.Errorf(runtime.BadResponse, "response is larger than %d bytes", h.limits.MaxOutputBytes)
	}
	header := resp.Header
	for _, k := range hopHeaders {
		header.Del(k)
	}
	return &runtime.Response{Status: resp.StatusCode, Header: header, Body: body}, nil
}

// failed explains a request that got no whole response.
func (h *httpInstance) failed(ctx context.Context, err error) error {
	if ctx.Err() != nil {
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
	if h.transport != nil {
		h.transport.CloseIdleConnections()
	}
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
