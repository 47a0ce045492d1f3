package pool

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gust-faas/gust/internal/registry"
	"github.com/gust-faas/gust/internal/runtime"
	"github.com/gust-faas/gust/internal/runtime/wasm"
)

var decideNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func ago(d time.Duration) time.Time { return decideNow.Add(-d) }

// idleFor returns n idle instances last used d ago.
func idleFor(n int, d time.Duration) []time.Time {
	out := make([]time.Time, n)
	for i := range out {
		out[i] = ago(d)
	}
	return out
}

var decideTests = []struct {
	name   string
	policy Policy
	state  State
	want   Decision
}{
	// An inactive version keeps nothing idle, whatever its minimum.
	{"inactive stops every idle", Policy{Min: 2, Max: 4, IdleTTL: time.Hour},
		State{Idle: []time.Time{ago(time.Hour), ago(0)}, Busy: 1}, Decision{StopIdle: 2}},
	{"inactive starts none below min", Policy{Min: 3, Max: 4, IdleTTL: time.Hour},
		State{}, Decision{}},
	{"inactive leaves busy and starting", Policy{Min: 1, Max: 4, IdleTTL: time.Hour},
		State{Busy: 2, Starting: 1, Waiting: 3}, Decision{}},

	// The minimum.
	{"nothing below min starts min", Policy{Active: true, Min: 3, Max: 5, IdleTTL: time.Minute},
		State{}, Decision{Start: 3}},
	{"below min starts the difference", Policy{Active: true, Min: 3, Max: 5, IdleTTL: time.Minute},
		State{Idle: []time.Time{ago(0)}}, Decision{Start: 2}},
	{"busy and starting count toward min", Policy{Active: true, Min: 4, Max: 5, IdleTTL: time.Minute},
		State{Idle: []time.Time{ago(0)}, Busy: 1, Starting: 1}, Decision{Start: 1}},
	{"waiting requests do not count toward min", Policy{Active: true, Min: 2, Max: 5, IdleTTL: time.Minute},
		State{Waiting: 7}, Decision{Start: 2}},
	{"at min", Policy{Active: true, Min: 2, Max: 5, IdleTTL: time.Minute},
		State{Idle: idleFor(2, 0)}, Decision{}},
	{"above min, none expired", Policy{Active: true, Min: 1, Max: 5, IdleTTL: time.Minute},
		State{Idle: idleFor(3, 59*time.Second), Busy: 1}, Decision{}},
	{"min above max is capped at max", Policy{Active: true, Min: 10, Max: 3, IdleTTL: time.Minute},
		State{Idle: []time.Time{ago(0)}}, Decision{Start: 2}},
	{"min above max, at max, keeps all", Policy{Active: true, Min: 10, Max: 3, IdleTTL: time.Minute},
		State{Idle: idleFor(3, time.Hour)}, Decision{}},
	{"above max (never started by Decide) trims only expired", Policy{Active: true, Min: 1, Max: 2, IdleTTL: time.Minute},
		State{Idle: []time.Time{ago(time.Hour), ago(0), ago(0)}, Busy: 2}, Decision{StopIdle: 1}},

	// Idle TTL.
	{"only expired stop", Policy{Active: true, Max: 5, IdleTTL: time.Minute},
		State{Idle: []time.Time{ago(3 * time.Minute), ago(2 * time.Minute), ago(30 * time.Second), ago(0)}}, Decision{StopIdle: 2}},
	{"idle exactly ttl is expired", Policy{Active: true, Max: 5, IdleTTL: time.Minute},
		State{Idle: idleFor(1, time.Minute)}, Decision{StopIdle: 1}},
	{"idle just under ttl is not", Policy{Active: true, Max: 5, IdleTTL: time.Minute},
		State{Idle: idleFor(1, time.Minute-time.Nanosecond)}, Decision{}},
	{"expired never go below min", Policy{Active: true, Min: 2, Max: 5, IdleTTL: time.Minute},
		State{Idle: idleFor(3, time.Hour)}, Decision{StopIdle: 1}},
	{"busy count toward min so expired idle stop", Policy{Active: true, Min: 2, Max: 5, IdleTTL: time.Minute},
		State{Idle: idleFor(2, time.Hour), Busy: 2}, Decision{StopIdle: 2}},
	{"starting count toward min so expired idle stop", Policy{Active: true, Min: 2, Max: 5, IdleTTL: time.Minute},
		State{Idle: idleFor(2, time.Hour), Starting: 1}, Decision{StopIdle: 1}},
	{"all expired, min zero: scale to zero", Policy{Active: true, Max: 5, IdleTTL: time.Minute},
		State{Idle: idleFor(4, time.Hour)}, Decision{StopIdle: 4}},
	{"last used in the future is not expired", Policy{Active: true, Max: 5, IdleTTL: time.Minute},
		State{Idle: []time.Time{decideNow.Add(time.Hour)}}, Decision{}},

	// Zero TTL: every idle instance is expired at once.
	{"zero ttl stops all idle above min", Policy{Active: true, Min: 1, Max: 5},
		State{Idle: idleFor(3, 0)}, Decision{StopIdle: 2}},
	{"zero ttl keeps min", Policy{Active: true, Min: 2, Max: 5},
		State{Idle: idleFor(2, 0)}, Decision{}},
	{"zero ttl, min zero", Policy{Active: true, Max: 5},
		State{Idle: idleFor(1, 0), Busy: 1}, Decision{StopIdle: 1}},
	{"zero policy, empty state", Policy{Active: true}, State{}, Decision{}},
}

