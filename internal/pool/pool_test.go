package pool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gust-faas/gust/internal/registry"
	"github.com/gust-faas/gust/internal/runtime"
	"github.com/gust-faas/gust/internal/runtime/wasm"
	"github.com/gust-faas/gust/internal/runtime/wasm/wasmtest"
)

// The fixtures, built once per test binary: a Go SDK reactor whose path
// picks a behaviour (/count, /slow, /sleep, /loop, /panic, echo) and a WASI
// command module.
var reactorWasm, guestWasm []byte

// cacheDir is a compilation cache shared by every test's runtime. Under the
// race detector wazero takes some 25 s to compile the two fixtures, and
// every pool compiles them again: the cache, filled once in TestMain, keeps
// the package's tests within a minute.
var cacheDir string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	reactorWasm = wasmtest.MustRead(wasmtest.Reactor)
	guestWasm = wasmtest.MustRead(wasmtest.Guest)
	dir, err := os.MkdirTemp("", "gust-pool-test-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	cacheDir = dir
	if err := fillCache(); err != nil {
		panic(err)
	}
	return m.Run()
}

// fillCache compiles both fixtures into cacheDir, in parallel.
func fillCache() error {
	ctx := context.Background()
	rt, err := wasm.New(ctx, wasm.Config{CacheDir: cacheDir})
	if err != nil {
		return err
	}
	defer rt.Close(ctx)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, artifact := range [][]byte{reactorWasm, guestWasm} {
		wg.Go(func() {
			m, err := rt.Compile(ctx, "", artifact)
			if err == nil {
				m.Close(ctx)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// artifacts is an in-memory artifact store.
type artifacts map[string][]byte

func (a artifacts) Get(_ context.Context, digest string) ([]byte, error) {
	b, ok := a[digest]
	if !ok {
		return nil, fmt.Errorf("artifact %s: %w", digest, registry.ErrNotFound)
	}
	return b, nil
}

var discard = slog.New(slog.DiscardHandler)

// newPool returns a pool on a fresh wazero runtime holding both fixtures;
// both are closed when the test ends. secrets may be nil.
func newPool(t testing.TB, secrets ...Secrets) *Pool {
	t.Helper()
	ctx := context.Background()
	rt, err := wasm.New(ctx, wasm.Config{CacheDir: cacheDir})
	if err != nil {
		t.Fatalf("wasm.New: %v", err)
	}
	deps := Deps{Sandboxes: map[string]runtime.Sandbox{registry.RuntimeWasm: rt}, Artifacts: artifacts{
		registry.Digest(reactorWasm): reactorWasm,
		registry.Digest(guestWasm):   guestWasm,
	}}
	if len(secrets) > 0 {
		deps.Secrets = secrets[0]
	}
	p := New(deps)
	t.Cleanup(func() {
		settle(t, p)
		p.Close()
		rt.Close(ctx)
	})
	return p
}

// settle waits until the pool's background work is done: every module
// compiled and no instance starting. (Closing the runtime under a compile
// makes wazero panic.)
func settle(t testing.TB, p *Pool) {
	t.Helper()
	waitFor(t, "the pool to settle", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, m := range p.modules {
			select {
			case <-m.ready:
			default:
				return false
			}
		}
		for _, vp := range p.versions {
			vp.mu.Lock()
			starting := vp.starting
			vp.mu.Unlock()
			if starting > 0 {
				return false
			}
		}
		return true
	})
}

// target returns version 1 of function name running artifact, with a spec
// that edit may change before defaults apply.
func target(name string, artifact []byte, edit func(*registry.Spec)) Target {
	spec := registry.Spec{Name: name, MemoryMB: 64, Timeout: registry.Duration(5 * time.Second), MaxInstances: 4}
	if edit != nil {
		edit(&spec)
	}
	return Target{Tenant: "acme", Function: name, Version: registry.Version{
		Number: 1, Digest: registry.Digest(artifact), Spec: spec.WithDefaults(),
	}}
}

var invocations atomic.Int64

// call invokes path on t under ctx.
func call(ctx context.Context, p *Pool, t Target, path string) (*runtime.Response, Outcome, error) {
	req := &runtime.Request{
		Method: "GET", Path: path, Header: http.Header{},
		Function: t.Function, Tenant: t.Tenant, Version: t.Version.Number,
		InvocationID: "inv-" + strconv.FormatInt(invocations.Add(1), 10),
	}
	return p.Invoke(ctx, t, req, discard)
}

// mustCall invokes path on t and fails the test on an error.
func mustCall(t *testing.T, p *Pool, tg Target, path string) (string, Outcome) {
	t.Helper()
	resp, out, err := call(context.Background(), p, tg, path)
	if err != nil {
		t.Fatalf("Invoke(%s) error: %v", path, err)
	}
	return string(resp.Body), out
}

// stats returns the stats of t's version (zero if the pool has none).
func stats(p *Pool, t Target) Stats {
	return p.Stats(t.Tenant, t.Function)[t.Version.Number]
}

// waitFor polls cond until it holds, or fails the test after a deadline.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitStats waits until t's stats are want.
func waitStats(t testing.TB, p *Pool, tg Target, want Stats) {
	t.Helper()
	var got Stats
	deadline := time.Now().Add(10 * time.Second)
	for {
		if got = stats(p, tg); got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Stats = %+v, want %+v", got, want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// activate syncs targets as the active set and waits until each has its
// pool, active, with its min_instances started.
func activate(t testing.TB, p *Pool, targets ...Target) {
	t.Helper()
	p.Sync(targets)
	p.syncs.Wait() // and with it the start of a version deployed (warmStart)
	for _, tg := range targets {
		waitFor(t, fmt.Sprintf("%s/%s version %d to be active", tg.Tenant, tg.Function, tg.Version.Number), func() bool {
			p.mu.Lock()
			vp := p.versions[tg.key()]
			p.mu.Unlock()
			if vp == nil {
				return false
			}
			policy, s := vp.snapshot()
			return policy.Active && len(s.Idle) >= min(policy.Min, policy.Max)
		})
	}
}

// waitGoroutines waits until no more than n goroutines run.
func waitGoroutines(t testing.TB, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := goruntime.NumGoroutine()
		if got <= n {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:goruntime.Stack(buf, true)]
			t.Fatalf("NumGoroutine = %d, want <= %d (leak)\n%s", got, n, buf)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWarmReuse(t *testing.T) {
	p := newPool(t)
	tg := target("warm", reactorWasm, nil)
	activate(t, p, tg)
	for i := 1; i <= 5; i++ {
		body, out := mustCall(t, p, tg, "/count")
		if want := strconv.Itoa(i); body != want {
			t.Errorf("request %d: /count = %q, want %q (one warm instance)", i, body, want)
		}
		if wantCold := i == 1; out.Cold != wantCold {
			t.Errorf("request %d: Outcome.Cold = %v, want %v", i, out.Cold, wantCold)
		}
		if out.Cold && out.Init <= 0 {
			t.Errorf("request %d: cold Outcome.Init = %v, want > 0", i, out.Init)
		}
		if !out.Cold && out.Init != 0 {
			t.Errorf("request %d: warm Outcome.Init = %v, want 0", i, out.Init)
		}
	}
	if got, want := stats(p, tg), (Stats{Idle: 1}); got != want {
		t.Errorf("Stats after the requests = %+v, want %+v", got, want)
	}
}

// TestRedeployedNumberIsANewPool: a function deleted and deployed again
// starts over at version 1; its requests must not reach the old version's
// instances, still warm under the same number.
func TestRedeployedNumberIsANewPool(t *testing.T) {
	p := newPool(t)
	old := target("again", reactorWasm, nil)
	old.Version.Created = time.Unix(1, 0)
	activate(t, p, old)
	mustCall(t, p, old, "/count")
	mustCall(t, p, old, "/count")
	again := old
	again.Version.Created = time.Unix(2, 0)
	activate(t, p, again)
	if body, out := mustCall(t, p, again, "/count"); body != "1" || !out.Cold {
		t.Errorf("first request to the new version 1: /count = %q, cold %v; want 1 from a new instance", body, out.Cold)
	}
}

func TestMaxInstancesHammer(t *testing.T) {
	const (
		requests = 1000
		maxInst  = 4
	)
	tests := []struct {
		name     string
		active   bool
		maxQueue int
		// panicEvery makes every nth request trap, so that faulted
		// instances are thrown away and queued requests start new ones.
		panicEvery int
		// wantAllServed: the queue holds every request that cannot run,
		// so none may be turned away.
		wantAllServed bool
	}{
		{name: "active/queue holds all", active: true, maxQueue: requests, wantAllServed: true},
		{name: "drained/queue holds all", active: false, maxQueue: requests, wantAllServed: true},
		{name: "active/short queue", active: true, maxQueue: 8},
		{name: "active/faults", active: true, maxQueue: requests, panicEvery: 50, wantAllServed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPool(t)
			tg := target("hammer", reactorWasm, func(s *registry.Spec) {
				s.MaxInstances = maxInst
				s.MaxQueue = tt.maxQueue
			})
			if tt.active {
				activate(t, p, tg)
			}
			mustCall(t, p, tg, "/") // compile before counting goroutines
			before := goruntime.NumGoroutine()

			stop := make(chan struct{})
			var sampled sync.WaitGroup
			var peak, samples atomic.Int64
			sampled.Go(func() {
				for {
					s := stats(p, tg)
					n := int64(s.Idle + s.Busy + s.Starting)
					if n > peak.Load() {
						peak.Store(n)
					}
					if s.Queued > tt.maxQueue {
						t.Errorf("Stats.Queued = %d, want <= max_queue %d", s.Queued, tt.maxQueue)
					}
					samples.Add(1)
					select {
					case <-stop:
						return
					default:
						goruntime.Gosched()
					}
				}
			})

			var (
				wg                    sync.WaitGroup
				served, busy, crashed atomic.Int64
				start                 = make(chan struct{})
				unexpectedMu          sync.Mutex
				unexpected            []error
			)
			for i := range requests {
				wg.Go(func() {
					<-start
					path := "/hello"
					if tt.panicEvery > 0 && i%tt.panicEvery == 0 {
						path = "/panic"
					}
					resp, _, err := call(context.Background(), p, tg, path)
					var berr *BusyError
					switch {
					case err == nil && resp.Status == http.StatusCreated && string(resp.Body) == "GET /hello ":
						served.Add(1)
					case errors.As(err, &berr) && !berr.Waited && berr.MaxInstances == maxInst && berr.MaxQueue == tt.maxQueue:
						busy.Add(1)
					case path == "/panic" && runtime.KindOf(err) == runtime.Crashed:
						crashed.Add(1)
					default:
						unexpectedMu.Lock()
						unexpected = append(unexpected, fmt.Errorf("Invoke(%s) = %v, %v", path, resp, err))
						unexpectedMu.Unlock()
					}
				})
			}
			close(start)
			wg.Wait()
			close(stop)
			sampled.Wait()

			for i, err := range unexpected {
				if i == 5 {
					t.Errorf("... and %d more", len(unexpected)-5)
					break
				}
				t.Errorf("%v, want a response or *BusyError{Waited: false}", err)
			}
			t.Logf("served %d, busy %d, crashed %d; %d Stats samples, peak %d instances", served.Load(), busy.Load(), crashed.Load(), samples.Load(), peak.Load())
			if got := peak.Load(); got > maxInst {
				t.Errorf("peak idle+busy+starting = %d, want <= max_instances %d", got, maxInst)
			}
			if tt.wantAllServed && busy.Load() > 0 {
				t.Errorf("%d requests turned away busy, want 0: the queue has room for all", busy.Load())
			}
			if got := served.Load() + busy.Load() + crashed.Load(); got != requests-int64(len(unexpected)) {
				t.Errorf("accounted for %d requests, want %d", got, requests)
			}
			s := stats(p, tg)
			if s.Busy != 0 || s.Starting != 0 || s.Queued != 0 || s.Idle > maxInst || (!tt.active && s.Idle != 0) {
				t.Errorf("Stats after the hammer = %+v, want nothing busy, starting or queued, and at most %d idle (0 if drained)", s, maxInst)
			}
			waitGoroutines(t, before)
		})
	}
}

// hold starts a request to /sleep on tg, which keeps its instance busy
// until the returned function is called; that function waits for the
// request to end.
func hold(p *Pool, tg Target) (release func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		call(ctx, p, tg, "/sleep")
	}()
	return func() {
		cancel()
		<-done
	}
}

func TestQueueFullIsBusyAtOnce(t *testing.T) {
	p := newPool(t)
	tg := target("queue", reactorWasm, func(s *registry.Spec) {
		s.MaxInstances = 4
		s.MaxQueue = 2
	})
	activate(t, p, tg)
	var holders []func()
	for range 4 {
		holders = append(holders, hold(p, tg))
	}
	waitStats(t, p, tg, Stats{Busy: 4})

	queued := make(chan error, 2)
	for range 2 {
		go func() {
			_, _, err := call(context.Background(), p, tg, "/count")
			queued <- err
		}()
	}
	waitStats(t, p, tg, Stats{Busy: 4, Queued: 2})

	_, _, err := call(context.Background(), p, tg, "/count")
	var berr *BusyError
	if !errors.As(err, &berr) || *berr != (BusyError{MaxInstances: 4, MaxQueue: 2}) {
		t.Fatalf("Invoke with 4 busy and 2 queued = %v, want *BusyError{MaxInstances: 4, MaxQueue: 2, Waited: false}", err)
	}
	if got, want := stats(p, tg), (Stats{Busy: 4, Queued: 2}); got != want {
		t.Errorf("Stats after the refusal = %+v, want %+v", got, want)
	}

	for _, release := range holders {
		release()
	}
	for range 2 {
		if err := <-queued; err != nil {
			t.Errorf("queued Invoke = %v, want a response once instances free up", err)
		}
	}
}

func TestQueueWaitEndsAtDeadline(t *testing.T) {
	p := newPool(t)
	tg := target("deadline", reactorWasm, func(s *registry.Spec) { s.MaxInstances = 1 })
	activate(t, p, tg)
	release := hold(p, tg)
	waitStats(t, p, tg, Stats{Busy: 1})

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, out, err := call(ctx, p, tg, "/count")
	var berr *BusyError
	if !errors.As(err, &berr) || !berr.Waited || berr.MaxInstances != 1 {
		t.Fatalf("Invoke with a 50ms deadline behind a busy instance = %v, want *BusyError{Waited: true, MaxInstances: 1}", err)
	}
	if out.Cold {
		t.Errorf("Outcome.Cold = true for a request that never ran")
	}
	if got, want := stats(p, tg), (Stats{Busy: 1}); got != want {
		t.Errorf("Stats after the wait gave up = %+v, want %+v (no waiter left queued)", got, want)
	}

	release()
	if body, _ := mustCall(t, p, tg, "/count"); body != "1" {
		t.Errorf("/count after the holder ended = %q, want \"1\" (a new instance)", body)
	}
}

func TestQueueIsFIFO(t *testing.T) {
	p := newPool(t)
	tg := target("fifo", reactorWasm, func(s *registry.Spec) { s.MaxInstances = 1 })
	activate(t, p, tg)
	release := hold(p, tg)
	waitStats(t, p, tg, Stats{Busy: 1})

	// The holder's instance faults when it is cancelled; the first waiter
	// starts a new one, which serves the others in turn: /count tells the
	// order.
	const waiters = 5
	got := make([]chan string, waiters)
	for i := range waiters {
		got[i] = make(chan string, 1)
		go func() {
			resp, _, err := call(context.Background(), p, tg, "/count")
			if err != nil {
				got[i] <- err.Error()
				return
			}
			got[i] <- string(resp.Body)
		}()
		waitStats(t, p, tg, Stats{Busy: 1, Queued: i + 1})
	}
	release()
	for i := range waiters {
		if body, want := <-got[i], strconv.Itoa(i+1); body != want {
			t.Errorf("waiter %d: /count = %q, want %q (served in arrival order)", i, body, want)
		}
	}
}

func TestFaultDiscardsInstance(t *testing.T) {
	tests := []struct {
		name    string
		path    string
		timeout time.Duration
		kind    runtime.Kind
	}{
		{"panic", "/panic", 5 * time.Second, runtime.Crashed},
		{"exit", "/exit", 5 * time.Second, runtime.Crashed},
		{"loop past deadline", "/loop", 200 * time.Millisecond, runtime.Timeout},
		{"response too big", "/big", 5 * time.Second, runtime.BadResponse},
	}
	p := newPool(t)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg := target(fmt.Sprintf("fault-%d", i), reactorWasm, nil)
			activate(t, p, tg)
			if body, out := mustCall(t, p, tg, "/count"); body != "1" || !out.Cold {
				t.Fatalf("first /count = %q, cold %v; want \"1\", cold", body, out.Cold)
			}

			ctx, cancel := context.WithTimeout(context.Background(), tt.timeout)
			defer cancel()
			_, _, err := call(ctx, p, tg, tt.path)
			var rerr *runtime.Error
			if !errors.As(err, &rerr) || rerr.Kind != tt.kind {
				t.Fatalf("Invoke(%s) = %v, want a *runtime.Error of kind %v", tt.path, err, tt.kind)
			}
			if tt.kind == runtime.Timeout && !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Invoke(%s) = %v, want it to match context.DeadlineExceeded", tt.path, err)
			}
			if got, want := stats(p, tg), (Stats{}); got != want {
				t.Errorf("Stats after the fault = %+v, want %+v (the instance thrown away)", got, want)
			}

			if body, out := mustCall(t, p, tg, "/count"); body != "1" || !out.Cold {
				t.Errorf("/count after the fault = %q, cold %v; want \"1\", cold (a new instance)", body, out.Cold)
			}
			if body, out := mustCall(t, p, tg, "/count"); body != "2" || out.Cold {
				t.Errorf("second /count after the fault = %q, cold %v; want \"2\", warm", body, out.Cold)
			}
		})
	}
}

func TestMaxRequestsRecycles(t *testing.T) {
	p := newPool(t)
	tg := target("recycle", reactorWasm, func(s *registry.Spec) { s.MaxRequests = 3 })
	activate(t, p, tg)
	want := []struct {
		body string
		cold bool
	}{{"1", true}, {"2", false}, {"3", false}, {"1", true}, {"2", false}, {"3", false}, {"1", true}}
	for i, w := range want {
		body, out := mustCall(t, p, tg, "/count")
		if body != w.body || out.Cold != w.cold {
			t.Errorf("request %d: /count = %q, cold %v; want %q, cold %v", i+1, body, out.Cold, w.body, w.cold)
		}
	}
	if got, want := stats(p, tg), (Stats{Idle: 1}); got != want {
		t.Errorf("Stats = %+v, want %+v (recycled instances closed)", got, want)
	}
}

// A prewarmed instance has served no request, so it must serve
// max_requests of them.
func TestMaxRequestsCountsOnlyRequestsOnPrewarmed(t *testing.T) {
	p := newPool(t)
	tg := target("prewarm-recycle", reactorWasm, func(s *registry.Spec) {
		s.MaxRequests = 3
		s.MinInstances = 1
		s.MaxInstances = 1
	})
	activate(t, p, tg)
	want := []struct {
		body string
		cold bool
	}{{"1", false}, {"2", false}, {"3", false}, {"1", true}}
	for i, w := range want {
		body, out := mustCall(t, p, tg, "/count")
		if body != w.body || out.Cold != w.cold {
			t.Errorf("request %d: /count = %q, cold %v; want %q, cold %v", i+1, body, out.Cold, w.body, w.cold)
		}
	}
}

func TestSyncPrewarmsAndDrains(t *testing.T) {
	p := newPool(t)
	tg := target("sync", reactorWasm, func(s *registry.Spec) { s.MinInstances = 2 })
	p.Sync([]Target{tg})
	waitStats(t, p, tg, Stats{Idle: 2})

	// One instance is busy with a slow request when the version is drained.
	slow := make(chan error, 1)
	go func() {
		resp, out, err := call(context.Background(), p, tg, "/slow")
		if err == nil && (string(resp.Body) != "slow done" || out.Cold) {
			err = fmt.Errorf("body %q, cold %v; want \"slow done\" on a warm instance", resp.Body, out.Cold)
		}
		slow <- err
	}()
	waitStats(t, p, tg, Stats{Idle: 1, Busy: 1})

	p.Sync(nil)
	if got, want := stats(p, tg), (Stats{Busy: 1}); got != want {
		t.Errorf("Stats right after Sync(nil) = %+v, want %+v (idle stopped at once, busy left running)", got, want)
	}
	if err := <-slow; err != nil {
		t.Errorf("slow request on a drained version: %v", err)
	}
	if got, want := stats(p, tg), (Stats{}); got != want {
		t.Errorf("Stats after the busy request ended = %+v, want %+v (its instance closed)", got, want)
	}

	for i := range 2 {
		body, out := mustCall(t, p, tg, "/count")
		if body != "1" || !out.Cold {
			t.Errorf("request %d to the drained version: /count = %q, cold %v; want \"1\", cold", i+1, body, out.Cold)
		}
		if got, want := stats(p, tg), (Stats{}); got != want {
			t.Errorf("Stats after request %d to the drained version = %+v, want %+v", i+1, got, want)
		}
	}

	// Activated again, it keeps its minimum once more.
	p.Sync([]Target{tg})
	waitStats(t, p, tg, Stats{Idle: 2})
}

// Sync makes active exactly the versions of its last call, even when an
// earlier call's background work is still running.
func TestSyncLastCallWins(t *testing.T) {
	p := newPool(t)
	store := &gatedArtifacts{artifacts: p.artifacts.(artifacts), called: make(chan struct{}), release: make(chan struct{})}
	p.artifacts = store
	tg := target("flip", reactorWasm, func(s *registry.Spec) { s.MinInstances = 1 })
	p.Sync([]Target{tg})
	<-store.called // the first Sync is fetching the artifact in the background
	p.Sync(nil)
	close(store.release)

	// Once the module is compiled, the first Sync's goroutine would start
	// min_instances within moments: watch for it for a while.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if s := stats(p, tg); s.Idle+s.Busy+s.Starting > 0 {
			t.Fatalf("Stats after Sync([t]) then Sync(nil) = %+v, want no instance: the last Sync drained the version", s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCommandModuleStartsPerRequest(t *testing.T) {
	p := newPool(t)
	tg := target("cgi", guestWasm, func(s *registry.Spec) { s.MaxInstances = 2 })
	activate(t, p, tg)
	for i := range 3 {
		resp, out, err := call(context.Background(), p, tg, "/hi")
		if err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
		if resp.Status != http.StatusCreated || string(resp.Body) != "GET /hi " {
			t.Errorf("request %d: response %d %q, want 201 \"GET /hi \"", i+1, resp.Status, resp.Body)
		}
		if !out.Cold {
			t.Errorf("request %d: Outcome.Cold = false, want true (a command module starts per request)", i+1)
		}
	}
	if got, want := stats(p, tg), (Stats{}); got != want {
		t.Errorf("Stats = %+v, want %+v (a command module keeps nothing idle)", got, want)
	}

	// Concurrency is still bounded by max_instances.
	stop := make(chan struct{})
	var sampled sync.WaitGroup
	var peak atomic.Int64
	sampled.Go(func() {
		for {
			s := stats(p, tg)
			if n := int64(s.Idle + s.Busy + s.Starting); n > peak.Load() {
				peak.Store(n)
			}
			select {
			case <-stop:
				return
			default:
				goruntime.Gosched()
			}
		}
	})
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			_, out, err := call(context.Background(), p, tg, "/hi")
			if err != nil {
				t.Errorf("concurrent request %d: %v", i, err)
			} else if !out.Cold {
				t.Errorf("concurrent request %d: Outcome.Cold = false, want true", i)
			}
		})
	}
	wg.Wait()
	close(stop)
	sampled.Wait()
	if got := peak.Load(); got > 2 {
		t.Errorf("peak busy+starting = %d, want <= max_instances 2", got)
	}
	if got, want := stats(p, tg), (Stats{}); got != want {
		t.Errorf("Stats after the burst = %+v, want %+v", got, want)
	}
}

