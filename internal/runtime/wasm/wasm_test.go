package wasm

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gust-faas/gust/internal/runtime"
	"github.com/gust-faas/gust/internal/runtime/wasm/wasmtest"
)

var guestWasm, reactorWasm []byte

func TestMain(m *testing.M) {
	guestWasm = wasmtest.MustRead(wasmtest.Guest)
	reactorWasm = wasmtest.MustRead(wasmtest.Reactor)
	os.Exit(m.Run())
}

func compileGuest(t *testing.T, cacheDir string) *Module {
	t.Helper()
	ctx := context.Background()
	rt, err := New(ctx, Config{CacheDir: cacheDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close(ctx) })
	m, err := rt.Compile(ctx, "", guestWasm)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

var testLimits = runtime.Limits{MemoryBytes: 64 << 20, MaxOutputBytes: 1 << 20}

func invoke(t *testing.T, m *Module, timeout time.Duration, path string, body string) (*runtime.Response, error, *runtime.StderrLog) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	stderr := runtime.NewStderrLog(slog.New(slog.DiscardHandler), 100)
	req := &runtime.Request{
		Method: "POST", Path: path, RawQuery: "a=1&b=2", Body: []byte(body),
		Header:   http.Header{"Content-Type": {"text/plain"}, "X-Test": {"yes"}, "Authorization": {"Bearer secret"}, "Proxy": {"evil"}},
		Function: "guest", Tenant: "default", Host: "localhost:8080", RemoteAddr: "127.0.0.1:5555",
	}
	resp, err := m.Invoke(ctx, req, Invocation{Env: []string{"GREETING=hi"}, Limits: testLimits, Stderr: stderr})
	return resp, err, stderr
}

func TestInvokeCGI(t *testing.T) {
	m := compileGuest(t, "")
	resp, err, _ := invoke(t, m, 10*time.Second, "/hello", "body!")
	if err != nil {
		t.Fatalf("Invoke: %v", err)
	}
	if resp.Status != 201 {
		t.Errorf("status = %d, want 201", resp.Status)
	}
	if got := resp.Header.Get("X-Guest"); got != "yes" {
		t.Errorf("X-Guest = %q, want yes", got)
	}
	if got, want := string(resp.Body), "POST /hello body!"; got != want {
		t.Errorf("body = %q, want %q", got, want)
	}
}

func TestInvokeEnvironment(t *testing.T) {
	m := compileGuest(t, "")
	resp, err, _ := invoke(t, m, 10*time.Second, "/env", "")
	if err != nil {
		t.Fatalf("Invoke: %v", err)
	}
	env := string(resp.Body)
	for _, want := range []string{"GREETING=hi", "REQUEST_METHOD=POST", "PATH_INFO=/env", "QUERY_STRING=a=1&b=2", "CONTENT_TYPE=text/plain", "HTTP_X_TEST=yes", "CONTENT_LENGTH=0", "REMOTE_ADDR=127.0.0.1"} {
		if !strings.Contains(env, want+"\n") {
			t.Errorf("environment lacks %q:\n%s", want, env)
		}
	}
	for _, banned := range []string{"HTTP_AUTHORIZATION", "HTTP_PROXY", "secret"} {
		if strings.Contains(env, banned) {
			t.Errorf("environment contains %q:\n%s", banned, env)
		}
	}
}

