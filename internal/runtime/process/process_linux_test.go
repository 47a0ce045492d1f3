package process

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gust-faas/gust/internal/bundle"
	"github.com/gust-faas/gust/internal/deadline"
	"github.com/gust-faas/gust/internal/registry"
	"github.com/gust-faas/gust/internal/runtime"
	"github.com/gust-faas/gust/internal/runtime/runtimetest"
	"github.com/gust-faas/gust/internal/runtime/wasm/wasmtest"
)

// newRuntime starts the runtime, or fails: CI runs as root on Linux.
func newRuntime(t *testing.T) *Runtime {
	t.Helper()
	if os.Geteuid() != 0 && os.Getenv("CI") == "" {
		t.Skip("process sandboxes need root (CI runs as root, where this fails instead)")
	}
	r, err := New(context.Background(), Config{Dir: t.TempDir(), AllowHostNetwork: true})
	if err != nil {
		t.Fatalf("the process runtime is not available: %v", err)
	}
	t.Cleanup(r.Close)
	return r
}

// prepare packs files (name -> content; a name ending in * is executable).
func prepare(t *testing.T, r *Runtime, files map[string]string) runtime.Prepared {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		mode := os.FileMode(0o644)
		if n, ok := strings.CutSuffix(name, "*"); ok {
			name, mode = n, 0o755
		}
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	b, err := bundle.Pack(dir)
	if err != nil {
		t.Fatal(err)
	}
	prep, err := r.Prepare(context.Background(), registry.Digest(b), b)
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	return prep
}

// runOnce starts an instance under cfg, sends it a GET and closes it.
func runOnce(t *testing.T, prep runtime.Prepared, cfg runtime.Config) *runtime.Response {
	t.Helper()
	resp, err := invokeOnce(t, prep, cfg)
	if err != nil {
		t.Fatalf("Invoke: %v", err)
	}
	return resp
}

// invokeOnce starts an instance of prep, invokes it once with a GET of /
// and closes it.
func invokeOnce(t *testing.T, prep runtime.Prepared, cfg runtime.Config) (*runtime.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	inst, err := prep.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer inst.Close(ctx)
	return inst.Invoke(ctx, &runtime.Request{Method: "GET", Path: "/", Header: http.Header{}}, slog.Default())
}

func testConfig(protocol string, command ...string) runtime.Config {
	return runtime.Config{
		Env:     []string{"GREETING=hi"},
		Limits:  runtime.Limits{MemoryBytes: 256 << 20, MaxOutputBytes: 1 << 20},
		Stderr:  runtime.NewStderrLog(slog.Default(), 100),
		Process: runtime.Process{Command: command, Protocol: protocol, InitTimeout: 10 * time.Second},
	}
}

func TestStdioSmoke(t *testing.T) {
	r := newRuntime(t)
	prep := prepare(t, r, map[string]string{"run.sh*": "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"$GREETING $REQUEST_METHOD $(id -u) $(hostname)\"\ncat\n"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := testConfig(runtime.ProtocolStdio, "./run.sh")
	if err := prep.Check(cfg); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	inst, err := prep.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer inst.Close(ctx)
	t.Logf("start took %v", time.Since(start))
	resp, err := inst.Invoke(ctx, &runtime.Request{Method: "POST", Path: "/", Header: http.Header{}, Body: []byte("body!"), InvocationID: "inv1"}, slog.Default())
	if err != nil {
		t.Fatalf("Invoke: %v", err)
	}
	t.Logf("total %v", time.Since(start))
	if got := string(resp.Body); got != "hi POST 1000 sandbox\nbody!" {
		t.Errorf("body = %q", got)
	}
}

// TestSharedBundle: two versions of one bundle share its unpacked folder;
// closing one must leave it to the other, and closing both removes it.
func TestSharedBundle(t *testing.T) {
	r := newRuntime(t)
	files := map[string]string{"run.sh*": "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho shared\n"}
	first, second := prepare(t, r, files), prepare(t, r, files)
	dir := first.(*prepared).dir
	if err := first.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := string(runOnce(t, second, testConfig(runtime.ProtocolStdio, "./run.sh")).Body); got != "shared\n" {
		t.Errorf("after the other closed, body = %q", got)
	}
	first.Close(context.Background()) // twice is harmless, and counts once
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("the folder went with the first close, twice: %v", err)
	}
	second.Close(context.Background())
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("after both closed, the folder is still there (%v)", err)
	}
}