// hooked is a sandbox that calls its hooks, each optional: prepare before
// a module is prepared, closeModule when a prepared module is closed,
// started after an instance started, and closeInstance before an instance
// is closed.
type hooked struct {
	runtime.Sandbox
	prepare, closeModule, started, closeInstance func()
}

func runHook(f func()) {
	if f != nil {
		f()
	}
}

func (s hooked) Prepare(ctx context.Context, digest string, artifact []byte) (runtime.Prepared, error) {
	runHook(s.prepare)
	p, err := s.Sandbox.Prepare(ctx, digest, artifact)
	if err != nil {
		return nil, err
	}
	return hookedPrepared{p, s}, nil
}

type hookedPrepared struct {
	runtime.Prepared
	s hooked
}

func (p hookedPrepared) Start(ctx context.Context, cfg runtime.Config) (runtime.Instance, error) {
	in, err := p.Prepared.Start(ctx, cfg)
	if err != nil {
		return nil, err
	}
	runHook(p.s.started)
	return hookedInstance{in, p.s}, nil
}

func (p hookedPrepared) Close(ctx context.Context) error {
	runHook(p.s.closeModule)
	return p.Prepared.Close(ctx)
}

type hookedInstance struct {
	runtime.Instance
	s hooked
}

func (in hookedInstance) Close(ctx context.Context) error {
	runHook(in.s.closeInstance)
	return in.Instance.Close(ctx)
}

