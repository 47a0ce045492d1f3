package wasm

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/gust-faas/gust/internal/runtime"
)

func startOwned(t *testing.T, m *Module, owner string, env ...string) *Instance {
	t.Helper()
	inst, err := m.Start(context.Background(), InstanceConfig{
		Env:    env,
		Limits: testLimits,
		Stderr: runtime.NewStderrLog(slog.New(slog.DiscardHandler), 100),
		Owner:  owner,
	})
	if err != nil {
		t.Fatalf("Start(owner %q): %v", owner, err)
	}
	t.Cleanup(func() { inst.Close(context.Background()) })
	return inst
}

func get(t *testing.T, inst *Instance, path string) string {
	t.Helper()
	resp, err := callReactor(t, inst, 5*time.Second, "GET", path, "")
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return string(resp.Body)
}

// TestSnapshotStartsLaterInstances: the second instance of an owner starts
// from the state of the first right after its start: what its package
// initializers made (a random token) is there, what the first did since
// (the requests it counted) is not. Another owner, the same owner with
// another environment, and an instance with no owner start afresh.
func TestSnapshotStartsLaterInstances(t *testing.T) {
	m, err := newRuntime(t).Compile(context.Background(), reactorWasm)
	if err != nil {
		t.Fatal(err)
	}
	if m.snapshots == nil {
		t.Fatal("the SDK's module cannot be snapshotted: the test would not test it")
	}
	first := startOwned(t, m, "acme/f@1", "A=1")
	token := get(t, first, "/token")
	for range 3 {
		get(t, first, "/count")
	}
	second := startOwned(t, m, "acme/f@1", "A=1")
	if got := get(t, second, "/count"); got != "1" {
		t.Errorf("second instance's first /count = %q, want 1: the snapshot holds the start, not the requests since", got)
	}
	if got := get(t, second, "/token"); got != token {
		t.Errorf("second instance's token = %q, want the first's %q (started from its snapshot)", got, token)
	}
	// The restored instance is a whole one: it serves on, collects its
	// garbage and answers what the first would.
	for range 200 {
		get(t, second, "/request")
	}
	if got, want := get(t, second, "/env"), "GREETING= ID=inv-1"; got != want {
		t.Errorf("/env = %q, want %q", got, want)
	}
	if got := get(t, second, "/gc"); got == "" {
		t.Error("/gc answered nothing")
	}
	for name, inst := range map[string]*Instance{
		"another owner":       startOwned(t, m, "other/f@1", "A=1"),
		"another environment": startOwned(t, m, "acme/f@1", "A=2"),
		"no owner":            startOwned(t, m, "", "A=1"),
	} {
		if got := get(t, inst, "/token"); got == token {
			t.Errorf("%s: token = %q, the first instance's: it started from another's snapshot", name, got)
		}
	}
}

// TestSnapshotRestoredInstanceFaults: an instance started from a snapshot
// meets its memory limit and its deadline as any other does.
func TestSnapshotRestoredInstanceFaults(t *testing.T) {
	m, err := newRuntime(t).Compile(context.Background(), reactorWasm)
	if err != nil {
		t.Fatal(err)
	}
	startOwned(t, m, "acme/f@1")
	for path, want := range map[string]runtime.Kind{"/oom": runtime.OutOfMemory, "/loop": runtime.Timeout} {
		inst := startOwned(t, m, "acme/f@1")
		_, err := callReactor(t, inst, time.Second, "GET", path, "")
		if kind := runtime.KindOf(err); kind != want {
			t.Errorf("GET %s on a restored instance: %v, want a %s error", path, err, want)
		}
	}
}

// TestSnapshotBudget: past the runtime's budget for snapshots, instances
// start in full; a closed module gives its snapshots' bytes back.
func TestSnapshotBudget(t *testing.T) {
	rt := newRuntime(t)
	m, err := rt.Compile(context.Background(), reactorWasm)
	if err != nil {
		t.Fatal(err)
	}
	defer func(b int64) { snapshotBudget = b }(snapshotBudget)
	snapshotBudget = 1
	first := get(t, startOwned(t, m, "acme/f@1"), "/token")
	if got := get(t, startOwned(t, m, "acme/f@1"), "/token"); got == first {
		t.Errorf("over the budget, the second instance still started from a snapshot")
	}
	if n := rt.snapshotBytes.Load(); n != 0 {
		t.Errorf("over the budget, %d bytes of snapshots are held", n)
	}
	snapshotBudget = 256 << 20
	startOwned(t, m, "acme/f@1")
	startOwned(t, m, "acme/f@2")
	if n := rt.snapshotBytes.Load(); n < 1<<20 {
		t.Fatalf("two snapshots hold %d bytes, want megabytes", n)
	}
	m.Close(context.Background())
	if n := rt.snapshotBytes.Load(); n != 0 {
		t.Errorf("after the module closed, %d bytes of snapshots are held", n)
	}
}