func TestGuestSeesNoFilesystem(t *testing.T) {
	m := compileGuest(t, "")
	resp, err, _ := invoke(t, m, 10*time.Second, "/files", "")
	if err != nil {
		t.Fatalf("Invoke: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(resp.Body)), "\n") {
		if strings.HasSuffix(line, "<nil>") {
			t.Errorf("guest could stat a path: %s", line)
		}
	}
}

func TestInvokeFailures(t *testing.T) {
	m := compileGuest(t, "")
	tests := []struct {
		path, body string
		timeout    time.Duration
		kind       runtime.Kind
		message    string // part of the error's message
		stderr     string // part of the stderr tail
	}{
		{path: "/loop", timeout: 300 * time.Millisecond, kind: runtime.Timeout, message: "deadline"},
		{path: "/sleep", timeout: 300 * time.Millisecond, kind: runtime.Timeout, message: "deadline"},
		{path: "/oom", timeout: 20 * time.Second, kind: runtime.OutOfMemory, message: "64 MiB"},
		{path: "/big-alloc", timeout: 20 * time.Second, kind: runtime.OutOfMemory, message: "64 MiB"},
		{path: "/panic", timeout: 10 * time.Second, kind: runtime.Crashed, message: "exited with code 2", stderr: "guest panicked on purpose"},
		{path: "/exit3", timeout: 10 * time.Second, kind: runtime.Crashed, message: "exited with code 3", stderr: "about to exit with code 3"},
		{path: "/huge-output", timeout: 20 * time.Second, kind: runtime.BadResponse, message: "larger than"},
		{path: "/raw", body: "", timeout: 10 * time.Second, kind: runtime.BadResponse, message: "empty"},
		{path: "/raw", body: "Content-Type: text/plain\n\n" + strings.Repeat("a", 1<<20+1), timeout: 10 * time.Second, kind: runtime.BadResponse, message: "larger than"}, // a body just over, its head within the slack
		{path: "/raw", body: "no headers at all", timeout: 10 * time.Second, kind: runtime.BadResponse, message: "no blank line"},
		{path: "/raw", body: "Status: 999\n\n", timeout: 10 * time.Second, kind: runtime.BadResponse, message: "Status"},
		{path: "/raw", body: "X-A: b\rSet-Cookie: x\n\n", timeout: 10 * time.Second, kind: runtime.BadResponse, message: "control character"},
	}
	for _, tt := range tests {
		t.Run(strings.TrimPrefix(tt.path, "/")+"_"+tt.message, func(t *testing.T) {
			start := time.Now()
			_, err, _ := invoke(t, m, tt.timeout, tt.path, tt.body)
			var rerr *runtime.Error
			if !errors.As(err, &rerr) {
				t.Fatalf("Invoke(%s) = %v, want a *runtime.Error", tt.path, err)
			}
			if rerr.Kind != tt.kind {
				t.Errorf("Invoke(%s) kind = %v, want %v (%v)", tt.path, rerr.Kind, tt.kind, err)
			}
			if !strings.Contains(rerr.Message, tt.message) {
				t.Errorf("Invoke(%s) message = %q, want it to contain %q", tt.path, rerr.Message, tt.message)
			}
			if !strings.Contains(rerr.Stderr, tt.stderr) {
				t.Errorf("Invoke(%s) stderr = %q, want it to contain %q", tt.path, rerr.Stderr, tt.stderr)
			}
			if tt.kind == runtime.Timeout {
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("timeout error %v does not match context.DeadlineExceeded", err)
				}
				if elapsed := time.Since(start); elapsed > tt.timeout+5*time.Second {
					t.Errorf("guest kept running %v past a %v deadline", elapsed, tt.timeout)
				}
			}
		})
	}
	// The module still serves after every failure.
	if _, err, _ := invoke(t, m, 10*time.Second, "/ok", ""); err != nil {
		t.Fatalf("Invoke after failures: %v", err)
	}
}

func TestStderrIsBounded(t *testing.T) {
	m := compileGuest(t, "")
	var logged strings.Builder
	ctx := context.Background()
	stderr := runtime.NewStderrLog(slog.New(slog.NewTextHandler(&logged, nil)), 50)
	req := &runtime.Request{Method: "GET", Path: "/stderr-flood", Header: http.Header{}, Function: "guest"}
	if _, err := m.Invoke(ctx, req, Invocation{Limits: testLimits, Stderr: stderr}); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logged.String(), "\n"); n != 51 {
		t.Errorf("logged %d lines, want 50 and one notice", n)
	}
	if tail := stderr.Tail(); !strings.HasSuffix(tail, "line 9999") || len(tail) > 2048 {
		t.Errorf("tail = %d bytes ending %q, want at most 2048 ending in line 9999", len(tail), tail[max(0, len(tail)-20):])
	}
}

