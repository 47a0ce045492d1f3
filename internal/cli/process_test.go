package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// needProcessRuntime skips a test of process functions where they cannot
// run: off Linux, or without root, outside CI (CI runs as root, where a
// missing runtime must fail the test instead).
func needProcessRuntime(t *testing.T) {
	t.Helper()
	if (goruntime.GOOS != "linux" || os.Geteuid() != 0) && os.Getenv("CI") == "" {
		t.Skip("process functions need root on Linux")
	}
}

// TestProcessExamples deploys each process example with `gust deploy <dir>`
// and invokes it.
func TestProcessExamples(t *testing.T) {
	needProcessRuntime(t)
	dir := t.TempDir()
	n := startNode(t, dir)
	info := n.mustGust(t, "version")
	if !strings.Contains(info, "process") {
		t.Fatalf("version printed %q: the process runtime is not available", info)
	}
	for _, name := range []string{"python-http", "node-http", "shell-stdio"} {
		out := n.mustGust(t, "deploy", filepath.Join(moduleRoot, "examples", name))
		if !strings.Contains(out, "deployed "+name+" version 1") {
			t.Errorf("deploy %s printed %q", name, out)
		}
	}

	if out := n.mustGust(t, "describe", "python-http"); !strings.Contains(out, "python3 app.py") || !strings.Contains(out, "http, network none, 1 at once per instance") {
		t.Errorf("describe printed %q, want the command and the protocol", out)
	}
	out := n.mustGust(t, "invoke", "python-http", "--path", "/hi")
	var py struct{ Message, Path, Invocation string }
	if err := json.Unmarshal([]byte(out), &py); err != nil || py.Message != "hello, world" || py.Path != "/hi" || py.Invocation == "" {
		t.Errorf("python-http GET answered %q (%v), want the greeting, the path and an invocation id", out, err)
	}
	// The path as the client escaped it: %2F is not a slash.
	if a := n.do(t, "GET", "/fn/default/python-http/a%2Fb/c%20d", "", nil); json.Unmarshal([]byte(a.body), &py) != nil || py.Path != "/a%2Fb/c%20d" {
		t.Errorf("python-http GET /a%%2Fb/c%%20d answered %d %q, want the path as sent", a.status, a.body)
	}
	// A HEAD answers the length of the body a GET would have had, which
	// the program declared without sending the body.
	get := n.do(t, "GET", "/fn/default/python-http/len", "", nil)
	if head := n.do(t, "HEAD", "/fn/default/python-http/len", "", nil); head.status != 200 || head.header.Get("Content-Length") != strconv.Itoa(len(get.body)) || head.body != "" {
		t.Errorf("python-http HEAD: %d, Content-Length %q, body %q; want 200, %d (the GET's), no body", head.status, head.header.Get("Content-Length"), head.body, len(get.body))
	}
	out = n.mustGust(t, "invoke", "python-http", "-d", `{"a":1,"b":2}`)
	if !strings.Contains(out, `"keys": 2`) {
		t.Errorf("python-http POST answered %q, want keys 2", out)
	}
	if a := n.do(t, "POST", "/fn/default/python-http", "application/json", strings.NewReader("{not json")); a.status != 400 || !strings.Contains(a.body, "not JSON") {
		t.Errorf("python-http with a bad body: %d %q, want the function's own 400", a.status, a.body)
	}

	for i := 1; i <= 2; i++ {
		out = n.mustGust(t, "invoke", "node-http", "-d", "x")
		var nd struct {
			Message, Method, Body string
			Served                int
		}
		if err := json.Unmarshal([]byte(out), &nd); err != nil || nd.Message != "hello from node" || nd.Body != "x" || nd.Served != i {
			t.Errorf("node-http call %d answered %q (%v), want the warm instance's count %d", i, out, err, i)
		}
	}

	out = n.mustGust(t, "invoke", "shell-stdio", "-d", "one two three", "--path", "/count")
	if strings.TrimSpace(out) != "POST /count: 3 words" {
		t.Errorf("shell-stdio answered %q", out)
	}
	waitFor(t, func() bool { return strings.Contains(n.logs.String(), "handled ") })
	// A CGI program answers a HEAD the same way: a Content-Length, no body.
	get = n.do(t, "GET", "/fn/default/shell-stdio/count", "", nil)
	if head := n.do(t, "HEAD", "/fn/default/shell-stdio/count", "", nil); get.body != "GET /count: 0 words\n" || head.status != 200 || head.header.Get("Content-Length") != strconv.Itoa(len(get.body)) || head.body != "" {
		t.Errorf("shell-stdio GET answered %q; HEAD %d, Content-Length %q, body %q; want 200, %d (the GET's), no body", get.body, head.status, head.header.Get("Content-Length"), head.body, len(get.body))
	}

	// Asynchronously, through the same instances.
	id, a := n.enqueue(t, "/fn/default/shell-stdio/later", "a b c d", "")
	if a.status != 202 {
		t.Fatalf("enqueue: %d %s", a.status, a.body)
	}
	waitFor(t, func() bool {
		return strings.Contains(n.do(t, "GET", "/v1/invocations/"+id, "", nil).body, `"succeeded"`)
	})
	if out := n.mustGust(t, "invocations", "get", id); !strings.Contains(out, "POST /later: 4 words") {
		t.Errorf("the asynchronous invocation's record: %q", out)
	}

	if len(sandboxCgroups()) == 0 {
		t.Error("no sandbox cgroup found while the functions run: the check below would prove nothing")
	}
	// Removed, a function leaves no unpacked bundle and no process.
	for _, name := range []string{"python-http", "node-http", "shell-stdio"} {
		n.mustGust(t, "rm", name)
	}
	waitFor(t, func() bool {
		left, _ := filepath.Glob(filepath.Join(dir, "bundles", "*"))
		return len(left) == 0
	})
	waitFor(t, func() bool { return len(sandboxCgroups()) == 0 })
}

