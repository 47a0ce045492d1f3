package async

import (
	"context"
	"testing"
	"time"

	"github.com/gust-faas/gust/internal/pool"
	"github.com/gust-faas/gust/internal/registry"
	"github.com/gust-faas/gust/internal/runtime"
	"github.com/gust-faas/gust/internal/runtime/wasm"
	"github.com/gust-faas/gust/internal/runtime/wasm/wasmtest"
	"github.com/gust-faas/gust/internal/tenant"
)

type functions map[string]registry.Function

func (fs functions) Lookup(tenant, name string) (registry.Function, bool) {
	f, ok := fs[tenant+"/"+name]
	return f, ok
}

type artifacts map[string][]byte

func (a artifacts) Get(_ context.Context, digest string) ([]byte, error) { return a[digest], nil }

// TestSpentAttemptsAreNotRunAgain: an invocation delivered again after its
// last attempt (its worker stopped during it, or could not move it to the
// dead letters) goes to the dead letters without running: it ran once more
// each time, past its retries, and a run that succeeded marked it so.
func TestSpentAttemptsAreNotRunAgain(t *testing.T) {
	ctx := t.Context()
	s, _ := serviceWithPool(t, wasmtest.MustRead(wasmtest.Hello), 2)

	// The third attempt was running when its worker stopped; the message
	// is the retry queued after the second.
	queued := time.Now()
	job := Job{ID: "spent", Tenant: "t", Function: "f", Version: 1, Queued: queued, Failed: 2, Request: runtime.Request{Method: "GET", Path: "/"}}
	attempts := []Attempt{{Started: queued, Error: "boom"}, {Started: queued, Error: "boom"}, {Started: queued}}
	runQueued(t, s, job, &Record{ID: job.ID, Tenant: "t", Function: "f", Version: 1, State: Running, Attempts: attempts, Created: queued})
	deadline := time.Now().Add(10 * time.Second)
	for {
		rec, err := s.Get(ctx, "t", job.ID)
		if err == nil && rec.State != Running {
			if rec.State != Dead || len(rec.Attempts) != 3 || rec.Attempts[2].Error != "the worker running it stopped" {
				t.Fatalf("record: %s with %d attempts %+v; want dead after its 3, not run again", rec.State, len(rec.Attempts), rec.Attempts)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the invocation is still %v (%v)", rec.State, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if letters, err := s.Dead(ctx, "t", "f", 10); err != nil || len(letters) != 1 || letters[0].ID != job.ID {
		t.Errorf("dead letters: %+v, %v; want the invocation's", letters, err)
	}
}

// TestShutdownDoesNotSpendAnAttempt: an attempt that the server's shutdown
// cut off is not the function's failure: it does not count, and the
// invocation stays queued for the next start.
func TestShutdownDoesNotSpendAnAttempt(t *testing.T) {
	ctx := t.Context()
	s, p := serviceWithPool(t, wasmtest.MustRead(wasmtest.Reactor), 0)
	job := Job{ID: "cut", Tenant: "t", Function: "f", Version: 1, Queued: time.Now(), Request: runtime.Request{Method: "GET", Path: "/sleep"}}
	stop := runQueued(t, s, job, nil)
	waitState(t, s, job.ID, Running)
	stop()    // shutting down: the workers stop taking work
	s.Cut()   // and at the deadline, the invocations are cut off,
	p.Close() // and the instances stopped
	s.Wait(ctx)
	rec, err := s.Get(ctx, "t", job.ID)
	if err != nil || rec.State != Queued || len(rec.Attempts) != 0 {
		t.Errorf("record after the shutdown: %+v, %v; want queued with no attempt spent (retries: 0)", rec, err)
	}
	if queued, err := s.queue.Pending(ctx, workSubject("t", job.ID)); err != nil || queued.Data == nil {
		t.Errorf("the invocation left the queue: %v", err)
	}
}

// serviceWithPool returns a Service whose tenant t has function f, version
// 1 of artifact with the given retries, run by a pool of its own.
func serviceWithPool(t *testing.T, artifact []byte, retries int) (*Service, *pool.Pool) {
	t.Helper()
	s := newService(t)
	rt, err := wasm.New(t.Context(), wasm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close(context.Background()) })
	version := registry.Version{Number: 1, Digest: registry.Digest(artifact), Created: time.Now(),
		Spec: registry.Spec{Name: "f", MemoryMB: 64, Timeout: registry.Duration(time.Minute), MaxInstances: 2, Retries: &retries}.WithDefaults()}
	p := pool.New(pool.Deps{Sandboxes: map[string]runtime.Sandbox{registry.RuntimeWasm: rt}, Artifacts: artifacts{version.Digest: artifact}})
	t.Cleanup(p.Close)
	s.functions = functions{"t/f": {Tenant: "t", Name: "f", Latest: 1, Versions: []registry.Version{version}}}
	s.invoker, s.limiter = p, tenant.NewLimiter(time.Now)
	return s, p
}

// waitState waits until invocation id's record is in state.
func waitState(t *testing.T, s *Service, id string, state State) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second) // the first waits for the module's compilation
	for {
		rec, err := s.Get(t.Context(), "t", id)
		if err == nil && rec.State == state {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("invocation %s is %v (%v), want %v", id, rec.State, err, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestInvocationOfADeletedFunctionEndsDead: an invocation queued (here
// waiting for its retry) for a function deleted since, whose name a new
// function took, does not run the new code, and its record ends dead: it
// said failed, a retry to come, until it expired.
func TestInvocationOfADeletedFunctionEndsDead(t *testing.T) {
	ctx := t.Context()
	s, _ := serviceWithPool(t, wasmtest.MustRead(wasmtest.Reactor), 2)
	f := s.functions.(functions)["t/f"]
	f.Created = time.Now()
	s.functions = functions{"t/f": f}
	queued := f.Created.Add(-time.Hour) // for the function of this name before
	job := Job{ID: "orphan", Tenant: "t", Function: "f", Version: 1, Queued: queued, Failed: 1, Request: runtime.Request{Method: "GET", Path: "/count"}}
	runQueued(t, s, job, &Record{ID: job.ID, Tenant: "t", Function: "f", Version: 1, State: Failed, Attempts: []Attempt{{Started: queued, Error: "boom"}}, Created: queued})
	waitState(t, s, job.ID, Dead)
	if rec, _ := s.Get(ctx, "t", job.ID); len(rec.Attempts) != 1 {
		t.Errorf("attempts: %+v, want the one before, and no run of the new function", rec.Attempts)
	}
}

// runQueued records rec (if any), queues job, and starts s's workers
// until stop is called or the test ends.
func runQueued(t *testing.T, s *Service, job Job, rec *Record) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	if rec != nil {
		if err := s.put(ctx, *rec); err != nil {
			t.Fatal(err)
		}
	}
	data := encodeJob(job)
	if err := s.queue.Publish(ctx, workSubject(job.Tenant, job.ID), data); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return cancel
}

// TestFailureWhileDrainingCounts: an invocation that fails on its own
// (here at its timeout) while the server drains, its workers no longer
// taking work but letting what runs finish, spends its attempt: only a
// cut at the shutdown's deadline does not. (Every failure of the drain
// once went back to the queue uncounted, and a function with retries 0
// ran twice.)
func TestFailureWhileDrainingCounts(t *testing.T) {
	ctx := t.Context()
	reactor := wasmtest.MustRead(wasmtest.Reactor)
	s, p := serviceWithPool(t, reactor, 0)
	f := s.functions.(functions)["t/f"]
	f.Versions[0].Spec.Timeout = registry.Duration(500 * time.Millisecond)
	// Compiled first, as a deploy does: a cold start past the timeout is
	// the server's delay, not the function's failure.
	if err := p.Check(ctx, f.Versions[0].Spec, f.Versions[0].Digest, reactor); err != nil {
		t.Fatal(err)
	}
	job := Job{ID: "drained", Tenant: "t", Function: "f", Version: 1, Queued: time.Now(), Request: runtime.Request{Method: "GET", Path: "/sleep"}}
	stop := runQueued(t, s, job, nil)
	waitState(t, s, job.ID, Running)
	stop() // draining: no new work, what runs goes on
	waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s.Wait(waitCtx)
	rec, err := s.Get(ctx, "t", job.ID)
	if err != nil || rec.State != Dead || len(rec.Attempts) != 1 {
		t.Errorf("record after the drain: %+v, %v; want dead after its one attempt (it timed out on its own, retries 0)", rec, err)
	}
}