func TestDecide(t *testing.T) {
	for _, tt := range decideTests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Decide(tt.policy, tt.state, decideNow); got != tt.want {
				t.Errorf("Decide(%+v, %+v) = %+v, want %+v", tt.policy, tt.state, got, tt.want)
			}
		})
	}
}

// FuzzDecide checks the invariants of every decision: nothing starts in an
// inactive version, starts only fill up to min(Min, Max), stops only take
// expired idle instances and never go below that floor.
func FuzzDecide(f *testing.F) {
	for _, tt := range decideTests {
		var ages []byte
		for _, last := range tt.state.Idle {
			ages = append(ages, byte(min(255, max(0, decideNow.Sub(last)/time.Second))))
		}
		f.Add(tt.policy.Active, uint8(tt.policy.Min), uint8(tt.policy.Max), uint8(min(255, tt.policy.IdleTTL/time.Second)),
			uint8(tt.state.Busy), uint8(tt.state.Starting), ages)
	}
	f.Fuzz(func(t *testing.T, active bool, minN, maxN, ttl, busy, starting uint8, ages []byte) {
		p := Policy{Active: active, Min: int(minN), Max: int(maxN), IdleTTL: time.Duration(ttl) * time.Second}
		s := State{Busy: int(busy), Starting: int(starting)}
		expired := 0
		for i := len(ages) - 1; i >= 0; i-- { // oldest first
			s.Idle = append(s.Idle, ago(time.Duration(ages[i])*time.Second))
			if time.Duration(ages[i])*time.Second >= p.IdleTTL {
				expired++
			}
		}
		d := Decide(p, s, decideNow)
		floor := min(p.Min, p.Max)
		switch {
		case d.Start < 0 || d.StopIdle < 0:
			t.Fatalf("Decide(%+v, %+v) = %+v, want no negative count", p, s, d)
		case d.Start > 0 && d.StopIdle > 0:
			t.Fatalf("Decide(%+v, %+v) = %+v, want starts or stops, not both", p, s, d)
		case !active && (d.Start != 0 || d.StopIdle != len(s.Idle)):
			t.Fatalf("inactive: Decide(%+v, %+v) = %+v, want {Start: 0, StopIdle: %d}", p, s, d, len(s.Idle))
		case active && d.Start > 0 && s.total()+d.Start != floor:
			t.Fatalf("Decide(%+v, %+v) = %+v, want starts to fill up to exactly %d", p, s, d, floor)
		case active && d.StopIdle > expired:
			t.Fatalf("Decide(%+v, %+v) = %+v, want at most the %d expired stopped", p, s, d, expired)
		case active && d.StopIdle > 0 && s.total()-d.StopIdle < floor:
			t.Fatalf("Decide(%+v, %+v) = %+v, want never below %d", p, s, d, floor)
		}
	})
}

// clock is a settable clock for Pool.now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// burst runs n concurrent requests to path on tg and returns the outcomes.
func burst(t testing.TB, p *Pool, tg Target, path string, n int) []Outcome {
	t.Helper()
	outs := make([]Outcome, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { _, outs[i], errs[i] = call(context.Background(), p, tg, path) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("burst request %d to %s: %v", i, path, err)
		}
	}
	return outs
}

