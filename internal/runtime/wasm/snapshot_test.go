package wasm

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
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
	m, err := newRuntime(t).Compile(context.Background(), "", reactorWasm)
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
	m, err := newRuntime(t).Compile(context.Background(), "", reactorWasm)
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
	m, err := rt.Compile(context.Background(), "", reactorWasm)
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
	if _, wanted := m.snapshots.find(snapshotKey{owner: "acme/f@1", limit: testLimits.MemoryBytes}); wanted {
		t.Errorf("over the budget, later starts still copy the memory for a snapshot")
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

// TestSnapshotThatDoesNotFit: a snapshot that does not fit a new instance
// is dropped, and the instance starts in full; the next start takes a new
// one.
func TestSnapshotThatDoesNotFit(t *testing.T) {
	m, err := newRuntime(t).Compile(context.Background(), "", reactorWasm)
	if err != nil {
		t.Fatal(err)
	}
	token := get(t, startOwned(t, m, "acme/f@1"), "/token")
	m.snapshots.list[0].size = 0 // smaller than the memory at instantiation
	if got := get(t, startOwned(t, m, "acme/f@1"), "/token"); got == token {
		t.Fatal("an instance started from a snapshot that does not fit")
	}
	if len(m.snapshots.list) != 0 {
		t.Fatalf("the snapshot that did not fit is kept")
	}
	token = get(t, startOwned(t, m, "acme/f@1"), "/token")
	if got := get(t, startOwned(t, m, "acme/f@1"), "/token"); got != token {
		t.Errorf("after a start in full, the next did not start from its snapshot")
	}
}

// TestSnapshotForget: Forget drops an owner's snapshots and gives back
// their bytes; another owner's stay.
func TestSnapshotForget(t *testing.T) {
	rt := newRuntime(t)
	m, err := rt.Compile(context.Background(), "", reactorWasm)
	if err != nil {
		t.Fatal(err)
	}
	startOwned(t, m, "acme/f@1")
	other := get(t, startOwned(t, m, "other/f@1"), "/token")
	before := rt.snapshotBytes.Load()
	prepared{m}.Forget("acme/f@1")
	if after := rt.snapshotBytes.Load(); after <= 0 || after >= before {
		t.Errorf("after Forget, %d bytes are held of %d", after, before)
	}
	if len(m.snapshots.list) != 1 || m.snapshots.list[0].key.owner != "other/f@1" {
		t.Errorf("after Forget of acme/f@1, the snapshots are %v", m.snapshots.list)
	}
	if got := get(t, startOwned(t, m, "other/f@1"), "/token"); got != other {
		t.Errorf("another owner's snapshot was forgotten too")
	}
}

// TestSnapshotRestoresTheStart: an instance started from a snapshot holds
// the memory and globals the first held right after its start, byte for
// byte.
func TestSnapshotRestoresTheStart(t *testing.T) {
	m, err := newRuntime(t).Compile(context.Background(), "", reactorWasm)
	if err != nil {
		t.Fatal(err)
	}
	first := startOwned(t, m, "acme/f@1")
	second := startOwned(t, m, "acme/f@1")
	a, b := first.mod.Memory(), second.mod.Memory()
	ma, _ := a.Read(0, a.Size())
	mb, _ := b.Read(0, b.Size())
	if len(ma) != len(mb) {
		t.Fatalf("memory of %d bytes restored as %d", len(ma), len(mb))
	}
	for off := 0; off < len(ma); off += snapshotPage {
		if !bytes.Equal(ma[off:off+snapshotPage], mb[off:off+snapshotPage]) {
			t.Fatalf("page at %d differs", off)
		}
	}
	for _, name := range m.snapshots.globals {
		if ga, gb := first.mod.ExportedGlobal(name).Get(), second.mod.ExportedGlobal(name).Get(); ga != gb {
			t.Errorf("global %s = %d, restored as %d", name, ga, gb)
		}
	}
}

// TestSnapshotOneTakerPerBurst: of the starts of a key that find no
// snapshot, only the first is to take one; those that come while it is
// under way start in full without copying their memory too. Once it has
// settled without a snapshot (its start failed), the next start may take
// one.
func TestSnapshotOneTakerPerBurst(t *testing.T) {
	s := &snapshots{held: new(atomic.Int64)}
	key := snapshotKey{owner: "acme/f@1"}
	if _, wanted := s.find(key); !wanted {
		t.Fatal("the first start of a key is not asked to take its snapshot")
	}
	if _, wanted := s.find(key); wanted {
		t.Error("a second start, while the first is under way, is asked to take a snapshot too")
	}
	if _, wanted := s.find(snapshotKey{owner: "acme/f@1", env: "A=1"}); !wanted {
		t.Error("the first start of another key waits for this key's")
	}
	s.settled(key)
	if _, wanted := s.find(key); !wanted {
		t.Error("after the first start settled without a snapshot, the next is not asked to take one")
	}
}

// TestSnapshotBurstOfFirstStarts: instances of an owner started at once,
// before it has a snapshot, all start, and the owner ends with one
// snapshot, from which the next instance starts, and no start still
// marked as taking one (which would keep the key's later starts from
// taking theirs). That only one of them takes it is
// TestSnapshotOneTakerPerBurst's.
func TestSnapshotBurstOfFirstStarts(t *testing.T) {
	m, err := newRuntime(t).Compile(context.Background(), "", reactorWasm)
	if err != nil {
		t.Fatal(err)
	}
	const burst = 6
	tokens := make(chan string, burst)
	var wg sync.WaitGroup
	for range burst {
		wg.Go(func() {
			inst, err := m.Start(context.Background(), InstanceConfig{Limits: testLimits, Stderr: runtime.NewStderrLog(slog.New(slog.DiscardHandler), 100), Owner: "acme/f@1"})
			if err != nil {
				t.Errorf("a start of the burst: %v", err)
				return
			}
			defer inst.Close(context.Background())
			resp, err := callReactor(t, inst, 5*time.Second, "GET", "/token", "")
			if err != nil {
				t.Errorf("GET /token: %v", err)
				return
			}
			tokens <- string(resp.Body)
		})
	}
	wg.Wait()
	close(tokens)
	started := map[string]bool{}
	for tok := range tokens {
		started[tok] = true
	}
	if len(m.snapshots.list) != 1 || len(m.snapshots.taking) != 0 {
		t.Fatalf("after a burst of first starts: %d snapshots, %d starts still taking one; want 1 and 0", len(m.snapshots.list), len(m.snapshots.taking))
	}
	if next := get(t, startOwned(t, m, "acme/f@1"), "/token"); !started[next] {
		t.Errorf("the next instance's token %q is none of the burst's %v: it did not start from their snapshot", next, started)
	}
}