// sandboxCgroups lists the cgroups of the sandboxes this test binary's
// servers run (v1 hierarchies, at the root or a level down, or v2), but
// for those of the spare inits a node keeps for its next cold starts: a
// spare's cgroup has neither a memory limit nor more than the least CPU
// weight yet, and every sandbox's has both.
func sandboxCgroups() []string {
	pid := strconv.Itoa(os.Getpid())
	var all []string
	for _, pattern := range []string{"/sys/fs/cgroup/*/gust/" + pid + "-*/s*", "/sys/fs/cgroup/*/*/*/gust/" + pid + "-*/s*", "/sys/fs/cgroup/*/gust-sandboxes/" + pid + "-*/s*"} {
		all = append(all, must(filepath.Glob(pattern))...)
	}
	unlimited, idle := map[string]bool{}, map[string]bool{}
	for _, dir := range all {
		read := func(file string) string {
			b, _ := os.ReadFile(filepath.Join(dir, file))
			return strings.TrimSpace(string(b))
		}
		if l := read("memory.limit_in_bytes") + read("memory.max"); l == "max" || len(l) >= 19 { // v1 says 9223372036854771712
			unlimited[filepath.Base(dir)] = true
		}
		if w := read("cpu.shares") + read("cpu.weight"); w == "2" || w == "1" {
			idle[filepath.Base(dir)] = true
		}
	}
	var out []string
	for _, dir := range all {
		if name := filepath.Base(dir); !unlimited[name] || !idle[name] {
			out = append(out, dir)
		}
	}
	return out
}

// TestProcessFunctionSurvivesRestart: a stopped server leaves no unpacked
// bundle behind, and once restarted it unpacks and serves the function
// again; /v1/info says the runtime is there.
func TestProcessFunctionSurvivesRestart(t *testing.T) {
	needProcessRuntime(t)
	dir := t.TempDir()
	n := startNode(t, dir)
	n.mustGust(t, "deploy", filepath.Join(moduleRoot, "examples", "shell-stdio"))
	n.stop(t)
	if unpacked, err := filepath.Glob(filepath.Join(dir, "bundles", "*")); err != nil || len(unpacked) != 0 {
		t.Errorf("after a stop the bundles folder holds %v (%v), want nothing", unpacked, err)
	}
	n = startNode(t, dir)
	if out := n.mustGust(t, "invoke", "shell-stdio", "-d", "a b"); strings.TrimSpace(out) != "POST /: 2 words" {
		t.Errorf("after a restart shell-stdio answered %q", out)
	}
	a := n.do(t, "GET", "/v1/info", "", nil)
	var info struct {
		Runtimes    []string
		Unavailable map[string]string `json:"unavailable_runtimes"`
	}
	if err := json.Unmarshal([]byte(a.body), &info); err != nil || !slices.Contains(info.Runtimes, "process") || len(info.Unavailable) != 0 {
		t.Errorf("/v1/info = %s (%v), want the process runtime available", a.body, err)
	}
}

// TestProcessCrashSparesTheNextRequest: a request that crashes a program
// serving two slots must not fail the next request on the other, idle
// slot, nor one to a program that died idle; each gets a new program.
func TestProcessCrashSparesTheNextRequest(t *testing.T) {
	needProcessRuntime(t)
	n := startNode(t, t.TempDir())
	sandboxDeploy(t, n, "name: crashy\nruntime: process\ncommand: [python3, app.py]\nconcurrency: 2\nmin_instances: 1\nauth: none\n", map[string]string{"app.py": `
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if body == b"crash":
            os._exit(3)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
`})
	if a := sandboxCall(t, n, "crashy", "hello"); a.status != 200 {
		t.Fatalf("first request: %d %s", a.status, a.body)
	}
	if a := sandboxCall(t, n, "crashy", "crash"); a.status != 502 {
		t.Errorf("the crashing request: %d %s, want 502", a.status, a.body)
	}
	for i := range 3 {
		if a := sandboxCall(t, n, "crashy", "hello"); a.status != 200 || a.body != "ok" {
			t.Errorf("request %d after the crash: %d %s, want 200 ok from a new program", i, a.status, a.body)
		}
	}
}