// overlap has n requests hold an instance of tg at once, then end, as n
// overlapping requests do: each takes an idle instance or starts one.
//
// Requests to the reactor cannot be made to overlap inside a synctest
// bubble: a guest that sleeps reads the real clock (wazero's nanotime is
// runtime.nanotime) and so spins through fake time until its deadline, and
// the fast paths finish before the next request arrives. So this takes the
// instances through the pool's own acquire and release.
func overlap(t testing.TB, p *Pool, tg Target, n int) {
	t.Helper()
	vp, err := p.version(context.Background(), tg)
	if err != nil {
		t.Fatal(err)
	}
	var held []*instance
	for range n {
		in, _, err := vp.acquire(context.Background(), nil, "")
		if err != nil {
			t.Fatalf("acquire: %v", err)
		}
		held = append(held, in)
	}
	for _, in := range held {
		vp.release(in, false)
	}
}

// The scaling step with an injected clock: expired instances stop, oldest
// first, down to the minimum.
func TestScaleStopsOldestExpired(t *testing.T) {
	p := newPool(t)
	clk := &clock{now: decideNow}
	p.now = clk.Now
	tg := target("ttl", reactorWasm, func(s *registry.Spec) {
		s.MinInstances = 1
		s.MaxInstances = 3
		s.IdleTTL = registry.Duration(10 * time.Second)
	})
	activate(t, p, tg)
	// Three /slow requests at once need three instances; all go idle at
	// the same clock reading.
	burst(t, p, tg, "/slow", 3)
	waitStats(t, p, tg, Stats{Idle: 3})

	// Five seconds on, one more request runs on the most recently used
	// instance, which has served two requests now.
	clk.Advance(5 * time.Second)
	if _, out := mustCall(t, p, tg, "/"); out.Cold {
		t.Fatalf("request on 3 idle instances was cold")
	}

	clk.Advance(5*time.Second - time.Nanosecond)
	p.scaleAll()
	if got, want := stats(p, tg), (Stats{Idle: 3}); got != want {
		t.Fatalf("Stats just before idle_ttl = %+v, want %+v", got, want)
	}
	clk.Advance(time.Nanosecond)
	p.scaleAll()
	if got, want := stats(p, tg), (Stats{Idle: 1}); got != want {
		t.Fatalf("Stats at idle_ttl = %+v, want %+v (the two expired stopped)", got, want)
	}
	if body, _ := mustCall(t, p, tg, "/count"); body != "3" {
		t.Errorf("/count on the instance left = %q, want \"3\": the most recently used one stays", body)
	}

	// Long expired, the last one stays for min_instances.
	clk.Advance(time.Hour)
	p.scaleAll()
	if got, want := stats(p, tg), (Stats{Idle: 1}); got != want {
		t.Errorf("Stats an hour on = %+v, want %+v (min_instances)", got, want)
	}
}

// A version's pool capped at max_instances even if min_instances is larger.
func TestMinAboveMaxIsCapped(t *testing.T) {
	p := newPool(t)
	tg := target("capped", reactorWasm, func(s *registry.Spec) {
		s.MinInstances = 5
		s.MaxInstances = 2
	})
	activate(t, p, tg)
	p.scaleAll()
	settle(t, p)
	if got, want := stats(p, tg), (Stats{Idle: 2}); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
}

// A drained version's pool goes once empty, not while a request runs on it.
func TestScaleRemovesEmptyDrainedPools(t *testing.T) {
	p := newPool(t)
	tg := target("drained", reactorWasm, func(s *registry.Spec) { s.MinInstances = 1 })
	activate(t, p, tg)
	slow := make(chan error, 1)
	go func() {
		_, _, err := call(context.Background(), p, tg, "/slow")
		slow <- err
	}()
	waitStats(t, p, tg, Stats{Busy: 1})
	p.Sync(nil)
	p.scaleAll()
	if got, want := p.Stats(tg.Tenant, tg.Function), map[int]Stats{1: {Busy: 1}}; len(got) != 1 || got[1] != want[1] {
		t.Errorf("Stats while the drained version is busy = %v, want %v", got, want)
	}
	if err := <-slow; err != nil {
		t.Fatalf("slow request: %v", err)
	}
	// Once its instance, released by the request, has closed.
	waitFor(t, "the drained version's pool to go", func() bool {
		p.scaleAll()
		return len(p.Stats(tg.Tenant, tg.Function)) == 0
	})
	if body, out := mustCall(t, p, tg, "/count"); body != "1" || !out.Cold {
		t.Errorf("/count on the removed version = %q, cold %v; want \"1\", cold", body, out.Cold)
	}
}

