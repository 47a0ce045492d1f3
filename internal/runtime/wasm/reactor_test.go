package wasm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gust-faas/gust/internal/runtime"
)

func startReactor(t *testing.T) (*Module, *Instance) {
	t.Helper()
	ctx := context.Background()
	rt := newRuntime(t)
	m, err := rt.Compile(ctx, "", reactorWasm)
	if err != nil {
		t.Fatal(err)
	}
	if m.Kind() != Reactor {
		t.Fatalf("Kind = %v, want reactor", m.Kind())
	}
	return m, startInstance(t, m)
}

func startInstance(t *testing.T, m *Module) *Instance {
	t.Helper()
	inst, err := m.Start(context.Background(), InstanceConfig{
		Env:    []string{"GREETING=hi"},
		Limits: testLimits,
		Stderr: runtime.NewStderrLog(slog.New(slog.DiscardHandler), 100),
	})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { inst.Close(context.Background()) })
	return inst
}

func callReactor(t *testing.T, inst *Instance, timeout time.Duration, method, path, body string) (*runtime.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req := &runtime.Request{
		Method: method, Path: path, Body: []byte(body), Host: "h", InvocationID: "inv-1",
		Header: http.Header{"X-Gust-Invocation-Id": {"spoofed"}, "Authorization": {"Bearer secret"}},
	}
	return inst.Invoke(ctx, req, slog.New(slog.DiscardHandler))
}

func TestReactorServesWarm(t *testing.T) {
	_, inst := startReactor(t)
	for i := 1; i <= 5; i++ {
		resp, err := callReactor(t, inst, 5*time.Second, "GET", "/count", "")
		if err != nil {
			t.Fatal(err)
		}
		if got, want := string(resp.Body), string(rune('0'+i)); got != want {
			t.Fatalf("request %d: instance counted %q, want %q: the instance was not reused", i, got, want)
		}
	}
	resp, err := callReactor(t, inst, 5*time.Second, "POST", "/echo", "payload")
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 201 || resp.Header.Get("X-Reactor") != "yes" || string(resp.Body) != "POST /echo payload" {
		t.Errorf("echo = %d %v %q", resp.Status, resp.Header, resp.Body)
	}
	resp, err = callReactor(t, inst, 5*time.Second, "GET", "/env", "")
	if err != nil {
		t.Fatal(err)
	}
	if got := string(resp.Body); got != "GREETING=hi ID=inv-1" {
		t.Errorf("env = %q, want the spec's env and Gust's invocation id (not the client's)", got)
	}
}

