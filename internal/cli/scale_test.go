package cli

import (
	"encoding/json"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// deploySpec deploys the artifact at path as name with extra spec fields.
func (n *node) deploySpec(t *testing.T, name, path, fields string) {
	t.Helper()
	if a := n.deployRaw(t, name, "{"+fields+"}", must(os.ReadFile(path))); a.status != 201 && a.status != 200 {
		t.Fatalf("deploy %s: %d %s", name, a.status, a.body)
	}
}

func TestWarmInstancesAndColdStarts(t *testing.T) {
	n := startNode(t, t.TempDir())
	n.deploySpec(t, "fn", reactorPath, `"min_instances":0,"timeout":"2s"`)
	first := n.do(t, "GET", "/fn/default/fn/count", "", nil)
	// The pool may have compiled and not started anything: the first
	// request starts the instance.
	if first.status != 200 || first.body != "1" || first.header.Get("X-Gust-Cold-Start") != "1" || !strings.Contains(first.header.Get("Server-Timing"), "init;dur=") {
		t.Fatalf("first request: %d %q cold=%q timing=%q, want a cold start serving request 1", first.status, first.body, first.header.Get("X-Gust-Cold-Start"), first.header.Get("Server-Timing"))
	}
	for i := 2; i <= 5; i++ {
		a := n.do(t, "GET", "/fn/default/fn/count", "", nil)
		if a.body != string(rune('0'+i)) || a.header.Get("X-Gust-Cold-Start") != "" || strings.Contains(a.header.Get("Server-Timing"), "init") {
			t.Fatalf("request %d: %q cold=%q: want the same warm instance", i, a.body, a.header.Get("X-Gust-Cold-Start"))
		}
	}
	if out := n.mustGust(t, "describe", "fn"); !strings.Contains(out, "1 warm, 0 busy") {
		t.Errorf("describe does not show the warm instance:\n%s", out)
	}
	// A guest that traps is replaced; the next request succeeds on a new instance.
	if a := n.do(t, "GET", "/fn/default/fn/panic", "", nil); a.status != 502 || a.code != "function_error" || !strings.Contains(a.body, "reactor panicked on purpose") {
		t.Errorf("panic: %d %s %q", a.status, a.code, a.body)
	}
	if a := n.do(t, "GET", "/fn/default/fn/count", "", nil); a.status != 200 || a.body != "1" || a.header.Get("X-Gust-Cold-Start") != "1" {
		t.Errorf("after the trap: %d %q cold=%q, want a new instance", a.status, a.body, a.header.Get("X-Gust-Cold-Start"))
	}
	if a := n.do(t, "GET", "/fn/default/fn/loop", "", nil); a.status != 504 {
		t.Errorf("loop: %d, want 504", a.status)
	}
}

func TestMinInstancesAreWarmAhead(t *testing.T) {
	n := startNode(t, t.TempDir())
	n.deploySpec(t, "warm", reactorPath, `"min_instances":2`)
	waitFor(t, func() bool { return strings.Contains(n.mustGust(t, "describe", "warm"), "2 warm") })
	if a := n.do(t, "GET", "/fn/default/warm/count", "", nil); a.header.Get("X-Gust-Cold-Start") != "" {
		t.Errorf("first request with min_instances 2 paid a cold start")
	}
}

func TestQueueFullGets429(t *testing.T) {
	n := startNode(t, t.TempDir())
	n.deploySpec(t, "narrow", reactorPath, `"max_instances":1,"max_queue":1`)
	var wg sync.WaitGroup
	results := make(chan answer, 12)
	for range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results <- n.do(t, "GET", "/fn/default/narrow/slow", "", nil)
		}()
	}
	wg.Wait()
	close(results)
	counts := map[int]int{}
	for a := range results {
		counts[a.status]++
		if a.status == 429 && (a.code != "too_many_requests" || a.header.Get("Retry-After") == "") {
			t.Errorf("429 without its code or Retry-After: %s %v", a.code, a.header)
		}
	}
	if counts[200] < 1 || counts[429] < 1 || counts[200]+counts[429] != 12 {
		t.Errorf("statuses %v: want some 200 and some 429, nothing else", counts)
	}
}