// The scaling decision and the state it acts on must not drift apart: a
// request that starts an instance between them must not take the pool past
// max_instances.
func TestScaleRespectsMaxUnderConcurrentStarts(t *testing.T) {
	p := newPool(t)
	tg := target("overshoot", reactorWasm, func(s *registry.Spec) {
		s.MinInstances = 2
		s.MaxInstances = 2
	})
	vp, err := p.version(context.Background(), tg)
	if err != nil {
		t.Fatal(err)
	}
	// scaleOne, step by step, with two requests arriving in between.
	policy, state := vp.snapshot()
	release1, release2 := hold(p, tg), hold(p, tg)
	defer release1()
	defer release2()
	waitStats(t, p, tg, Stats{Busy: 2})
	vp.apply(Decide(policy, state, p.now()))
	settle(t, p)
	if s := stats(p, tg); s.Idle+s.Busy+s.Starting > 2 {
		t.Errorf("Stats = %+v: %d instances, want <= max_instances 2", s, s.Idle+s.Busy+s.Starting)
	}
}

// The scaling loop in a synctest bubble: fake time runs Pool.Run's ticker
// and the pool's clock.
//
// The guests' own clocks are real (wazero reads runtime.nanotime), so a
// guest that sleeps would spin through fake time: the loop is driven with
// requests that do not sleep (see overlap).
func TestScalingLoop(t *testing.T) {
	tests := []struct {
		name string
		min  int
	}{
		{"down to min", 1},
		{"down to zero and back", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := context.Background()
				rt, err := wasm.New(ctx, wasm.Config{CacheDir: cacheDir})
				if err != nil {
					t.Fatal(err)
				}
				defer rt.Close(ctx)
				p := New(Deps{Sandboxes: map[string]runtime.Sandbox{registry.RuntimeWasm: rt}, Artifacts: artifacts{registry.Digest(reactorWasm): reactorWasm}})
				defer p.Close()
				tg := target("loop", reactorWasm, func(s *registry.Spec) {
					s.MinInstances = tt.min
					s.MaxInstances = 3
					s.IdleTTL = registry.Duration(10 * time.Second)
				})
				p.Sync([]Target{tg})
				runCtx, stop := context.WithCancel(ctx)
				var run sync.WaitGroup
				run.Go(func() { p.Run(runCtx) })
				defer func() {
					stop()
					run.Wait()
				}()
				synctest.Wait()
				if got, want := stats(p, tg), (Stats{Idle: tt.min}); got != want {
					t.Fatalf("Stats after Sync = %+v, want %+v", got, want)
				}

				// Three requests at once leave three instances idle.
				overlap(t, p, tg, 3)
				if got, want := stats(p, tg), (Stats{Idle: 3}); got != want {
					t.Fatalf("Stats after 3 overlapping requests = %+v, want %+v", got, want)
				}
				start := time.Now()

				time.Sleep(9 * time.Second)
				synctest.Wait()
				if got, want := stats(p, tg), (Stats{Idle: 3}); got != want {
					t.Errorf("Stats after %v idle = %+v, want %+v", time.Since(start), got, want)
				}
				time.Sleep(2 * time.Second)
				synctest.Wait()
				if got, want := stats(p, tg), (Stats{Idle: tt.min}); got != want {
					t.Errorf("Stats after %v idle = %+v, want %+v", time.Since(start), got, want)
				}

				// A burst after idling: what min_instances kept is warm,
				// the rest starts cold.
				outs := burst(t, p, tg, "/", 1)
				if wantCold := tt.min == 0; outs[0].Cold != wantCold {
					t.Errorf("first request after idling: Outcome.Cold = %v, want %v", outs[0].Cold, wantCold)
				}
				time.Sleep(time.Hour)
				synctest.Wait()
				if got, want := stats(p, tg), (Stats{Idle: tt.min}); got != want {
					t.Errorf("Stats an hour on = %+v, want %+v", got, want)
				}
			})
		})
	}
}