// TestSparesStartWithTheFirstBundle: a node without process functions
// keeps no spare init; it starts them when it prepares its first bundle
// (a deploy, or a restart that finds functions), before any cold start,
// so that the first request after a deploy finds one ready.
func TestSparesStartWithTheFirstBundle(t *testing.T) {
	r := newRuntime(t)
	time.Sleep(4 * spareDelay)
	if n := r.spares.count(); n != 0 {
		t.Fatalf("%d spare inits on a node without bundles, want 0", n)
	}
	prepare(t, r, map[string]string{"app.py": helloApp})
	deadline := time.Now().Add(20 * time.Second)
	for r.spares.count() < spareInits {
		if time.Now().After(deadline) {
			t.Fatalf("%d spare inits 20 s after the first bundle was prepared, with no cold start; want %d", r.spares.count(), spareInits)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSpareInits: once a node has a bundle, its cold starts take an init
// process started ahead of them, which becomes any function's
// sandbox: its bundle, its configuration, the streams of a stdio
// function's requests, its own network. A function with the host's
// network gets an init of its own. Close stops the spares.
func TestSpareInits(t *testing.T) {
	r := newRuntime(t)
	prep := prepare(t, r, map[string]string{"run.sh*": "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"$GREETING from $(cat /var/task/name.txt)\"\ngrep -c : /proc/net/dev\n", "name.txt": "the bundle"})
	shell := prep
	runOnce(t, prep, testConfig(runtime.ProtocolStdio, "./run.sh")) // with a spare or without
	spares := func() map[int]bool {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for r.spares.count() < spareInits {
			if time.Now().After(deadline) {
				t.Fatalf("%d spare inits after 20s, want %d", r.spares.count(), spareInits)
			}
			time.Sleep(10 * time.Millisecond)
		}
		r.spares.mu.Lock()
		defer r.spares.mu.Unlock()
		pids := map[int]bool{}
		for _, p := range r.spares.ready {
			pids[p.cmd.Process.Pid] = true
		}
		return pids
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, protocol := range []string{runtime.ProtocolStdio, runtime.ProtocolHTTP} {
		ready := spares()
		cfg := testConfig(protocol, "./run.sh")
		if protocol == runtime.ProtocolHTTP {
			prep = prepare(t, r, map[string]string{"app.py": helloApp})
			cfg = testConfig(protocol, "python3", "app.py")
		}
		inst, err := prep.Start(ctx, cfg)
		if err != nil {
			t.Fatalf("%s: Start: %v", protocol, err)
		}
		var sb *sandbox
		switch inst := inst.(type) {
		case *stdioInstance:
			sb = inst.sb
		case *httpInstance:
			sb = inst.s.sb
		}
		if pid := sb.cmd.Process.Pid; !ready[pid] {
			t.Errorf("%s: the cold start made init %d, not one of the spares %v", protocol, pid, ready)
		}
		if limit := cgroupMemoryLimit(t, sb.cg); limit != 256<<20 {
			t.Errorf("%s: the sandbox's memory limit is %d, want 256 MiB", protocol, limit)
		}
		resp, err := inst.Invoke(ctx, &runtime.Request{Method: "GET", Path: "/", Header: http.Header{}, InvocationID: "inv"}, slog.Default())
		inst.Close(ctx)
		if err != nil {
			t.Fatalf("%s: Invoke: %v", protocol, err)
		}
		want := map[string]string{runtime.ProtocolStdio: "hi from the bundle\n1\n", runtime.ProtocolHTTP: "hello hi /"}[protocol]
		if got := string(resp.Body); got != want {
			t.Errorf("%s: body = %q, want %q (its own bundle, and only a loopback)", protocol, got, want)
		}
	}

	ready := spares()
	cfg := testConfig(runtime.ProtocolStdio, "./run.sh")
	cfg.Process.Network = true
	inst, err := shell.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("host network: Start: %v", err)
	}
	if pid := inst.(*stdioInstance).sb.cmd.Process.Pid; ready[pid] {
		t.Errorf("a function with the host's network got spare %d, which has a network of its own", pid)
	}
	resp, err := inst.Invoke(ctx, &runtime.Request{Method: "GET", Path: "/", Header: http.Header{}, InvocationID: "inv"}, slog.Default())
	inst.Close(ctx)
	if err != nil {
		t.Fatalf("host network: Invoke: %v", err)
	}
	if lines := strings.Split(strings.TrimSpace(string(resp.Body)), "\n"); len(lines) != 2 || lines[1] < "2" {
		t.Errorf("host network: body = %q, want the host's interfaces, more than a loopback", resp.Body)
	}

	ready = spares()
	r.Close()
	for pid := range ready {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); !os.IsNotExist(err) {
			t.Errorf("spare init %d is still there after Close (%v)", pid, err)
		}
	}
}

// TestSparesWaitWhileColdStartsRun: no spare is started while a cold
// start runs (it needs the CPU now); once none does, the spares are.
func TestSparesWaitWhileColdStartsRun(t *testing.T) {
	r := newRuntime(t)
	var busy atomic.Bool
	busy.Store(true)
	var started atomic.Int32
	s := newSpares(func() (*initProc, error) {
		started.Add(1)
		return r.spawn(false)
	}, busy.Load)
	t.Cleanup(s.close)
	if p := s.take(); p != nil {
		t.Fatal("take returned a spare before any was started")
	}
	time.Sleep(5 * spareDelay)
	if n := started.Load(); n != 0 {
		t.Errorf("%d spares started while a cold start ran, want 0", n)
	}
	busy.Store(false)
	deadline := time.Now().Add(20 * time.Second)
	for s.count() < spareInits {
		if time.Now().After(deadline) {
			t.Fatalf("%d spares 20s after the cold starts ended, want %d", s.count(), spareInits)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := started.Load(); n != spareInits {
		t.Errorf("%d spares started, want %d", n, spareInits)
	}
}

// cgroupMemoryLimit reads cg's memory limit.
func cgroupMemoryLimit(t *testing.T, cg *cgroup) int64 {
	t.Helper()
	file := filepath.Join(cg.dirs["memory"], "memory.limit_in_bytes")
	if cg.v2 {
		file = filepath.Join(cg.dirs["unified"], "memory.max")
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	limit, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatalf("%s: %q", file, b)
	}
	return limit
}

// helloApp is an http function in Python: it answers "hello", $GREETING
// and the path.
const helloApp = `
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = ("hello " + os.environ["GREETING"] + " " + self.path).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
`

func TestHTTPSmoke(t *testing.T) {
	r := newRuntime(t)
	prep := prepare(t, r, map[string]string{"app.py": helloApp})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	inst, err := prep.Start(ctx, testConfig(runtime.ProtocolHTTP, "python3", "app.py"))
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer inst.Close(ctx)
	t.Logf("start took %v", time.Since(start))
	for i := range 3 {
		resp, err := inst.Invoke(ctx, &runtime.Request{Method: "GET", Path: "/x", Host: "example", Header: http.Header{}, InvocationID: "inv"}, slog.Default())
		if err != nil {
			t.Fatalf("Invoke %d: %v", i, err)
		}
		if got := string(resp.Body); got != "hello hi /x" {
			t.Errorf("body = %q", got)
		}
	}
}

// startApp starts an http instance of python3 app.py, closed when the
// test ends.
func startApp(t *testing.T, prep runtime.Prepared) (runtime.Instance, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	inst, err := prep.Start(ctx, testConfig(runtime.ProtocolHTTP, "python3", "app.py"))
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { inst.Close(ctx) })
	return inst, ctx
}

// TestHTTPHostNetwork starts a program that keeps the host's network and
// listens only after a while: Gust waits for it on the host's loopback, as
// it does in a sandbox's own network.
func TestHTTPHostNetwork(t *testing.T) {
	r := newRuntime(t)
	prep := prepare(t, r, map[string]string{"app.py": `
import http.server, os, time
time.sleep(0.3)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = ("port " + os.environ["PORT"]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
`})
	cfg := testConfig(runtime.ProtocolHTTP, "python3", "app.py")
	cfg.Process.Network = true
	resp := runOnce(t, prep, cfg)
	if got := string(resp.Body); !strings.HasPrefix(got, "port ") || got == "port 8080" {
		t.Errorf("body = %q; want the host port Gust chose, not the sandbox's 8080", got)
	}
}

// TestHTTPProgramClosesIdleConnections: servers close a kept connection
// after a few idle seconds (Node.js after 5); the next request must reach
// the same program on a new connection, not fail as a crash.
func TestHTTPProgramClosesIdleConnections(t *testing.T) {
	r := newRuntime(t)
	prep := prepare(t, r, map[string]string{"app.py": `
import http.server, os
me = os.urandom(8).hex()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 0.2  # an idle connection is closed after 200 ms
    def do_GET(self):
        b = me.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    do_POST = do_GET
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
`})
	inst, ctx := startApp(t, prep)
	var programs []string
	for i, method := range []string{"GET", "GET", "POST", "GET"} {
		if i > 0 {
			time.Sleep(500 * time.Millisecond) // past the program's idle timeout
		}
		resp, err := inst.Invoke(ctx, &runtime.Request{Method: method, Path: "/", Header: http.Header{}, Body: []byte("x")}, slog.Default())
		if err != nil {
			t.Fatalf("request %d (%s) after an idle spell: %v", i, method, err)
		}
		programs = append(programs, string(resp.Body))
	}
	if len(slices.Compact(slices.Clone(programs))) != 1 {
		t.Errorf("answered by programs %v; want one program throughout", programs)
	}
}

// TestHTTPReplaysOnlySafeRequests: a program that closes every connection
// shortly after its answer, without saying so, makes the next request,
// sent meanwhile on the connection that looked open, find the end; a GET
// goes again on a new connection, a POST (which may have run) fails.
func TestHTTPReplaysOnlySafeRequests(t *testing.T) {
	r := newRuntime(t)
	prep := prepare(t, r, map[string]string{"app.py": `
import os, socket, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(os.environ["PORT"])))
s.listen(16)
while True:
    c, _ = s.accept()
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = c.recv(4096)
        if not chunk:
            break
        data += chunk
    if data:
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        time.sleep(0.3)  # the next request comes, and finds the close
    c.close()
`})
	inst, ctx := startApp(t, prep)
	invoke := func(method string) error {
		_, err := inst.Invoke(ctx, &runtime.Request{Method: method, Path: "/", Header: http.Header{}}, slog.Default())
		return err
	}
	for i := range 3 {
		if err := invoke("GET"); err != nil {
			t.Fatalf("GET %d: %v", i, err)
		}
	}
	if err := invoke("POST"); err == nil {
		t.Errorf("POST on a connection the program had closed succeeded; want it refused rather than sent twice")
	}
}

var (
	reactorOnce   sync.Once
	reactorBundle []byte
	reactorErr    error
)

// reactor returns a bundle of the conformance fixture built for Linux,
// built once per test binary.
func reactor(t *testing.T) []byte {
	t.Helper()
	reactorOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gust-reactor-")
		if err != nil {
			reactorErr = err
			return
		}
		defer os.RemoveAll(dir)
		root, err := wasmtest.ModuleRoot()
		if err != nil {
			reactorErr = err
			return
		}
		build := exec.Command("go", "build", "-o", filepath.Join(dir, "reactor"), "./"+runtimetest.Fixture)
		build.Dir, build.Env = root, append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			reactorErr = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		reactorBundle, reactorErr = bundle.Pack(dir)
	})
	if reactorErr != nil {
		t.Fatal(reactorErr)
	}
	return reactorBundle
}

func reactorConfig(cfg runtime.Config, concurrency int) runtime.Config {
	cfg.Process = runtime.Process{Command: []string{"./reactor"}, Protocol: runtime.ProtocolHTTP, InitTimeout: 10 * time.Second, Concurrency: concurrency}
	return cfg
}

// TestConformance runs the sandbox conformance cases on the reactor
// fixture built for Linux, as an http process function.
func TestConformance(t *testing.T) {
	r := newRuntime(t)
	b := reactor(t)
	prep, err := r.Prepare(context.Background(), registry.Digest(b), b)
	if err != nil {
		t.Fatal(err)
	}
	runtimetest.Run(t, func(t *testing.T, ctx context.Context, cfg runtime.Config) (runtime.Instance, error) {
		return prep.Start(ctx, reactorConfig(cfg, 1))
	})
}

// TestHTTPConcurrency: with concurrency 2, two slots share one program
// (and its request count) and a third starts another; the program stops
// with its last slot.
func TestHTTPConcurrency(t *testing.T) {
	r := newRuntime(t)
	b := reactor(t)
	prep, err := r.Prepare(context.Background(), registry.Digest(b), b)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cfg := reactorConfig(runtimetest.Config(128), 2)
	var slots []runtime.Instance
	for range 3 {
		in, err := prep.Start(ctx, cfg)
		if err != nil {
			t.Fatalf("Start: %v", err)
		}
		slots = append(slots, in)
	}
	count := func(in runtime.Instance) string {
		resp, err := in.Invoke(ctx, &runtime.Request{Method: "GET", Path: "/count", Header: http.Header{}}, slog.Default())
		if err != nil {
			t.Fatalf("Invoke: %v", err)
		}
		return string(resp.Body)
	}
	if got := []string{count(slots[0]), count(slots[1]), count(slots[2]), count(slots[0])}; !slices.Equal(got, []string{"1", "2", "1", "3"}) {
		t.Errorf("counts = %v, want 1 2 1 3: the first two slots share a program, the third has its own", got)
	}
	first := slots[0].(*httpInstance).s.sb
	slots[0].Close(ctx)
	if first.exited() {
		t.Error("the program stopped while a slot still holds it")
	}
	if got := count(slots[1]); got != "4" {
		t.Errorf("count after closing the other slot = %q, want 4", got)
	}
	slots[1].Close(ctx)
	select {
	case <-first.done:
	case <-time.After(5 * time.Second):
		t.Error("the program still runs after its last slot closed")
	}
	slots[2].Close(ctx)
}

// TestStdioRunsAreIsolated: one stdio instance serves run after run; what a
// run leaves running is killed before the next, a program holds only its
// three streams, and /tmp persists, as in a reused Lambda environment.
func TestStdioRunsAreIsolated(t *testing.T) {
	r := newRuntime(t)
	prep := prepare(t, r, map[string]string{"run.sh*": `#!/bin/sh
echo 'Content-Type: text/plain'
echo
n=0
for p in /proc/[0-9]*; do n=$((n+1)); done
echo "procs=$n"
echo "tmp=$(cat /tmp/mark 2>/dev/null | tr '\n' ' ')"
echo "run" >> /tmp/mark
sleep 1000 &
sleep 1000 &
`})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	inst, err := prep.Start(ctx, testConfig(runtime.ProtocolStdio, "./run.sh"))
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer inst.Close(ctx)
	var bodies []string
	for range 3 {
		resp, err := inst.Invoke(ctx, &runtime.Request{Method: "GET", Path: "/", Header: http.Header{}}, slog.Default())
		if err != nil {
			t.Fatalf("Invoke: %v", err)
		}
		if !inst.Reusable() {
			t.Fatal("a stdio instance is not reusable after a good run")
		}
		bodies = append(bodies, string(resp.Body))
	}
	// init, the shell, and at most the subshell of $(...): never the
	// sleeps of an earlier run.
	for i, b := range bodies {
		if !strings.Contains(b, "procs=2\n") && !strings.Contains(b, "procs=3\n") {
			t.Errorf("run %d saw the processes of earlier runs:\n%s", i, b)
		}
	}
	if !strings.Contains(bodies[2], "tmp=run run \n") {
		t.Errorf("the third run's /tmp = %q, want the marks of two runs", bodies[2])
	}

	// ls, run straight by the init, lists its three streams and the folder
	// it reads: nothing of the init's pipes and socket.
	cfg := testConfig(runtime.ProtocolStdio, "/usr/bin/ls", "/proc/self/fd")
	cfg.Process.ContentType = "text/plain"
	resp := runOnce(t, prep, cfg)
	if got := string(resp.Body); got != "0\n1\n2\n3\n" || resp.Header.Get("Content-Type") != "text/plain" {
		t.Errorf("ls /proc/self/fd = %q (%s), want 0 to 3 as text/plain", got, resp.Header.Get("Content-Type"))
	}
}

// TestSandboxDetails: no terminal to type into, no inotify or io_uring
// (whose limits and bugs are the host's), a writable /dev/shm, and no
// descriptor of the server's beyond the three streams.
func TestSandboxDetails(t *testing.T) {
	r := newRuntime(t)
	prep := prepare(t, r, map[string]string{"probe.py": `
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
print("Content-Type: text/plain\n")
stat = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
print("tty_nr=%s" % stat[4])
print("sid_is_pid=%s" % (os.getsid(0) == os.getpid()))
print("dev_tty=%s" % os.path.exists("/dev/tty"))
print("inotify=%d" % libc.inotify_init1(0))
print("io_uring=%d" % libc.syscall(425, 1, ctypes.create_string_buffer(120)))
open("/dev/shm/x", "w").write("x")
print("shm=ok")
print("fds=%s" % sorted(int(f) for f in os.listdir("/proc/self/fd")))
`})
	resp := runOnce(t, prep, testConfig(runtime.ProtocolStdio, "python3", "probe.py"))
	for _, want := range []string{"tty_nr=0\n", "dev_tty=False\n", "inotify=-1\n", "io_uring=-1\n", "shm=ok\n", "fds=[0, 1, 2, 3]\n"} {
		if !strings.Contains(string(resp.Body), want) {
			t.Errorf("the probe printed\n%s\nwant %q", resp.Body, want)
		}
	}
}

// TestSandboxHidesHostCgroups: the sandbox's cgroup is its root.
func TestSandboxHidesHostCgroups(t *testing.T) {
	r := newRuntime(t)
	prep := prepare(t, r, map[string]string{})
	cfg := testConfig(runtime.ProtocolStdio, "/usr/bin/cat", "/proc/self/cgroup")
	cfg.Process.ContentType = "text/plain"
	resp := runOnce(t, prep, cfg)
	for line := range strings.SplitSeq(strings.TrimSpace(string(resp.Body)), "\n") {
		if _, path, _ := strings.Cut(line[strings.IndexByte(line, ':')+1:], ":"); path != "/" {
			t.Errorf("/proc/self/cgroup in the sandbox says %q, want every path /:\n%s", line, resp.Body)
		}
	}
}

// TestHTTPCallerCannotPlantAResponse: a program that leaves a request body
// unread (Python's http.server does) takes it for a request of its own;
// a caller who puts a request in the body must not have its answer reach
// the next caller, nor may a body sent after a HEAD's answer.
func TestHTTPCallerCannotPlantAResponse(t *testing.T) {
	r := newRuntime(t)
	prep := prepare(t, r, map[string]string{"app.py": `
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = ("answer to " + self.path).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)  # after a HEAD too, wrongly
    do_POST = do_GET  # the body is never read
    do_HEAD = do_GET
    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
`})
	inst, ctx := startApp(t, prep)
	invoke := func(method, path, body string) string {
		t.Helper()
		resp, err := inst.Invoke(ctx, &runtime.Request{Method: method, Path: path, Header: http.Header{}, Body: []byte(body)}, slog.Default())
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		return string(resp.Body)
	}
	if got := invoke("GET", "/warm", ""); got != "answer to /warm" {
		t.Fatalf("GET /warm: %q", got)
	}
	invoke("POST", "/attack", "GET /planted HTTP/1.1\r\nHost: x\r\n\r\n")
	if got := invoke("GET", "/victim", ""); got != "answer to /victim" {
		t.Errorf("the caller after a POST with a request in its body got %q, want its own answer", got)
	}
	invoke("HEAD", "/head", "")
	if got := invoke("GET", "/after-head", ""); got != "answer to /after-head" {
		t.Errorf("the caller after a HEAD got %q, want its own answer", got)
	}
}

// TestRestrictiveUmask: a server run under umask 077 (systemd's UMask=0077)
// still runs its functions: the bundle's folders and the sandbox's root
// get the modes they are made with (under it, /var was 0700 and the
// program's user could not reach /var/task, nor a folder of the bundle).
func TestRestrictiveUmask(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	r := newRuntime(t)
	prep := prepare(t, r, map[string]string{
		"run.sh*":      "#!/bin/sh\necho 'Content-Type: text/plain'\necho\n. ./lib/greet.sh\n",
		"lib/greet.sh": "echo greeted\n",
	})
	if got := string(runOnce(t, prep, testConfig(runtime.ProtocolStdio, "./run.sh")).Body); got != "greeted\n" {
		t.Errorf("body = %q, want the program run from its bundle's folder", got)
	}
}

// TestSocketBuffersCountAgainstMemory: what a program buffers in sockets to
// itself counts towards its memory limit (cgroup v1 counted it only with a
// limit of its own), and it may open no more than 1024 files: a 64 MiB
// function filling hundreds of loopback connections once held gigabytes of
// the host's memory, and pressed every socket on the host.
func TestSocketBuffersCountAgainstMemory(t *testing.T) {
	r := newRuntime(t)
	prep := prepare(t, r, map[string]string{"fill.py": `
import resource, socket
print("Content-Type: text/plain\n")
print("nofile=%d" % resource.getrlimit(resource.RLIMIT_NOFILE)[0], flush=True)
pairs, total = [], 0
chunk = b"x" * 65536
try:
    while total < (512 << 20) and len(pairs) < 400:
        l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)
        a = socket.create_connection(l.getsockname()); b, _ = l.accept(); l.close()
        a.setblocking(False)
        pairs.append((a, b))
        try:
            while True:
                total += a.send(chunk)
        except BlockingIOError:
            pass
except OSError as e:
    print("stopped: %s" % e)
print("buffered=%dMiB" % (total >> 20))
`})
	cfg := testConfig(runtime.ProtocolStdio, "python3", "fill.py")
	cfg.Limits.MemoryBytes = 64 << 20
	resp, err := invokeOnce(t, prep, cfg)
	if err != nil {
		t.Logf("the program was stopped: %v", err) // by its memory limit: fine
		return
	}
	t.Logf("the program says:\n%s", resp.Body)
	var nofile, buffered int
	for line := range strings.SplitSeq(string(resp.Body), "\n") {
		fmt.Sscanf(line, "nofile=%d", &nofile)
		fmt.Sscanf(line, "buffered=%dMiB", &buffered)
	}
	if nofile != 1024 {
		t.Errorf("the program may open %d files, want 1024:\n%s", nofile, resp.Body)
	}
	if buffered > 128 {
		t.Errorf("a 64 MiB function buffered %d MiB in sockets:\n%s", buffered, resp.Body)
	}
}

// TestCloseDoesNotWaitForAHiddenPipe: a program that parks its stdout and
// stderr in a unix socket's own queue (a cycle only the kernel's collector
// breaks, whenever it runs) keeps the host's output pipe open after every
// process of its sandbox has died; closing its instance does not wait for
// the collector (it once took from milliseconds to over ten seconds, with
// the instance's cgroup and its slot in the pool held meanwhile).
func TestCloseDoesNotWaitForAHiddenPipe(t *testing.T) {
	r := newRuntime(t)
	prep := prepare(t, r, map[string]string{"app.py": `
import array, os, socket
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
b.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [a.fileno(), 1, 2]))])
a.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [b.fileno(), 1, 2]))])
a.close(); b.close()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(os.environ["PORT"]))); s.listen(5)
while True:
    c, _ = s.accept()
    c.recv(65536)
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    c.close()
`})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for round := range 3 {
		inst, err := prep.Start(ctx, testConfig(runtime.ProtocolHTTP, "python3", "app.py"))
		if err != nil {
			t.Fatal(err)
		}
		if resp, err := inst.Invoke(ctx, &runtime.Request{Method: "GET", Path: "/", Header: http.Header{}}, slog.Default()); err != nil || string(resp.Body) != "ok" {
			t.Fatalf("round %d: Invoke = %v, %v", round, resp, err)
		}
		start := time.Now()
		inst.Close(ctx)
		if took := time.Since(start); took > 3*outputDrain {
			t.Errorf("round %d: Close took %v, want it done about %v after the sandbox died", round, took, outputDrain)
		}
	}
}

// TestHTTPCancelEndsTheExchange: a request cancelled while the program is
// still answering ends at once, though its deadline is far: the exchange
// watches the context without its deadline.
func TestHTTPCancelEndsTheExchange(t *testing.T) {
	r := newRuntime(t)
	prep := prepare(t, r, map[string]string{"app.py": `
import http.server, os, time
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        time.sleep(30)
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
`})
	inst, _ := startApp(t, prep)
	parent, cancel := context.WithCancel(context.Background())
	ctx := deadline.New(parent, time.Minute)
	defer ctx.Release()
	time.AfterFunc(200*time.Millisecond, cancel)
	start := time.Now()
	_, err := inst.Invoke(ctx, &runtime.Request{Method: "GET", Path: "/", Header: http.Header{}, InvocationID: "inv"}, slog.Default())
	if err == nil {
		t.Fatal("a cancelled request answered")
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the cancelled request ended after %v, not at its cancellation", took)
	}
}
