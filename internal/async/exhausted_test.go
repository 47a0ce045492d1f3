package async

import (
	"context"
	"encoding/json"
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
	s := newService(t)
	rt, err := wasm.New(ctx, wasm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close(context.Background()) })
	hello := wasmtest.MustRead(wasmtest.Hello)
	retries := 2
	version := registry.Version{Number: 1, Digest: registry.Digest(hello), Created: time.Now(),
		Spec: registry.Spec{Name: "f", MemoryMB: 64, Timeout: registry.Duration(5 * time.Second), MaxInstances: 2, Retries: &retries}.WithDefaults()}
	p := pool.New(pool.Deps{Sandboxes: map[string]runtime.Sandbox{registry.RuntimeWasm: rt}, Artifacts: artifacts{version.Digest: hello}})
	t.Cleanup(p.Close)
	s.functions = functions{"t/f": {Tenant: "t", Name: "f", Latest: 1, Versions: []registry.Version{version}}}
	s.invoker, s.limiter = p, tenant.NewLimiter(time.Now)

	// The third attempt was running when its worker stopped; the message
	// is the retry queued after the second.
	queued := time.Now()
	job := Job{ID: "spent", Tenant: "t", Function: "f", Version: 1, Queued: queued, Failed: 2, Request: runtime.Request{Method: "GET", Path: "/"}}
	attempts := []Attempt{{Started: queued, Error: "boom"}, {Started: queued, Error: "boom"}, {Started: queued}}
	if err := s.put(ctx, Record{ID: job.ID, Tenant: "t", Function: "f", Version: 1, State: Running, Attempts: attempts, Created: queued}); err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(job)
	if err := s.queue.Publish(ctx, workSubject("t", job.ID), data); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := s.Start(wctx); err != nil {
		t.Fatal(err)
	}
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