// TestReactorRequest: the SDK hands the handler the request as net/http
// would, repeated headers, many headers, query and empty bodies included.
func TestReactorRequest(t *testing.T) {
	_, inst := startReactor(t)
	header := http.Header{"X-Test": {"a", "b"}}
	for i := 1; i <= 9; i++ {
		header.Set(fmt.Sprintf("X-H%d", i), strconv.Itoa(i))
	}
	for _, tt := range []struct {
		body, query, want string
	}{
		{"", "", `uri=/request len=0 nobody=true body="" x-test=["a" "b"] many=12 x-h9="9"`},
		{"hi", "q=1", `uri=/request?q=1 len=2 nobody=false body="hi" x-test=["a" "b"] many=12 x-h9="9"`},
	} {
		req := &runtime.Request{Method: "POST", Path: "/request", RawQuery: tt.query, Body: []byte(tt.body), Header: header, InvocationID: "inv"}
		resp, err := inst.Invoke(context.Background(), req, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		// 12 names: the ten sent, Content-Length and the invocation id.
		if got := string(resp.Body); got != tt.want {
			t.Errorf("body %q query %q: the handler saw\n%s\nwant\n%s", tt.body, tt.query, got, tt.want)
		}
	}
}

// TestReactorContentType: a body written without a Content-Type gets one
// sniffed from its first bytes, by Write and WriteString alike; one that
// the handler set is kept.
func TestReactorContentType(t *testing.T) {
	_, inst := startReactor(t)
	for path, want := range map[string]string{
		"/sniff-string": "text/html; charset=utf-8",
		"/sniff-bytes":  "text/html; charset=utf-8",
		"/typed-string": "application/x-custom",
	} {
		resp, err := callReactor(t, inst, 5*time.Second, "GET", path, "")
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.Header.Get("Content-Type"); got != want || string(resp.Body) != "<html><body>hi</body></html>" {
			t.Errorf("%s: Content-Type %q body %q, want %q and the page", path, got, resp.Body, want)
		}
	}
}

// TestReactorHeadIsTheHandlers: a header value with CR or LF cannot add
// lines to the response's head, nor one with another control byte fail
// the response, a header name that is not a token is dropped, an
// informational status (101 too) is not the response's, and a body after
// WriteHeader still has its Content-Type sniffed, as with net/http.
func TestReactorHeadIsTheHandlers(t *testing.T) {
	_, inst := startReactor(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req := &runtime.Request{Method: "GET", Path: "/inject", RawQuery: "v=a%01b%7F%0D%0AStatus:%20302%0D%0ASet-Cookie:%20evil=1%0A%0Abody", Header: http.Header{}}
	resp, err := inst.Invoke(ctx, req, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 404 || resp.Header.Get("Set-Cookie") != "" || resp.Header.Get("Bad Name") != "" {
		t.Errorf("status %d, headers %v: want 404 and no injected header", resp.Status, resp.Header)
	}
	if got := resp.Header.Get("X-Echo"); got != "a b   Status: 302  Set-Cookie: evil=1  body" {
		t.Errorf("X-Echo = %q, want the value with its control bytes as spaces", got)
	}
	if got := resp.Header.Get("Content-Type"); got != "text/html; charset=utf-8" || string(resp.Body) != "<!DOCTYPE html><html>missing</html>" {
		t.Errorf("Content-Type %q, body %q: want the page, sniffed as HTML", got, resp.Body)
	}
}

// TestReactorTunesGC: a warm SDK instance collects at GOGC=400, with a
// soft memory limit at 7/8 of its memory_mb, unless its environment says
// otherwise.
func TestReactorTunesGC(t *testing.T) {
	ctx := context.Background()
	m, _ := startReactor(t)
	for _, tt := range []struct {
		env  []string
		want string
	}{
		{[]string{"GUST_MEMORY_MB=64"}, fmt.Sprintf("gogc=400 limit=%d", 56<<20)},
		{[]string{"GUST_MEMORY_MB=64", "GOGC=50", "GOMEMLIMIT=10MiB"}, fmt.Sprintf("gogc=50 limit=%d", 10<<20)},
	} {
		inst, err := m.Start(ctx, InstanceConfig{Env: tt.env, Limits: testLimits, Stderr: runtime.NewStderrLog(slog.New(slog.DiscardHandler), 100)})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := inst.Invoke(ctx, &runtime.Request{Method: "GET", Path: "/gc"}, slog.New(slog.DiscardHandler))
		inst.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(resp.Body); got != tt.want {
			t.Errorf("env %v: %s, want %s", tt.env, got, tt.want)
		}
	}
}

func TestReactorFailures(t *testing.T) {
	tests := []struct {
		path    string
		timeout time.Duration
		kind    runtime.Kind
		message string
	}{
		{"/loop", 300 * time.Millisecond, runtime.Timeout, "deadline"},
		{"/sleep", 300 * time.Millisecond, runtime.Timeout, "deadline"},
		{"/oom", 20 * time.Second, runtime.OutOfMemory, "64 MiB"},
		{"/panic", 5 * time.Second, runtime.Crashed, "trapped"},
		{"/exit", 5 * time.Second, runtime.Crashed, "exited with code 4"},
		{"/exit0", 5 * time.Second, runtime.Crashed, "exited with code 0"},
		{"/big", 20 * time.Second, runtime.BadResponse, "larger than"},
	}
	m, _ := startReactor(t)
	for _, tt := range tests {
		t.Run(strings.TrimPrefix(tt.path, "/"), func(t *testing.T) {
			inst := startInstance(t, m)
			start := time.Now()
			_, err := callReactor(t, inst, tt.timeout, "GET", tt.path, "")
			var rerr *runtime.Error
			if !errors.As(err, &rerr) || rerr.Kind != tt.kind || !strings.Contains(rerr.Message, tt.message) {
				t.Fatalf("Invoke(%s) = %v, want %v containing %q", tt.path, err, tt.kind, tt.message)
			}
			if tt.path == "/panic" && !strings.Contains(rerr.Stderr, "reactor panicked on purpose") {
				t.Errorf("panic's stderr tail = %q, want the panic message", rerr.Stderr)
			}
			if tt.kind == runtime.Timeout && time.Since(start) > tt.timeout+5*time.Second {
				t.Errorf("guest ran %v past its deadline", time.Since(start))
			}
			if strings.HasPrefix(tt.path, "/exit") {
				// An instance that exited is closed, its memory another's
				// to take: it is never called again.
				if inst.Reusable() {
					t.Errorf("an instance that exited is reusable")
				}
				if _, err := callReactor(t, inst, tt.timeout, "GET", "/env", ""); !errors.As(err, &rerr) || rerr.Kind != runtime.Crashed {
					t.Errorf("a call to an instance that exited: %v, want crashed", err)
				}
			}
		})
	}
}

func TestReactorStartRespectsMemory(t *testing.T) {
	m, _ := startReactor(t)
	_, err := m.Start(context.Background(), InstanceConfig{
		Limits: runtime.Limits{MemoryBytes: 1 << 20, MaxOutputBytes: 1 << 20},
		Stderr: runtime.NewStderrLog(slog.New(slog.DiscardHandler), 10),
	})
	if runtime.KindOf(err) != runtime.OutOfMemory {
		t.Errorf("Start with 1 MiB = %v, want out of memory", err)
	}
}
