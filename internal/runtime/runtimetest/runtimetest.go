// Package runtimetest is the conformance suite that every kind of sandbox
// passes: the same requests to the same function (the Go SDK fixture in
// internal/runtime/wasm/testdata/reactor, built for each sandbox) get the
// same answers and the same typed errors.
package runtimetest

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gust-faas/gust/internal/runtime"
)

// Fixture is the package path of the function every sandbox runs, relative
// to the module root.
const Fixture = "internal/runtime/wasm/testdata/reactor"

// Start starts an instance of the fixture under cfg.
type Start func(t *testing.T, ctx context.Context, cfg runtime.Config) (runtime.Instance, error)

// Config returns the configuration the cases use, with memory MiB of memory.
func Config(memory uint64) runtime.Config {
	return runtime.Config{
		Env:    []string{"GREETING=hi"},
		Limits: runtime.Limits{MemoryBytes: memory << 20, MaxOutputBytes: 6 << 20},
		Stderr: runtime.NewStderrLog(slog.New(slog.DiscardHandler), runtime.MaxLogLines),
	}
}

func request(method, path, body string) *runtime.Request {
	return &runtime.Request{
		Method: method, Path: path, Header: http.Header{"X-Test": {"1"}}, Body: []byte(body),
		Host: "gust.test", RemoteAddr: "192.0.2.1:1234", InvocationID: "inv-" + strings.Trim(path, "/"),
		Tenant: "t", Function: "f", Version: 1,
	}
}

// Run runs every case against instances that start makes.
func Run(t *testing.T, start Start) {
	newInstance := func(t *testing.T, memory uint64) runtime.Instance {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		inst, err := start(t, ctx, Config(memory))
		if err != nil {
			t.Fatalf("start: %v", err)
		}
		t.Cleanup(func() { inst.Close(context.Background()) })
		return inst
	}
	invoke := func(inst runtime.Instance, req *runtime.Request, timeout time.Duration) (*runtime.Response, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return inst.Invoke(ctx, req, slog.New(slog.DiscardHandler))
	}

	t.Run("answers and stays warm", func(t *testing.T) {
		inst := newInstance(t, 128)
		resp, err := invoke(inst, request("POST", "/echo", "payload"), 10*time.Second)
		if err != nil {
			t.Fatalf("invoke: %v", err)
		}
		if resp.Status != http.StatusCreated || resp.Header.Get("X-Reactor") != "yes" || string(resp.Body) != "POST /echo payload" {
			t.Errorf("answer = %d %v %q, want 201 with X-Reactor and the echo", resp.Status, resp.Header, resp.Body)
		}
		if !inst.Reusable() {
			t.Fatal("a warm instance is not reusable after a good answer")
		}
		for want := range []string{"1", "2"} {
			resp, err := invoke(inst, request("GET", "/count", ""), 10*time.Second)
			if err != nil {
				t.Fatalf("invoke: %v", err)
			}
			// /echo was the first request.
			if got, w := string(resp.Body), []string{"2", "3"}[want]; got != w {
				t.Errorf("/count = %q, want %q: the same instance serves each request", got, w)
			}
		}
	})
	t.Run("environment and invocation id", func(t *testing.T) {
		inst := newInstance(t, 128)
		resp, err := invoke(inst, request("GET", "/env", ""), 10*time.Second)
		if err != nil {
			t.Fatalf("invoke: %v", err)
		}
		if got := string(resp.Body); got != "GREETING=hi ID=inv-env" {
			t.Errorf("/env = %q", got)
		}
	})
	t.Run("credentials and Gust's own headers stay Gust's", func(t *testing.T) {
		inst := newInstance(t, 128)
		req := request("GET", "/headers", "")
		req.Header.Set("Authorization", "Bearer gust_secret")
		resp, err := invoke(inst, req, 10*time.Second)
		if err != nil {
			t.Fatalf("invoke: %v", err)
		}
		if got := string(resp.Body); got != `auth="" test="1"` {
			t.Errorf("/headers = %q, want the Authorization header hidden and X-Test passed", got)
		}
		if v := resp.Header.Get("X-Gust-Error"); v != "" {
			t.Errorf("the function set Gust's own X-Gust-Error header (%q) and it was passed on", v)
		}
	})
	t.Run("a destination's source is Gust's to say, not the caller's", func(t *testing.T) {
		inst := newInstance(t, 128)
		req := request("POST", "/echo", "x")
		req.Header.Set("X-Gust-Source-Invocation", "forged")
		resp, err := invoke(inst, req, 10*time.Second)
		if err != nil || string(resp.Body) != "POST /echo x" {
			t.Errorf("a caller's X-Gust-Source-Invocation: %v %q, want it not to reach the function", err, body(resp))
		}
		req.Source = "inv-source"
		resp, err = invoke(inst, req, 10*time.Second)
		if err != nil || string(resp.Body) != "POST /echo x source=inv-source" {
			t.Errorf("a destination's invocation: %v %q, want the function to see X-Gust-Source-Invocation: inv-source", err, body(resp))
		}
	})
	t.Run("a request cannot smuggle another into the function", func(t *testing.T) {
		inst := newInstance(t, 128)
		evil := request("POST", "/a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\nGET /injected", "evil")
		evil.Header.Set("Expect", "100-continue")
		evil.RawQuery = "q=1 HTTP/1.1\r\nX: y"
		resp, err := invoke(inst, evil, 10*time.Second)
		if err != nil {
			t.Fatalf("invoke: %v", err)
		}
		if got := string(resp.Body); resp.Status != http.StatusCreated || !strings.HasPrefix(got, "POST /a HTTP/1.1\r\nHost: x") || !strings.HasSuffix(got, "/injected evil") {
			t.Errorf("the hostile request got %d %q, want its own echo", resp.Status, got)
		}
		for _, path := range []string{"/next", "/after"} {
			resp, err := invoke(inst, request("POST", path, "mine"), 10*time.Second)
			if err != nil {
				t.Fatalf("invoke: %v", err)
			}
			if got, want := string(resp.Body), "POST "+path+" mine"; got != want {
				t.Errorf("the next request got %q, want %q", got, want)
			}
		}
	})
	for _, c := range []struct {
		path    string
		memory  uint64
		timeout time.Duration
		want    runtime.Kind
	}{
		{"/loop", 128, 500 * time.Millisecond, runtime.Timeout},
		{"/sleep", 128, 500 * time.Millisecond, runtime.Timeout},
		{"/oom", 64, 30 * time.Second, runtime.OutOfMemory},
		{"/panic", 128, 10 * time.Second, runtime.Crashed},
		{"/exit", 128, 10 * time.Second, runtime.Crashed},
		{"/big", 128, 10 * time.Second, runtime.BadResponse},
		{"/bigheader", 128, 10 * time.Second, runtime.BadResponse},
	} {
		t.Run(c.path, func(t *testing.T) {
			inst := newInstance(t, c.memory)
			_, err := invoke(inst, request("GET", c.path, ""), c.timeout)
			if k := runtime.KindOf(err); k != c.want {
				t.Errorf("%s: error %v (kind %v), want kind %v", c.path, err, k, c.want)
			}
		})
	}
}

// body is resp's body, or nothing without a response.
func body(resp *runtime.Response) []byte {
	if resp == nil {
		return nil
	}
	return resp.Body
}
