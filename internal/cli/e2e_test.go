package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gust-faas/gust/internal/runtime/wasm/wasmtest"
	"github.com/gust-faas/gust/internal/server"
)

var (
	reactorPath string // the misbehaving SDK reactor, built once
	guestPath   string // the misbehaving test guest, built once
	helloWasm   []byte
	moduleRoot  string
)

func TestMain(m *testing.M) {
	// Keep the user's saved login and environment out of the tests.
	os.Setenv("GUST_CONFIG", filepath.Join(os.TempDir(), "gust-test-no-config.json"))
	os.Unsetenv("GUST_URL")
	os.Unsetenv("GUST_KEY")
	var err error
	if guestPath, err = wasmtest.Build(wasmtest.Guest); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	helloWasm = wasmtest.MustRead(wasmtest.Hello)
	if reactorPath, err = wasmtest.Build(wasmtest.Reactor); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if moduleRoot, err = wasmtest.ModuleRoot(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// node is a server started in-process for a test.
type node struct {
	srv      *server.Server
	url      string
	logs     *syncBuffer
	announce *syncBuffer
	// key is the admin key, sent by n.do and n.gust.
	key string
}

// startNode starts a server on dataDir; configure, if given, changes its
// configuration first.
func startNode(t *testing.T, dataDir string, configure ...func(*server.Config)) *node {
	t.Helper()
	logs, announce := &syncBuffer{}, &syncBuffer{}
	cfg := server.Config{
		DataDir:  dataDir,
		Addr:     "127.0.0.1:0",
		Announce: announce,
		Logger:   slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, c := range configure {
		c(&cfg)
	}
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	key, err := os.ReadFile(filepath.Join(dataDir, server.AdminKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	n := &node{srv: srv, url: "http://" + srv.Addr(), logs: logs, announce: announce, key: strings.TrimSpace(string(key))}
	t.Cleanup(func() { n.stop(t) })
	return n
}

func (n *node) stop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.srv.Stop(ctx); err != nil {
		t.Errorf("Stop: %v", err)
	}
}

// gust runs the gust command against n and returns its exit code and output.
func (n *node) gust(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	args = append(args, "--server", n.url)
	if n.key != "" && !slices.Contains(args, "--key") {
		args = append(args, "--key", n.key)
	}
	code = Run(context.Background(), args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

func (n *node) mustGust(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := n.gust(t, "", args...)
	if code != 0 {
		t.Fatalf("gust %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

type answer struct {
	status int
	header http.Header
	body   string
	code   string // Gust's error code, if any
	msg    string
}

func (n *node) do(t *testing.T, method, path, contentType string, body io.Reader) answer {
	t.Helper()
	return n.doAs(t, n.key, method, path, contentType, body)
}

// doAs sends a request with key as its bearer token ("" sends none).
func (n *node) doAs(t *testing.T, key, method, path, contentType string, body io.Reader) answer {
	t.Helper()
	req, err := http.NewRequest(method, n.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header, body: string(data)}
	if resp.Header.Get("X-Gust-Error") != "" {
		var e struct {
			Error struct{ Code, Message string }
		}
		if err := json.Unmarshal(data, &e); err != nil {
			t.Fatalf("%s %s: error answer is not JSON: %q", method, path, data)
		}
		a.code, a.msg = e.Error.Code, e.Error.Message
	}
	return a
}

// deployRaw sends a deploy with the given spec JSON and artifact.
func (n *node) deployRaw(t *testing.T, name, spec string, artifact []byte) answer {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if spec != "" {
		mw.WriteField("spec", spec)
	}
	if artifact != nil {
		w, _ := mw.CreateFormFile("artifact", "f.wasm")
		w.Write(artifact)
	}
	mw.Close()
	return n.do(t, "PUT", "/v1/functions/"+name, mw.FormDataContentType(), &buf)
}

func TestQuickStart(t *testing.T) {
	n := startNode(t, t.TempDir())
	out := n.mustGust(t, "deploy", filepath.Join(moduleRoot, "examples", "echo"))
	if !strings.Contains(out, "deployed echo version 1") {
		t.Errorf("deploy printed %q, want it to say version 1 was deployed", out)
	}
	out = n.mustGust(t, "invoke", "echo", "-d", `{"a":1}`, "-H", "X-Trace: abc", "--path", "/x/y?k=v")
	var echo struct {
		Method, Path, Body string
		Query              map[string][]string
		Headers            map[string]string
	}
	if err := json.Unmarshal([]byte(out), &echo); err != nil {
		t.Fatalf("invoke printed %q: %v", out, err)
	}
	if echo.Method != "POST" || echo.Path != "/x/y" || echo.Body != `{"a":1}` || echo.Headers["X-Trace"] != "abc" || echo.Query["k"][0] != "v" {
		t.Errorf("echo answered %+v, want POST /x/y with the body, header and query sent", echo)
	}
	// The same directory again changes nothing.
	if out := n.mustGust(t, "deploy", filepath.Join(moduleRoot, "examples", "echo")); !strings.Contains(out, "unchanged") {
		t.Errorf("second deploy printed %q, want it to say unchanged", out)
	}
	if out := n.mustGust(t, "ls"); !strings.Contains(out, "echo") || !strings.Contains(out, "wasm") {
		t.Errorf("ls printed %q, want a row for echo", out)
	}
	if out := n.mustGust(t, "describe", "echo"); !strings.Contains(out, "/fn/default/echo") || !strings.Contains(out, "sha256:") {
		t.Errorf("describe printed %q, want the URL and the version's digest", out)
	}
	n.mustGust(t, "rm", "echo")
	code, _, errOut := n.gust(t, "", "invoke", "echo")
	if code != 1 || !strings.Contains(errOut, "not found") {
		t.Errorf("invoke after rm: exit %d, stderr %q; want 1 and not found", code, errOut)
	}
	if out := n.mustGust(t, "ls"); !strings.Contains(out, "no functions") {
		t.Errorf("ls after rm printed %q", out)
	}
}

func TestInvokeHeadersAndVersions(t *testing.T) {
	n := startNode(t, t.TempDir())
	n.mustGust(t, "deploy", guestPath, "--name", "guest")
	n.mustGust(t, "deploy", wasmFile(t, helloWasm), "--name", "guest") // version 2 is hello
	a := n.do(t, "POST", "/fn/default/guest@1/hi", "text/plain", strings.NewReader("there"))
	if a.status != 201 || a.body != "POST /hi there" {
		t.Errorf("guest@1 answered %d %q, want 201 from the guest", a.status, a.body)
	}
	if id := a.header.Get("X-Gust-Invocation-Id"); len(id) != 26 {
		t.Errorf("X-Gust-Invocation-Id = %q, want a 26-character id", id)
	}
	if st := a.header.Get("Server-Timing"); !strings.Contains(st, "fn;dur=") {
		t.Errorf("Server-Timing = %q, want fn;dur=...", st)
	}
	for _, path := range []string{"/fn/default/guest", "/fn/default/guest@latest", "/fn/default/guest@2"} {
		if a := n.do(t, "POST", path, "", strings.NewReader("you")); a.status != 200 || a.body != "Hello, you!\n" {
			t.Errorf("%s answered %d %q, want hello's greeting", path, a.status, a.body)
		}
	}
}

func wasmFile(t *testing.T, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fn.wasm")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestBadInput sends what users and hostile guests send, and checks each
// answer names the problem while the deployed functions keep serving.
func TestBadInput(t *testing.T) {
	n := startNode(t, t.TempDir())
	n.mustGust(t, "deploy", wasmFile(t, helloWasm), "--name", "hello")
	if a := n.deployRaw(t, "guest", `{"name":"guest","timeout":"1s","memory_mb":32}`, must(os.ReadFile(guestPath))); a.status != 201 {
		t.Fatalf("deploy guest: %d %s", a.status, a.body)
	}
	big := bytes.Repeat([]byte("x"), 6<<20+1)
	hugeArtifact := append([]byte("\x00asm\x01\x00\x00\x00"), make([]byte, 64<<20)...)
	tests := []struct {
		name   string
		send   func() answer
		status int
		code   string
		msg    string
	}{
		{"invalid name", func() answer { return n.deployRaw(t, "Bad_Name", `{}`, helloWasm) }, 400, "bad_request", "invalid"},
		{"malformed spec", func() answer { return n.deployRaw(t, "x", `{"name":`, helloWasm) }, 400, "bad_request", "not valid JSON"},
		{"unknown spec field", func() answer { return n.deployRaw(t, "x", `{"memroy_mb":64}`, helloWasm) }, 400, "bad_request", "memroy_mb"},
		{"memory out of range", func() answer { return n.deployRaw(t, "x", `{"memory_mb":99999}`, helloWasm) }, 400, "bad_request", "memory_mb"},
		{"timeout too long", func() answer { return n.deployRaw(t, "x", `{"timeout":"16m"}`, helloWasm) }, 400, "bad_request", "timeout"},
		{"name mismatch", func() answer { return n.deployRaw(t, "x", `{"name":"y"}`, helloWasm) }, 400, "bad_request", "URL names"},
		{"missing artifact", func() answer { return n.deployRaw(t, "x", `{}`, nil) }, 400, "bad_request", "artifact"},
		{"empty artifact", func() answer { return n.deployRaw(t, "x", `{}`, []byte{}) }, 400, "bad_request", "empty"},
		{"not wasm", func() answer { return n.deployRaw(t, "x", `{}`, []byte("#!/bin/sh\n")) }, 422, "bad_artifact", "not a WebAssembly module"},
		{"truncated wasm", func() answer { return n.deployRaw(t, "x", `{}`, []byte("\x00asm\x01\x00\x00\x00\x05\x03\x01\x00")) }, 422, "bad_artifact", "invalid WebAssembly module: section memory"},
		// 15 bytes that state four billion data segments once made the
		// decoder allocate until the server died.
		{"wasm stating billions of segments", func() answer {
			return n.deployRaw(t, "x", `{}`, []byte("\x00asm\x01\x00\x00\x00\x0b\x05\xff\xff\xff\xff\x0f"))
		}, 422, "bad_artifact", "invalid WebAssembly module: compiling it needs more than"},
		{"memory below module minimum", func() answer { return n.deployRaw(t, "x", `{"memory_mb":16}`, append([]byte(nil), helloWasm...)) }, 201, "", ""},
		{"oversized artifact", func() answer { return n.deployRaw(t, "x", `{}`, hugeArtifact) }, 413, "payload_too_large", "64 MiB"},
		{"two specs", func() answer {
			var buf bytes.Buffer
			mw := multipart.NewWriter(&buf)
			mw.WriteField("spec", `{"memory_mb":64}`)
			mw.WriteField("spec", `{"memory_mb":128}`)
			w, _ := mw.CreateFormFile("artifact", "f.wasm")
			w.Write(helloWasm)
			mw.Close()
			return n.do(t, "PUT", "/v1/functions/x", mw.FormDataContentType(), &buf)
		}, 400, "bad_request", `more than one "spec" part`},
		{"not multipart", func() answer { return n.do(t, "PUT", "/v1/functions/x", "application/json", strings.NewReader(`{}`)) }, 415, "unsupported_media_type", "multipart"},
		{"unknown function", func() answer { return n.do(t, "GET", "/fn/default/nope", "", nil) }, 404, "not_found", `"nope" not found`},
		{"unknown tenant", func() answer { return n.do(t, "GET", "/fn/other/hello", "", nil) }, 404, "not_found", "not found"},
		{"unknown version", func() answer { return n.do(t, "GET", "/fn/default/hello@7", "", nil) }, 404, "not_found", "no version 7"},
		{"bad version", func() answer { return n.do(t, "GET", "/fn/default/hello@x1", "", nil) }, 404, "not_found", "a version is a number"},
		{"unknown API function", func() answer { return n.do(t, "GET", "/v1/functions/nope", "", nil) }, 404, "not_found", "nope"},
		{"unknown API path", func() answer { return n.do(t, "GET", "/v1/nothing", "", nil) }, 404, "not_found", "no API endpoint"},
		{"wrong method on list", func() answer { return n.do(t, "DELETE", "/v1/functions", "", nil) }, 405, "method_not_allowed", "DELETE"},
		{"wrong method on function", func() answer { return n.do(t, "PATCH", "/v1/functions/hello", "", nil) }, 405, "method_not_allowed", "PATCH"},
		{"body too large", func() answer { return n.do(t, "POST", "/fn/default/hello", "", bytes.NewReader(big)) }, 413, "payload_too_large", "6291456"},
		{"guest loops forever", func() answer { return n.do(t, "GET", "/fn/default/guest/loop", "", nil) }, 504, "timeout", "timeout of 1s"},
		{"guest sleeps forever", func() answer { return n.do(t, "GET", "/fn/default/guest/sleep", "", nil) }, 504, "timeout", "timeout of 1s"},
		{"guest grows memory past its limit", func() answer { return n.do(t, "GET", "/fn/default/guest/oom", "", nil) }, 502, "out_of_memory", "32 MiB"},
		{"guest panics", func() answer { return n.do(t, "GET", "/fn/default/guest/panic", "", nil) }, 502, "function_error", "exited with code 2"},
		{"guest writes no CGI", func() answer { return n.do(t, "POST", "/fn/default/guest/raw", "", strings.NewReader("just text")) }, 502, "bad_response", "no blank line"},
		{"guest injects a header", func() answer {
			return n.do(t, "POST", "/fn/default/guest/raw", "", strings.NewReader("X-A: b\rSet-Cookie: evil=1\n\nbody"))
		}, 502, "bad_response", "control character"},
		{"guest sends a bad status", func() answer {
			return n.do(t, "POST", "/fn/default/guest/raw", "", strings.NewReader("Status: 7000\n\n"))
		}, 502, "bad_response", "Status"},
		{"guest sends huge headers", func() answer {
			return n.do(t, "POST", "/fn/default/guest/raw", "", strings.NewReader("X-A: "+strings.Repeat("a", 70<<10)+"\n\n"))
		}, 502, "bad_response", "longer than"},
		{"guest writes too much", func() answer { return n.do(t, "GET", "/fn/default/guest/huge-output", "", nil) }, 502, "bad_response", "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := tt.send()
			if a.status != tt.status || a.code != tt.code || !strings.Contains(a.msg, tt.msg) {
				t.Errorf("got %d %s %q, want %d %s with a message containing %q", a.status, a.code, a.msg, tt.status, tt.code, tt.msg)
			}
			if a := n.do(t, "POST", "/fn/default/hello", "", strings.NewReader("still")); a.status != 200 || a.body != "Hello, still!\n" {
				t.Errorf("after %s, hello answered %d %q", tt.name, a.status, a.body)
			}
		})
	}
	if a := n.do(t, "GET", "/fn/default/guest/panic", "", nil); !strings.Contains(a.body, "guest panicked on purpose") {
		t.Errorf("function_error body %q lacks the guest's stderr", a.body)
	}
	if !strings.Contains(n.logs.String(), "guest panicked on purpose") {
		t.Errorf("server log lacks the guest's stderr line")
	}
}

func TestFailedDeployKeepsPreviousVersion(t *testing.T) {
	n := startNode(t, t.TempDir())
	n.mustGust(t, "deploy", wasmFile(t, helloWasm), "--name", "keep")
	for _, artifact := range [][]byte{[]byte("not wasm"), []byte("\x00asm\x01\x00\x00\x00")} {
		if a := n.deployRaw(t, "keep", `{}`, artifact); a.status != 422 {
			t.Errorf("bad deploy answered %d %s, want 422", a.status, a.body)
		}
	}
	var f struct{ Latest int }
	a := n.do(t, "GET", "/v1/functions/keep", "", nil)
	if err := json.Unmarshal([]byte(a.body), &f); err != nil || f.Latest != 1 {
		t.Errorf("after failed deploys, latest = %d (%v), want 1", f.Latest, err)
	}
	if a := n.do(t, "POST", "/fn/default/keep", "", strings.NewReader("x")); a.body != "Hello, x!\n" {
		t.Errorf("after failed deploys, keep answered %q", a.body)
	}
}

func TestBadSpecFile(t *testing.T) {
	n := startNode(t, t.TempDir())
	tests := []struct{ yaml, msg string }{
		{"name: [unclosed", "not valid YAML"},
		{"name: x\nmemroy_mb: 64\n", "memroy_mb"},
		{"name: x\nmemory_mb: 1\n", "memory_mb 1 is out of range"},
		{"name: x\ntimeout: soon\n", "not a duration"},
	}
	for _, tt := range tests {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "fn.wasm"), helloWasm, 0o644)
		os.WriteFile(filepath.Join(dir, "gust.yaml"), []byte(tt.yaml), 0o644)
		code, _, errOut := n.gust(t, "", "deploy", filepath.Join(dir, "fn.wasm"))
		if code != 1 || !strings.Contains(errOut, tt.msg) {
			t.Errorf("deploy with gust.yaml %q: exit %d, stderr %q; want 1 and %q", tt.yaml, code, errOut, tt.msg)
		}
	}
}

func TestRestartKeepsFunctionsWithoutRecompiling(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, dir)
	n.mustGust(t, "deploy", guestPath, "--name", "guest")
	if a := n.do(t, "GET", "/fn/default/guest/a", "", nil); a.status != 201 {
		t.Fatalf("before restart: %d %s", a.status, a.body)
	}
	n.stop(t)
	cache := filepath.Join(dir, "wasm-cache")
	before := listFiles(t, cache)
	if len(before) == 0 {
		t.Fatal("no compiled code in the cache after a deploy")
	}

	n = startNode(t, dir)
	if a := n.do(t, "GET", "/fn/default/guest/b", "", nil); a.status != 201 || a.body != "GET /b " {
		t.Fatalf("after restart: %d %q", a.status, a.body)
	}
	if after := listFiles(t, cache); !slices.Equal(before, after) {
		t.Errorf("cache changed across the restart: before %v, after %v: the module was compiled again", before, after)
	}
	if out := n.mustGust(t, "ls"); !strings.Contains(out, "guest") {
		t.Errorf("ls after restart printed %q", out)
	}
}

// listFiles returns every file under dir with its size and modification time.
func listFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			info, _ := d.Info()
			out = append(out, fmt.Sprintf("%s %d %d", path, info.Size(), info.ModTime().UnixNano()))
		}
		return nil
	})
	return out
}

func TestGracefulShutdownFinishesRequests(t *testing.T) {
	n := startNode(t, t.TempDir())
	n.mustGust(t, "deploy", guestPath, "--name", "guest")
	done := make(chan answer, 1)
	conn, err := net.Dial("tcp", n.srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /fn/default/guest/slow HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", n.key)
	go func() {
		resp, err := http.ReadResponse(bufioReader(conn), nil)
		if err != nil {
			done <- answer{body: err.Error()}
			return
		}
		body, _ := io.ReadAll(resp.Body)
		done <- answer{status: resp.StatusCode, body: string(body)}
	}()
	waitFor(t, func() bool { return strings.Contains(n.logs.String(), "invocation started") })
	n.stop(t)
	if a := <-done; a.status != 200 || a.body != "slow done\n" {
		t.Errorf("request in flight at shutdown got %d %q, want its 200 answer\n%s", a.status, a.body, n.logs.String())
	}
}

func TestServerCommandDemo(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var logs syncBuffer
	exited := make(chan int, 1)
	go func() {
		exited <- Run(ctx, []string{"server", "--demo", "--addr", addr, "--data-dir", t.TempDir()}, nil, io.Discard, &logs)
	}()
	deadline := time.Now().Add(3 * time.Minute)
	var body string
	for time.Now().Before(deadline) {
		resp, err := http.Post("http://"+addr+"/fn/default/echo", "text/plain", strings.NewReader("demo"))
		if err == nil {
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				body = string(data)
				break
			}
		}
		select {
		case code := <-exited:
			t.Fatalf("server exited with %d before serving the demo:\n%s", code, logs.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	if !strings.Contains(body, `"body": "demo"`) {
		t.Fatalf("demo echo answered %q\n%s", body, logs.String())
	}
	resp, err := http.Post("http://"+addr+"/fn/default/hello", "text/plain", strings.NewReader("world"))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(data) != "Hello, world!\n" {
		t.Errorf("demo hello answered %q", data)
	}
	cancel()
	if code := <-exited; code != 0 {
		t.Errorf("server exited with %d after its context ended, want 0\n%s", code, logs.String())
	}
}

// TestServerPprof: GUST_PPROF_ADDR serves pprof there, and only there.
func TestServerPprof(t *testing.T) {
	addr, pprofAddr := freeAddr(t), freeAddr(t)
	t.Setenv("GUST_PPROF_ADDR", pprofAddr)
	ctx, cancel := context.WithCancel(context.Background())
	var logs syncBuffer
	exited := make(chan int, 1)
	go func() {
		exited <- Run(ctx, []string{"server", "--addr", addr, "--data-dir", t.TempDir()}, nil, io.Discard, &logs)
	}()
	get := func(url string) (int, string) {
		resp, err := http.Get(url)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(data)
	}
	waitFor(t, func() bool { code, _ := get("http://" + addr + "/readyz"); return code == 200 })
	if code, body := get("http://" + pprofAddr + "/debug/pprof/"); code != 200 || !strings.Contains(body, "goroutine") {
		t.Errorf("pprof index: %d %.200q", code, body)
	}
	if code, _ := get("http://" + addr + "/debug/pprof/"); code != 404 {
		t.Errorf("pprof on the API address: %d, want 404", code)
	}
	if !strings.Contains(logs.String(), "serving pprof") {
		t.Errorf("the log does not warn that pprof is served:\n%s", logs.String())
	}
	cancel()
	if code := <-exited; code != 0 {
		t.Errorf("server exited with %d, want 0\n%s", code, logs.String())
	}
}

// TestServerAddressInUse: a server whose address is taken exits 1 and says
// so in one line that names the address once, and does not log that it
// stopped, since it never served.
func TestServerAddressInUse(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := taken.Addr().String()
	var logs syncBuffer
	code := Run(context.Background(), []string{"server", "--addr", addr, "--data-dir", t.TempDir()}, nil, io.Discard, &logs)
	want := "gust server: listen on " + addr + ": bind: address already in use\n"
	if code != 1 || !strings.HasSuffix(logs.String(), want) {
		t.Errorf("exit %d, output:\n%s\nwant exit 1, ending in %q", code, logs.String(), want)
	}
	if strings.Contains(logs.String(), "gust stopped") {
		t.Errorf("a server that never served logged that it stopped:\n%s", logs.String())
	}
}

// TestRestartPrunesCompiledCode: a restarted server deletes the compiled
// code of artifacts that are no longer stored, and of an older wazero, and
// keeps (without compiling again) the code of the functions deployed.
func TestRestartPrunesCompiledCode(t *testing.T) {
	dir := t.TempDir()
	cache := filepath.Join(dir, "wasm-cache")
	n := startNode(t, dir)
	n.mustGust(t, "deploy", guestPath, "--name", "kept")
	n.stop(t)
	list := func() map[string]time.Time {
		out := map[string]time.Time{}
		filepath.WalkDir(cache, func(path string, e os.DirEntry, err error) error {
			if info, ierr := e.Info(); err == nil && ierr == nil && !e.IsDir() {
				rel, _ := filepath.Rel(cache, path)
				out[rel] = info.ModTime()
			}
			return nil
		})
		return out
	}
	deployed := list()
	if len(deployed) < 2 {
		t.Fatalf("after a deploy the cache holds %v, want the function's code and its marker", deployed)
	}
	// What a server that was down when an artifact was deleted finds, and
	// what an older wazero left.
	var codeDir, markers string
	for f := range deployed {
		if strings.HasPrefix(f, "decoded") {
			markers = filepath.Dir(f)
		} else {
			codeDir = filepath.Dir(f)
		}
	}
	planted := map[string]string{
		filepath.Join(codeDir, "deleted"):                   strings.Repeat("x", 1<<20),
		filepath.Join(markers, strings.Repeat("ab", 32)):    `{"owner":"sha256:` + strings.Repeat("0", 64) + `","files":["` + filepath.Join(codeDir, "deleted") + `"]}`,
		filepath.Join("wazero-v0.0.1-amd64-linux", "older"): "code of an older wazero",
	}
	for f, content := range planted {
		os.MkdirAll(filepath.Dir(filepath.Join(cache, f)), 0o700)
		os.WriteFile(filepath.Join(cache, f), []byte(content), 0o600)
	}

	n = startNode(t, dir)
	if got := list(); !maps.Equal(got, deployed) {
		t.Errorf("after the restart the cache holds %v, want what the deploy left, unchanged: %v", got, deployed)
	}
	if !strings.Contains(n.logs.String(), "deleted compiled code no artifact uses") {
		t.Errorf("the log does not say that compiled code was deleted:\n%s", n.logs.String())
	}
	if a := n.do(t, "POST", "/fn/default/kept/ok", "", strings.NewReader("x")); a.status >= 400 {
		t.Errorf("the kept function after the restart: %d %s", a.status, a.body)
	}
	if got := list(); !maps.Equal(got, deployed) {
		t.Errorf("invoking the kept function changed the cache to %v: it was compiled again", got)
	}
}

// tryStart starts a server on dir and returns why it could not; one that
// starts is stopped.
func tryStart(t *testing.T, dir string) error {
	t.Helper()
	s, err := server.New(server.Config{DataDir: dir, Addr: "127.0.0.1:0", Announce: io.Discard, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Start(context.Background())
	if err == nil {
		s.Stop(context.Background())
	}
	return err
}

// TestDataDirIsOneServers: a second server on a data dir in use refuses to
// start, and the first goes on serving what it had.
func TestDataDirIsOneServers(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, dir)
	n.mustGust(t, "deploy", guestPath, "--name", "kept")
	if err := tryStart(t, dir); err == nil || !strings.Contains(err.Error(), "in use by another gust server") {
		t.Fatalf("a second server on the same data dir started (%v); want it refused", err)
	}
	if a := n.do(t, "POST", "/fn/default/kept/ok", "", strings.NewReader("x")); a.status >= 400 {
		t.Errorf("the first server after the second's attempt: %d %s", a.status, a.body)
	}
}

// TestWrongMasterKeyRefused: a server started on a store without the
// master key its secrets were sealed with refuses to start, rather than
// make a new key that opens none of them.
func TestWrongMasterKeyRefused(t *testing.T) {
	dir := t.TempDir()
	key := strings.Repeat("ab", 32)
	n := startNode(t, dir, func(c *server.Config) { c.MasterKey = key })
	n.stop(t)
	if err := tryStart(t, dir); err == nil || !strings.Contains(err.Error(), "GUST_MASTER_KEY") {
		t.Fatalf("a start without the store's master key: %v; want it refused, naming GUST_MASTER_KEY", err)
	}
	if _, err := os.Stat(filepath.Join(dir, server.MasterKeyFile)); err == nil {
		t.Errorf("the refused start left a master key file of its own")
	}
	startNode(t, dir, func(c *server.Config) { c.MasterKey = key }) // with it, the store opens
}

func TestCLIErrors(t *testing.T) {
	bundleFile := filepath.Join(t.TempDir(), "my.app.tar.gz")
	os.WriteFile(bundleFile, []byte{0x1f, 0x8b, 8, 0}, 0o644)
	library := t.TempDir()
	os.WriteFile(filepath.Join(library, "go.mod"), []byte("module lib\n\ngo 1.26\n"), 0o644)
	os.WriteFile(filepath.Join(library, "lib.go"), []byte("package lib\n\nfunc F() {}\n"), 0o644)
	os.WriteFile(filepath.Join(library, "gust.yaml"), []byte("name: lib\n"), 0o644)
	tests := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"deploy", bundleFile}, 2, "a process function needs its spec"},
		{[]string{"deploy", library}, 1, "holds package lib: a function is a main package"},
		{[]string{"invoke"}, 2, "usage: gust invoke"},
		{[]string{"ls", "extra"}, 2, "takes no arguments"},
		{[]string{"ls", "--server", "ftp://x"}, 2, "not an http"},
		{[]string{"ls", "--server", "http://127.0.0.1:1"}, 1, "cannot reach the Gust server"},
		{[]string{"deploy", "/does/not/exist"}, 1, "no such file"},
		{[]string{"server", "--log-level", "loud"}, 2, "--log-level"},
	}
	for _, tt := range tests {
		var out, errOut bytes.Buffer
		code := Run(context.Background(), tt.args, nil, &out, &errOut)
		if code != tt.code || !strings.Contains(errOut.String(), tt.msg) {
			t.Errorf("gust %s: exit %d, stderr %q; want %d and %q", strings.Join(tt.args, " "), code, errOut.String(), tt.code, tt.msg)
		}
	}
}

// waitFor polls cond until it holds, failing the test after 30 seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30s")
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func bufioReader(r io.Reader) *bufio.Reader { return bufio.NewReader(r) }