// TestQueuedTimeIsShown: a request that waited for the one instance says
// so in Server-Timing, and a timeout that the wait used up in part says
// how much.
func TestQueuedTimeIsShown(t *testing.T) {
	n := startNode(t, t.TempDir())
	n.deploySpec(t, "one", reactorPath, `"max_instances":1,"timeout":"450ms"`)
	n.do(t, "GET", "/fn/default/one/ok", "", nil) // warm
	first, second := make(chan answer, 1), make(chan answer, 1)
	go func() { first <- n.do(t, "GET", "/fn/default/one/slow", "", nil) }()
	time.Sleep(50 * time.Millisecond) // the first has the instance
	go func() { second <- n.do(t, "GET", "/fn/default/one/slow", "", nil) }()
	if a := <-first; a.status != 200 || strings.Contains(a.header.Get("Server-Timing"), "wait;") {
		t.Errorf("the first request: %d, Server-Timing %q; want 200 without a queue time", a.status, a.header.Get("Server-Timing"))
	}
	a := <-second // 250 ms waiting and 300 ms running: past 450 ms
	if a.status != 504 || !strings.Contains(a.msg, "for a free instance") || !strings.Contains(a.header.Get("Server-Timing"), "wait;dur=") {
		t.Errorf("the queued request: %d %q, Server-Timing %q; want 504 saying how long it waited", a.status, a.msg, a.header.Get("Server-Timing"))
	}
}

func TestAliasesCanaryAndRollback(t *testing.T) {
	n := startNode(t, t.TempDir())
	n.deploySpec(t, "app", reactorPath, "")
	n.deploySpec(t, "app", wasmFile(t, helloWasm), "") // version 2 is hello
	n.mustGust(t, "alias", "set", "app", "prod", "1")
	if a := n.do(t, "POST", "/fn/default/app:prod/x", "", strings.NewReader("b")); a.status != 201 || a.header.Get("X-Gust-Function-Version") != "1" {
		t.Errorf("app:prod: %d version %q, want version 1", a.status, a.header.Get("X-Gust-Function-Version"))
	}
	n.mustGust(t, "alias", "set", "app", "prod", "1", "--canary", "2:50")
	seen := map[string]int{}
	for range 100 {
		a := n.do(t, "POST", "/fn/default/app:prod", "", strings.NewReader("x"))
		seen[a.header.Get("X-Gust-Function-Version")]++
	}
	if seen["1"] == 0 || seen["2"] == 0 || seen["1"]+seen["2"] != 100 {
		t.Errorf("a 50/50 canary served versions %v, want both", seen)
	}
	if out := n.mustGust(t, "describe", "app"); !strings.Contains(out, "version 1 (50%), version 2 (50%)") {
		t.Errorf("describe does not show the canary:\n%s", out)
	}
	bad := []struct{ alias, body, msg string }{
		{"prod", `{"version":9}`, "version 9 of app does not exist"},
		{"prod", `{"routes":[{"version":1,"weight":60},{"version":2,"weight":30}]}`, "add up to 90"},
		{"prod", `{"routes":[{"version":1,"weight":50},{"version":1,"weight":50}]}`, "twice"},
		{"prod", `{"routes":[{"version":1,"weight":40},{"version":2,"weight":30},{"version":1,"weight":30}]}`, "3 routes"},
		{"3", `{"version":1}`, "cannot be taken for a version"},
		{"latest", `{"version":1}`, "cannot be taken for a version"},
		{"prod", `{}`, "names a \"version\""},
		{"prod", `{"version":1,"extra":1}`, "unknown field"},
	}
	for _, b := range bad {
		a := n.do(t, "PUT", "/v1/functions/app/aliases/"+b.alias, "application/json", strings.NewReader(b.body))
		if a.status != 400 || !strings.Contains(a.msg, b.msg) {
			t.Errorf("alias %s = %s: %d %q, want 400 containing %q", b.alias, b.body, a.status, a.msg, b.msg)
		}
	}
	if a := n.do(t, "PUT", "/v1/functions/nope/aliases/prod", "application/json", strings.NewReader(`{"version":1}`)); a.status != 404 {
		t.Errorf("alias of a missing function: %d, want 404", a.status)
	}
	if a := n.do(t, "GET", "/fn/default/app:nope", "", nil); a.status != 404 || !strings.Contains(a.msg, `no alias "nope"`) {
		t.Errorf("missing alias: %d %q", a.status, a.msg)
	}
	n.mustGust(t, "alias", "rm", "app", "prod")
	if a := n.do(t, "GET", "/fn/default/app:prod", "", nil); a.status != 404 {
		t.Errorf("removed alias: %d, want 404", a.status)
	}

	// Rollback: version 3 runs what version 1 ran.
	if out := n.mustGust(t, "rollback", "app"); !strings.Contains(out, "version 3 runs what version 1 ran") {
		t.Errorf("rollback printed %q", out)
	}
	var f struct {
		Latest   int
		Versions []struct{ Digest string }
	}
	json.Unmarshal([]byte(n.do(t, "GET", "/v1/functions/app", "", nil).body), &f)
	if f.Latest != 3 || f.Versions[2].Digest != f.Versions[0].Digest {
		t.Errorf("after rollback: latest %d, digests %v; want 3 running version 1's artifact", f.Latest, f.Versions)
	}
	if a := n.do(t, "POST", "/fn/default/app/x", "", strings.NewReader("b")); a.status != 201 || a.body != "POST /x b" {
		t.Errorf("latest after rollback: %d %q, want the reactor's answer", a.status, a.body)
	}
	if a := n.do(t, "POST", "/v1/functions/nope/rollback", "", nil); a.status != 404 {
		t.Errorf("rollback of a missing function: %d", a.status)
	}
}

