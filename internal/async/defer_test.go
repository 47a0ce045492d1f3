package async

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/gust-faas/gust/internal/registry"
	"github.com/gust-faas/gust/internal/runtime"
	"github.com/gust-faas/gust/internal/runtime/wasm/wasmtest"
	"github.com/gust-faas/gust/internal/store"
)

// TestWaitingRetriesHoldNoDelivery: retries that wait long for their time
// do not hold the queue's pending deliveries, which every tenant shares:
// with room for one delivery at a time, invocations that failed and wait a
// minute for their retry leave the queue handing out the next invocation,
// which succeeds. Each retry waits in the queue's schedule with its
// failure counted and its time set.
func TestWaitingRetriesHoldNoDelivery(t *testing.T) {
	ctx := t.Context()
	s, _ := serviceWithPool(t, wasmtest.MustRead(wasmtest.Reactor), 2)
	f := s.functions.(functions)["t/f"]
	f.Versions[0].Spec.RetryDelay = registry.Duration(time.Minute)
	q, err := s.store.Queue(ctx, store.QueueConfig{Name: queueName, Subjects: []string{workPrefix + ">"}, AckWait: ackWait, MaxAckPending: 1})
	if err != nil {
		t.Fatal(err)
	}
	s.queue = q
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := s.Start(wctx); err != nil {
		t.Fatal(err)
	}
	enqueue := func(id, path string) {
		t.Helper()
		job := Job{ID: id, Tenant: "t", Function: "f", Version: 1, Request: runtime.Request{Method: "GET", Path: path}}
		if _, _, err := s.Enqueue(ctx, job, ""); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		id := "failing-" + strconv.Itoa(i)
		enqueue(id, "/panic")
		waitState(t, s, id, Failed)
		later, err := s.queue.Later(ctx, workSubject("t", id))
		if err != nil {
			t.Fatalf("invocation %s failed and its retry is not waiting for its time: %v", id, err)
		}
		retry, err := decodeJob(later.Data)
		if err != nil {
			t.Fatal(err)
		}
		if wait := time.Until(retry.NotBefore); retry.Failed != 1 || wait < 40*time.Second {
			t.Errorf("retry of %s: %d failures, due in %v; want 1, in about a minute", id, retry.Failed, wait)
		}
	}
	enqueue("ok", "/count")
	waitState(t, s, "ok", Succeeded)
}