func TestCompileRejects(t *testing.T) {
	ctx := context.Background()
	rt := newRuntime(t)
	tests := []struct {
		name, artifact, message string
	}{
		{"text", "#!/bin/sh\necho hi\n", "not a WebAssembly module"},
		{"truncated", "\x00asm\x01\x00\x00\x00\x01\xff", "invalid WebAssembly module"},
		{"empty module", "\x00asm\x01\x00\x00\x00", "neither _start"},
		// (import "env" "f" (func)) (func (export "_start"))
		{"foreign import", "\x00asm\x01\x00\x00\x00" +
			"\x01\x04\x01\x60\x00\x00" + // type section: () -> ()
			"\x02\x09\x01\x03env\x01f\x00\x00" + // import env.f
			"\x03\x02\x01\x00" + // one function of type 0
			"\x07\x0a\x01\x06_start\x00\x01" + // export _start = func 1
			"\x0a\x04\x01\x02\x00\x0b", // body: end
			"imports env.f"},
	}
	for _, tt := range tests {
		_, err := rt.Compile(ctx, "", []byte(tt.artifact))
		if runtime.KindOf(err) != runtime.BadArtifact || !strings.Contains(err.Error(), tt.message) {
			t.Errorf("Compile(%s) = %v, want a bad artifact error containing %q", tt.name, err, tt.message)
		}
	}
}

func TestMemoryBelowModuleMinimum(t *testing.T) {
	m := compileGuest(t, "")
	if err := m.CheckMemory(64 << 10); runtime.KindOf(err) != runtime.OutOfMemory {
		t.Errorf("CheckMemory(64 KiB) = %v, want out of memory", err)
	}
}

func TestConcurrentInstances(t *testing.T) {
	m := compileGuest(t, "")
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err, _ := invoke(t, m, 20*time.Second, "/n", "x")
			if err == nil && string(resp.Body) != "POST /n x" {
				err = errors.New("wrong body " + string(resp.Body))
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func TestCompilationCacheOnDisk(t *testing.T) {
	dir := t.TempDir()
	compileGuest(t, dir)
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) == 0 {
		t.Fatalf("cache dir has %d entries (%v), want compiled code", len(entries), err)
	}
}

// TestHiddenMemoryOverTheLimit: a module whose memory, not exported, needs
// more than the limit at instantiation fails the request with
// out_of_memory. wazero panicked inside (a memory the allocator refused),
// which took down the server when the instance was started outside an HTTP
// handler (prewarming, async workers).
func TestHiddenMemoryOverTheLimit(t *testing.T) {
	module := []byte{
		0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
		0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // types: () -> ()
		0x03, 0x02, 0x01, 0x00, // functions: one of type 0
		0x05, 0x03, 0x01, 0x00, 0x04, // memory: at least 4 pages (256 KiB), not exported
		0x07, 0x0a, 0x01, 0x06, '_', 's', 't', 'a', 'r', 't', 0x00, 0x00, // export _start
		0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b, // code: an empty body
	}
	ctx := context.Background()
	rt := newRuntime(t)
	m, err := rt.Compile(ctx, "", module)
	if err != nil {
		t.Fatal(err)
	}
	limits := runtime.Limits{MemoryBytes: 128 << 10, MaxOutputBytes: 1 << 20}
	if err := m.CheckMemory(limits.MemoryBytes); err != nil {
		t.Skipf("CheckMemory sees the memory now (%v): the instantiation below is not reached", err)
	}
	stderr := runtime.NewStderrLog(slog.New(slog.DiscardHandler), 10)
	req := &runtime.Request{Method: "GET", Path: "/", Header: http.Header{}, Function: "hidden"}
	for range 2 { // and again: the failure left nothing behind
		if _, err := m.Invoke(ctx, req, Invocation{Limits: limits, Stderr: stderr}); runtime.KindOf(err) != runtime.OutOfMemory {
			t.Fatalf("Invoke = %v, want out of memory", err)
		}
	}
	if rt.spares.held != 0 {
		t.Errorf("the refused memory went to the spares (%d bytes)", rt.spares.held)
	}
}

// newRuntime returns a Runtime without a compilation cache, closed when
// the test ends.
func newRuntime(tb testing.TB) *Runtime {
	tb.Helper()
	rt, err := New(context.Background(), Config{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { rt.Close(context.Background()) })
	return rt
}