// TestRolloutAndDelete: a new version takes new requests at once while the
// old version's request in flight finishes; deleting a function drains it.
func TestRolloutAndDelete(t *testing.T) {
	n := startNode(t, t.TempDir())
	n.deploySpec(t, "svc", reactorPath, "")
	n.do(t, "GET", "/fn/default/svc/count", "", nil)
	done := make(chan answer, 1)
	go func() { done <- n.do(t, "GET", "/fn/default/svc/slow", "", nil) }()
	waitFor(t, func() bool { return strings.Contains(n.logs.String(), "path=/slow") })
	n.deploySpec(t, "svc", wasmFile(t, helloWasm), "")
	if a := n.do(t, "POST", "/fn/default/svc", "", strings.NewReader("new")); a.body != "Hello, new!\n" {
		t.Errorf("during the rollout the latest answered %q, want version 2", a.body)
	}
	if a := <-done; a.status != 200 || a.body != "slow done" {
		t.Errorf("the old version's request in flight got %d %q, want its answer", a.status, a.body)
	}
	waitFor(t, func() bool {
		var d struct {
			Instances map[string]struct{ Idle, Busy int }
		}
		json.Unmarshal([]byte(n.do(t, "GET", "/v1/functions/svc", "", nil).body), &d)
		v1 := d.Instances["1"]
		return v1.Idle == 0 && v1.Busy == 0
	})

	// Delete while a request is in flight: it finishes; new ones get 404.
	n.deploySpec(t, "svc", reactorPath, "")
	go func() { done <- n.do(t, "GET", "/fn/default/svc/slow", "", nil) }()
	waitFor(t, func() bool { return strings.Count(n.logs.String(), "path=/slow") == 2 })
	n.mustGust(t, "rm", "svc")
	if a := <-done; a.status != 200 || a.body != "slow done" {
		t.Errorf("request in flight at delete got %d %q, want its answer", a.status, a.body)
	}
	if a := n.do(t, "GET", "/fn/default/svc", "", nil); a.status != 404 {
		t.Errorf("after delete: %d, want 404", a.status)
	}
}
