package tenant

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A limiterStep does one thing to a Limiter and says what must come of it.
type limiterStep struct {
	advance time.Duration // move the clock first
	release int           // release the admission made at this step (1-based), instead of admitting
	again   bool          // with release: release it a second time
	mem     int           // memory of the invocation to admit
	want    string        // "" to be admitted, else the quota that refuses
	retry   time.Duration // with want: the RetryAfter expected, if non-zero
}

func TestLimiter(t *testing.T) {
	tests := []struct {
		name  string
		q     Quotas
		steps []limiterStep
	}{
		{"zero quotas are unlimited", Quotas{}, []limiterStep{
			{mem: 1 << 20}, {mem: 1 << 20}, {mem: 1 << 20}, {mem: 1 << 20}, {mem: 1 << 20},
		}},
		{"concurrency limit and release", Quotas{MaxConcurrency: 2}, []limiterStep{
			{},
			{},
			{want: "concurrency", retry: time.Second},
			{release: 1},
			{},
			{want: "concurrency"},
			{release: 2}, {release: 5},
			{}, {},
			{want: "concurrency"},
		}},
		{"release twice does not over-release", Quotas{MaxConcurrency: 1}, []limiterStep{
			{},
			{release: 1},
			{release: 1, again: true},
			{},
			{want: "concurrency"},
		}},
		{"memory limit", Quotas{MaxMemoryMB: 256}, []limiterStep{
			{mem: 128},
			{mem: 128},
			{mem: 1, want: "memory", retry: time.Second},
			{release: 1},
			{mem: 129, want: "memory"},
			{mem: 128},
			{release: 2}, {release: 6}, {release: 6, again: true},
			{mem: 256},
			{mem: 1, want: "memory"},
		}},
		{"memory larger than the quota", Quotas{MaxMemoryMB: 64}, []limiterStep{
			{mem: 65, want: "memory"},
			{mem: 64},
		}},
		{"memory released twice does not over-release", Quotas{MaxMemoryMB: 100}, []limiterStep{
			{mem: 100},
			{release: 1},
			{release: 1, again: true},
			{mem: 100},
			{mem: 100, want: "memory"},
		}},
		{"rate with burst and refill", Quotas{RatePerSecond: 2, Burst: 3}, []limiterStep{
			{}, {}, {},
			{want: "rate", retry: 500 * time.Millisecond},
			{advance: 250 * time.Millisecond, want: "rate", retry: 250 * time.Millisecond},
			{advance: 250 * time.Millisecond},
			{want: "rate", retry: 500 * time.Millisecond},
			// A long pause refills only up to the burst.
			{advance: time.Hour}, {}, {},
			{want: "rate", retry: 500 * time.Millisecond},
		}},
		{"rate without burst allows one second's worth", Quotas{RatePerSecond: 0.5}, []limiterStep{
			{},
			{want: "rate", retry: 2 * time.Second},
			{advance: 1999 * time.Millisecond, want: "rate", retry: time.Millisecond},
			{advance: time.Millisecond},
		}},
		{"fractional rate rounds its bucket up", Quotas{RatePerSecond: 2.5}, []limiterStep{
			{}, {}, {},
			{want: "rate", retry: 400 * time.Millisecond},
		}},
		{"refused requests spend no tokens", Quotas{RatePerSecond: 1, Burst: 1, MaxConcurrency: 1}, []limiterStep{
			{},
			{advance: time.Second, want: "concurrency"},
			{release: 1},
			{}, // the token refilled while refused is still there
			{release: 4},
			{want: "rate", retry: time.Second},
			{want: "rate", retry: time.Second},
			{advance: time.Second},
		}},
		{"all quotas at once", Quotas{MaxConcurrency: 3, MaxMemoryMB: 100, RatePerSecond: 10, Burst: 10}, []limiterStep{
			{mem: 50},
			{mem: 51, want: "memory"},
			{mem: 50},
			{mem: 1, want: "memory"},
			{release: 1},
			{mem: 0},
			{mem: 50},
			{mem: 0, want: "concurrency"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			l := NewLimiter(clock.Now)
			releases := map[int]func(){}
			for i, st := range tt.steps {
				n := i + 1
				clock.Advance(st.advance)
				if st.release > 0 {
					r := releases[st.release]
					if r == nil {
						t.Fatalf("step %d releases step %d, which admitted nothing", n, st.release)
					}
					r()
					if !st.again {
						continue
					}
					r()
					continue
				}
				release, err := l.Admit("acme", tt.q, st.mem)
				if st.want == "" {
					if err != nil || release == nil {
						t.Fatalf("step %d: Admit(%+v, %d MiB) = %v, want admitted", n, tt.q, st.mem, err)
					}
					releases[n] = release
					continue
				}
				var qerr *QuotaError
				if !errors.As(err, &qerr) {
					t.Fatalf("step %d: Admit(%+v, %d MiB) = %v, want a *QuotaError for %s", n, tt.q, st.mem, err, st.want)
				}
				if release != nil {
					t.Errorf("step %d: Admit refused but returned a release func", n)
				}
				if qerr.Quota != st.want {
					t.Errorf("step %d: QuotaError.Quota = %q, want %q", n, qerr.Quota, st.want)
				}
				if qerr.RetryAfter <= 0 {
					t.Errorf("step %d: RetryAfter = %v, want positive", n, qerr.RetryAfter)
				}
				if st.retry != 0 && (qerr.RetryAfter < st.retry-time.Microsecond || qerr.RetryAfter > st.retry+time.Microsecond) {
					t.Errorf("step %d: RetryAfter = %v, want %v", n, qerr.RetryAfter, st.retry)
				}
				if msg := qerr.Error(); !strings.Contains(msg, st.want) || qerr.Limit == "" {
					t.Errorf("step %d: Error() = %q with Limit %q, want it to name the %s quota and its limit", n, msg, qerr.Limit, st.want)
				}
			}
		})
	}
}

func TestLimiterTenantsAreSeparate(t *testing.T) {
	l := NewLimiter(newFakeClock().Now)
	q := Quotas{MaxConcurrency: 1, MaxMemoryMB: 10, RatePerSecond: 1}
	if _, err := l.Admit("acme", q, 10); err != nil {
		t.Fatalf("Admit(acme) = %v, want admitted", err)
	}
	if _, err := l.Admit("globex", q, 10); err != nil {
		t.Errorf("Admit(globex) while acme is at its quotas = %v, want admitted", err)
	}
	if _, err := l.Admit("acme", q, 1); err == nil {
		t.Errorf("Admit(acme) again = nil, want a *QuotaError")
	}
}

// TestLimiterQueuedInvocations: queueing an invocation (Accept) spends the
// request rate only; running it later (Hold) counts concurrency and memory
// only.
func TestLimiterQueuedInvocations(t *testing.T) {
	l := NewLimiter(newFakeClock().Now)
	q := Quotas{MaxConcurrency: 1, MaxMemoryMB: 64, RatePerSecond: 1, Burst: 2}
	release, err := l.Hold("acme", q, 64)
	if err != nil {
		t.Fatalf("Hold() = %v, want held", err)
	}
	for i := range 2 {
		if err := l.Accept("acme", q); err != nil {
			t.Fatalf("Accept() %d while an invocation runs = %v, want accepted: queueing runs nothing", i, err)
		}
	}
	var qerr *QuotaError
	if err := l.Accept("acme", q); !errors.As(err, &qerr) || qerr.Quota != "rate" {
		t.Errorf("Accept() past the burst = %v, want the rate quota", err)
	}
	if _, err := l.Hold("acme", q, 64); !errors.As(err, &qerr) || qerr.Quota != "concurrency" {
		t.Errorf("second Hold() = %v, want the concurrency quota", err)
	}
	release()
	// The rate is spent, and Hold does not need it.
	if release, err := l.Hold("acme", q, 64); err != nil {
		t.Errorf("Hold() after the release = %v, want held", err)
	} else {
		release()
	}
}

// TestLimiterNeverFits: an invocation larger than the whole memory quota
// is told that waiting will not help; one that fits later is not.
func TestLimiterNeverFits(t *testing.T) {
	l := NewLimiter(newFakeClock().Now)
	q := Quotas{MaxMemoryMB: 64}
	var qerr *QuotaError
	if _, err := l.Admit("acme", q, 128); !errors.As(err, &qerr) || !qerr.Never || !strings.Contains(err.Error(), "waiting will not help") {
		t.Errorf("Admit(128 MiB of 64) = %v, want a QuotaError that never fits", err)
	}
	release, err := l.Hold("acme", q, 64)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if _, err := l.Hold("acme", q, 32); !errors.As(err, &qerr) || qerr.Never {
		t.Errorf("Hold(32 MiB) with 64 held = %v, want a QuotaError worth waiting for", err)
	}
}

func TestNewLimiterDefaultsToTheRealClock(t *testing.T) {
	l := NewLimiter(nil)
	release, err := l.Admit("acme", Quotas{RatePerSecond: 1}, 0)
	if err != nil {
		t.Fatalf("Admit() = %v, want admitted", err)
	}
	release()
}

// TestLimiterRetryAfterIsEnough checks that a client that waits exactly
// RetryAfter is admitted, whatever the rate.
func TestLimiterRetryAfterIsEnough(t *testing.T) {
	for _, rate := range []float64{0.3, 1, 2, 3, 7, 10, 33, 1000} {
		clock := newFakeClock()
		l := NewLimiter(clock.Now)
		q := Quotas{RatePerSecond: rate, Burst: 1}
		for i := range 20 {
			_, err := l.Admit("acme", q, 0)
			var qerr *QuotaError
			if i == 0 || !errors.As(err, &qerr) {
				continue
			}
			if qerr.RetryAfter <= 0 {
				t.Errorf("rate %g: RetryAfter = %v, want positive", rate, qerr.RetryAfter)
			}
			clock.Advance(qerr.RetryAfter)
			if _, err := l.Admit("acme", q, 0); err != nil {
				t.Errorf("rate %g: Admit after waiting RetryAfter %v = %v, want admitted", rate, qerr.RetryAfter, err)
			}
		}
	}
}

func TestLimiterHammer(t *testing.T) {
	const (
		limit      = 4
		goroutines = 32
		attempts   = 200
	)
	l := NewLimiter(nil)
	q := Quotas{MaxConcurrency: limit, MaxMemoryMB: limit * 10}
	var (
		inside, peak, admitted atomic.Int64
		wg                     sync.WaitGroup
	)
	for range goroutines {
		wg.Go(func() {
			for range attempts {
				release, err := l.Admit("acme", q, 10)
				if err != nil {
					var qerr *QuotaError
					if !errors.As(err, &qerr) {
						t.Errorf("Admit() = %v, want nil or a *QuotaError", err)
						return
					}
					continue
				}
				admitted.Add(1)
				n := inside.Add(1)
				for {
					p := peak.Load()
					if n <= p || peak.CompareAndSwap(p, n) {
						break
					}
				}
				inside.Add(-1)
				release()
				release() // a second release must change nothing
			}
		})
	}
	wg.Wait()
	if p := peak.Load(); p > limit {
		t.Errorf("%d invocations ran at once, want at most %d", p, limit)
	}
	if admitted.Load() == 0 {
		t.Errorf("no invocation was admitted")
	}
	// Everything was released exactly once: the full quota is free again,
	// and no more than it.
	for i := range limit {
		if _, err := l.Admit("acme", q, 10); err != nil {
			t.Fatalf("Admit #%d after the hammer = %v, want admitted", i+1, err)
		}
	}
	if _, err := l.Admit("acme", q, 0); err == nil {
		t.Errorf("Admit #%d after the hammer = nil, want a *QuotaError", limit+1)
	}
}