// newGatedPool returns a pool of the reactor fixture in which closing an
// instance waits until gate is closed, as a process sandbox's teardown
// takes milliseconds.
func newGatedPool(t *testing.T) (*Pool, chan struct{}) {
	t.Helper()
	rt, err := wasm.New(context.Background(), wasm.Config{CacheDir: cacheDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close(context.Background()) })
	gate := make(chan struct{})
	return New(Deps{Sandboxes: map[string]runtime.Sandbox{registry.RuntimeWasm: hooked{Sandbox: rt, closeInstance: func() { <-gate }}}, Artifacts: artifacts{registry.Digest(reactorWasm): reactorWasm}}), gate
}

// waitsForTheClose runs request, which must still wait 200 ms later (for
// an instance whose close gate holds up), then opens gate and returns
// request's error.
func waitsForTheClose(t *testing.T, gate chan struct{}, request func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- request() }()
	select {
	case err := <-done:
		close(gate)
		t.Fatalf("a request ran (%v) while an instance was still closing, past max_instances 1", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(gate)
	return <-done
}

// TestClosingInstanceHoldsItsSlot: an instance still closing counts
// against max_instances (a process function's program still holds its
// memory); the next request starts one once it is closed.
func TestClosingInstanceHoldsItsSlot(t *testing.T) {
	ctx := context.Background()
	p, gate := newGatedPool(t)
	defer p.Close()
	tg := target("one", reactorWasm, func(s *registry.Spec) { s.MaxRequests, s.MaxInstances = 1, 1 })
	activate(t, p, tg)
	if _, _, err := call(ctx, p, tg, "/count"); err != nil {
		t.Fatal(err)
	}
	err := waitsForTheClose(t, gate, func() error {
		_, out, err := call(ctx, p, tg, "/count")
		if err == nil && !out.Cold {
			err = errors.New("the second request was not a cold start")
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestStoppedIdleInstanceHoldsItsSlot: an idle instance the pool stops (a
// drain, or its idle_ttl) counts against max_instances until it has
// closed, as a discarded one does; it did not, and a request started
// another beside it.
func TestStoppedIdleInstanceHoldsItsSlot(t *testing.T) {
	ctx := context.Background()
	p, gate := newGatedPool(t)
	defer p.Close()
	tg := target("drained", reactorWasm, func(s *registry.Spec) { s.MaxInstances = 1 })
	activate(t, p, tg)
	if _, _, err := call(ctx, p, tg, "/count"); err != nil {
		t.Fatal(err)
	}
	p.Sync(nil) // drained: its idle instance stops
	waitFor(t, "the idle instance to be stopped", func() bool {
		p.mu.Lock()
		vp := p.versions[tg.key()]
		p.mu.Unlock()
		vp.mu.Lock()
		defer vp.mu.Unlock()
		return len(vp.idle) == 0
	})
	err := waitsForTheClose(t, gate, func() error {
		_, _, err := call(ctx, p, tg, "/count")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSpentInstanceClosesAfterTheResponse: a request that spends its
// instance (max_requests) gets its response without waiting for the
// instance to close; Close waits for it.
func TestSpentInstanceClosesAfterTheResponse(t *testing.T) {
	ctx := context.Background()
	p, gate := newGatedPool(t)
	tg := target("spent", reactorWasm, func(s *registry.Spec) { s.MaxRequests = 1 })
	activate(t, p, tg)
	answered := make(chan error, 1)
	go func() {
		_, _, err := call(ctx, p, tg, "/count")
		answered <- err
	}()
	select {
	case err := <-answered:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		close(gate)
		t.Fatal("the request waited for its spent instance to close")
	}
	closed := make(chan struct{})
	go func() {
		p.Close()
		close(closed)
	}()
	select {
	case <-closed:
		t.Error("Close returned while the spent instance was still closing")
	case <-time.After(50 * time.Millisecond):
	}
	close(gate)
	<-closed
}

func TestClose(t *testing.T) {
	p := newPool(t)
	warm := target("warm", reactorWasm, func(s *registry.Spec) { s.MinInstances = 2 })
	cgi := target("cgi", guestWasm, nil)
	activate(t, p, warm, cgi)
	mustCall(t, p, warm, "/count")
	mustCall(t, p, cgi, "/")

	p.Close()
	for _, tg := range []Target{warm, cgi} {
		if got := p.Stats(tg.Tenant, tg.Function); len(got) != 0 {
			t.Errorf("Stats(%s) after Close = %v, want none", tg.Function, got)
		}
	}
	p.Close() // twice is harmless

	p.mu.Lock()
	modules := len(p.modules)
	p.mu.Unlock()
	if modules != 0 {
		t.Errorf("%d compiled modules after Close, want 0", modules)
	}
}

// flakySecrets is a secret store whose first lookup waits for gate and
// then fails, as a store that is briefly unavailable does.
type flakySecrets struct {
	calls atomic.Int64
	gate  chan struct{}
}

func (s *flakySecrets) Resolve(string, []string) (map[string]string, error) {
	if s.calls.Add(1) == 1 {
		<-s.gate
		return nil, errors.New("secret store unavailable")
	}
	return map[string]string{"TOKEN": "t0ken"}, nil
}

// fixedSecrets resolves every secret to the same values.
type fixedSecrets map[string]string

func (s fixedSecrets) Resolve(string, []string) (map[string]string, error) { return s, nil }

// A function with secrets keeps its warm instance: the first request finds
// it, and the scaling loop does not start it again and again.
func TestPrewarmWithSecrets(t *testing.T) {
	p := newPool(t, fixedSecrets{"TOKEN": "t0ken"})
	tg := target("secretive", reactorWasm, func(s *registry.Spec) { s.Secrets = []string{"TOKEN"}; s.MinInstances = 1 })
	activate(t, p, tg)
	if _, out := mustCall(t, p, tg, "/count"); out.Cold {
		t.Errorf("the first request was a cold start: the warm instance started at activation was thrown away")
	}
}

// A prewarm that fails gives its slot back to a request waiting for one.
func TestFailedPrewarmWakesWaiter(t *testing.T) {
	secrets := &flakySecrets{gate: make(chan struct{})}
	p := newPool(t, secrets)
	tg := target("prewarm-fails", reactorWasm, func(s *registry.Spec) {
		s.MinInstances = 1
		s.MaxInstances = 1
		s.Secrets = []string{"TOKEN"}
	})
	p.Sync([]Target{tg})
	waitFor(t, "the prewarm to look up secrets", func() bool { return secrets.calls.Load() == 1 })
	waitStats(t, p, tg, Stats{Starting: 1})

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, out, err := call(ctx, p, tg, "/count")
		if err == nil && !out.Cold {
			err = errors.New("Outcome.Cold = false, want true")
		}
		done <- err
	}()
	waitStats(t, p, tg, Stats{Starting: 1, Queued: 1})

	close(secrets.gate) // the prewarm fails
	if err := <-done; err != nil {
		t.Errorf("Invoke queued behind a failed prewarm = %v, want it to start an instance", err)
	}
}

// gatedArtifacts is an artifact store whose Get signals called and then
// waits for release.
type gatedArtifacts struct {
	artifacts
	called, release chan struct{}
}

func (a *gatedArtifacts) Get(ctx context.Context, digest string) ([]byte, error) {
	a.called <- struct{}{}
	select {
	case <-a.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return a.artifacts.Get(ctx, digest)
}

// Close stops everything, including what an earlier Sync still prepares
// in the background.
func TestCloseStopsBackgroundSync(t *testing.T) {
	p := newPool(t)
	store := &gatedArtifacts{artifacts: p.artifacts.(artifacts), called: make(chan struct{}), release: make(chan struct{})}
	p.artifacts = store
	tg := target("late", reactorWasm, func(s *registry.Spec) { s.MinInstances = 1 })
	p.Sync([]Target{tg})
	<-store.called // Sync is fetching the artifact in the background
	p.Close()
	close(store.release)

	// Once the module is compiled, Sync's goroutine would add the version
	// within moments: watch for it for a while.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if got := p.Stats(tg.Tenant, tg.Function); len(got) != 0 {
			t.Fatalf("Stats after Sync then Close = %v, want none", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestUnavailableRuntime: a node without a runtime refuses its functions
// with the reason, and an unknown runtime by name.
func TestUnavailableRuntime(t *testing.T) {
	p := New(Deps{Sandboxes: map[string]runtime.Sandbox{}, Unavailable: map[string]string{"process": "the server does not run as root"}})
	defer p.Close()
	for kind, want := range map[string]string{
		"process": "runtime process is not available on this node: the server does not run as root",
		"vm":      `runtime "vm" is unknown`,
	} {
		spec := registry.Spec{Name: "f", Runtime: kind}.WithDefaults()
		err := p.Check(context.Background(), spec, "sha256:x", []byte("x"))
		if runtime.KindOf(err) != runtime.BadArtifact || !strings.Contains(err.Error(), want) {
			t.Errorf("Check on runtime %s = %v, want a bad artifact error saying %q", kind, err, want)
		}
	}
}

// TestCompileOutlastingTheTimeout: on a node that has not compiled a
// function's code, its first request compiles it; when that takes longer
// than the function's timeout, the request gets a PreparingError (the
// gateway answers 503 with Retry-After), the compile goes on, and a later
// request is served.
func TestCompileOutlastingTheTimeout(t *testing.T) {
	ctx := context.Background()
	rt, err := wasm.New(ctx, wasm.Config{}) // no compilation cache: a compile takes a second or more
	if err != nil {
		t.Fatalf("wasm.New: %v", err)
	}
	p := New(Deps{Sandboxes: map[string]runtime.Sandbox{registry.RuntimeWasm: rt}, Artifacts: artifacts{
		registry.Digest(reactorWasm): reactorWasm,
	}})
	t.Cleanup(func() {
		settle(t, p)
		p.Close()
		rt.Close(ctx)
	})
	// Compiling the fixture takes a second or more here.
	tg := target("quick", reactorWasm, func(s *registry.Spec) { s.Timeout = registry.Duration(300 * time.Millisecond) })
	_, _, err = call(ctx, p, tg, "/hello")
	var perr *PreparingError
	if !errors.As(err, &perr) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "still being compiled") {
		t.Fatalf("first request, compile outlasting its 300ms timeout: %v, want a PreparingError", err)
	}
	settle(t, p) // the compile went on
	resp, out, err := call(ctx, p, tg, "/hello")
	if err != nil || !strings.HasPrefix(string(resp.Body), "GET /hello") {
		t.Fatalf("request after the compile: %v, %v; want it served", resp, err)
	}
	if !out.Cold {
		t.Errorf("the first served request was not a cold start")
	}
}

// TestArtifactOfTwoRuntimes: the same artifact deployed to another runtime
// (by mistake, or by another tenant) is refused there, and its module for
// the first runs on (the refusal was kept in the module both shared, and
// every later deploy or pool of the artifact failed with it).
func TestArtifactOfTwoRuntimes(t *testing.T) {
	p := newPool(t)
	ctx := t.Context()
	d := registry.Digest(reactorWasm)
	wasmSpec := registry.Spec{Name: "a", MemoryMB: 64}.WithDefaults()
	processSpec := registry.Spec{Name: "b", MemoryMB: 64, Runtime: registry.RuntimeProcess, Command: []string{"x"}}.WithDefaults()
	if err := p.Check(ctx, wasmSpec, d, reactorWasm); err != nil {
		t.Fatalf("Check as wasm: %v", err)
	}
	if err := p.Check(ctx, processSpec, d, reactorWasm); err == nil {
		t.Fatalf("Check as a process function: nil error, want the runtime refused")
	}
	if err := p.Check(ctx, wasmSpec, d, reactorWasm); err != nil {
		t.Errorf("Check as wasm after the process deploy: %v", err)
	}
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, _, err := call(c, p, target("victim", reactorWasm, nil), "/count"); err != nil {
		t.Errorf("Invoke of a wasm function of the artifact: %v", err)
	}
}

// TestSnapStart: an instance after the first of a version starts from the
// first's snapshot (what its start made, a random token, is the same),
// unless the spec says snap_start: false.
func TestSnapStart(t *testing.T) {
	p := newPool(t)
	off := false
	for _, c := range []struct {
		name      string
		snapStart *bool
		same      bool
	}{{"snap", nil, true}, {"full", &off, false}} {
		tg := target(c.name, reactorWasm, func(s *registry.Spec) { s.MaxRequests, s.SnapStart = 1, c.snapStart })
		activate(t, p, tg)
		first, out := mustCall(t, p, tg, "/token")
		second, out2 := mustCall(t, p, tg, "/token")
		if !out.Cold || !out2.Cold {
			t.Fatalf("%s: the instances were not new ones (max_requests: 1)", c.name)
		}
		if (first == second) != c.same {
			t.Errorf("%s: tokens %q and %q, want them the same: %v", c.name, first, second, c.same)
		}
	}
}

// TestCloseWaitsForPreparations: Close returns only once the compiles it
// found running are done, those a deploy waits for included, and closes
// what they made: the runtime may be closed right after (wazero panics
// when a compile outlives it).
func TestCloseWaitsForPreparations(t *testing.T) {
	rt, err := wasm.New(context.Background(), wasm.Config{CacheDir: cacheDir})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close(context.Background())
	entered, gate, closed := make(chan struct{}), make(chan struct{}), &atomic.Int32{}
	sb := hooked{Sandbox: rt,
		prepare:     func() { close(entered); <-gate },
		closeModule: func() { closed.Add(1) },
	}
	p := New(Deps{Sandboxes: map[string]runtime.Sandbox{registry.RuntimeWasm: sb}, Artifacts: artifacts{registry.Digest(reactorWasm): reactorWasm}})
	checked := make(chan error, 1)
	go func() {
		checked <- p.Check(context.Background(), target("f", reactorWasm, nil).Version.Spec, registry.Digest(reactorWasm), reactorWasm)
	}()
	<-entered
	stopped := make(chan struct{})
	go func() { p.Close(); close(stopped) }()
	select {
	case <-stopped:
		close(gate)
		t.Fatal("Close returned while a module was still being prepared")
	case <-time.After(200 * time.Millisecond):
	}
	close(gate)
	<-stopped
	<-checked
	if n := closed.Load(); n != 1 {
		t.Errorf("the module prepared during Close was closed %d times, want 1", n)
	}
}

// TestDeployedVersionStartsAhead: a WebAssembly version that a deploy
// makes active starts an instance at once and closes it, so that its first
// request starts from the snapshot that start left; the versions a node
// finds active at its start, and those that stay active, do not, and a
// version with min_instances starts only those.
func TestDeployedVersionStartsAhead(t *testing.T) {
	rt, err := wasm.New(context.Background(), wasm.Config{CacheDir: cacheDir})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close(context.Background())
	var starts, closes atomic.Int32
	sb := hooked{Sandbox: rt, started: func() { starts.Add(1) }, closeInstance: func() { closes.Add(1) }}
	p := New(Deps{Sandboxes: map[string]runtime.Sandbox{registry.RuntimeWasm: sb}, Artifacts: artifacts{registry.Digest(reactorWasm): reactorWasm}})
	defer func() { settle(t, p); p.Close() }()
	found := target("found", reactorWasm, nil)
	activate(t, p, found) // what the node finds at its start
	if n := starts.Load(); n != 0 {
		t.Fatalf("%d instances started for a version found at the start, want 0", n)
	}

	deployed := target("deployed", reactorWasm, nil)
	activate(t, p, found, deployed)
	if s, c := starts.Load(), closes.Load(); s != 1 || c != 1 {
		t.Fatalf("after a deploy: %d starts and %d closes, want 1 and 1 (an instance started ahead and closed)", s, c)
	}
	if got := stats(p, deployed); got != (Stats{}) {
		t.Errorf("Stats after the deploy = %+v, want none kept", got)
	}
	if body, out := mustCall(t, p, deployed, "/count"); body != "1" || !out.Cold {
		t.Errorf("first /count = %q, cold %v; want \"1\", cold (from the snapshot)", body, out.Cold)
	}

	withMin := target("min", reactorWasm, func(s *registry.Spec) { s.MinInstances = 1 })
	activate(t, p, found, deployed, withMin)
	settle(t, p)
	if s := starts.Load(); s != 3 {
		t.Errorf("%d starts after deploying a version with min_instances 1, want 3: its one warm instance, no other", s)
	}
}
