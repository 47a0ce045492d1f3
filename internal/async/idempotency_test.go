package async

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"
)

// TestIdempotencyKeyOutlivesTheCaller: a caller that goes away while its
// invocation is being queued neither loses the invocation nor frees the
// key (a retry with the key would queue the work twice).
func TestIdempotencyKeyOutlivesTheCaller(t *testing.T) {
	s := newService(t)
	gone, cancel := context.WithCancel(t.Context())
	cancel()
	rec, dup, err := s.Enqueue(gone, Job{ID: "first", Tenant: "t", Function: "f", Version: 1}, "key-1")
	if err != nil || dup || rec.ID != "first" {
		t.Fatalf("Enqueue by a caller that left: %+v, duplicate %v, %v; want it queued", rec, dup, err)
	}
	if _, err := s.queue.Pending(t.Context(), workSubject("t", "first")); err != nil {
		t.Fatalf("the invocation is not queued: %v", err)
	}
	rec, dup, err = s.Enqueue(t.Context(), Job{ID: "second", Tenant: "t", Function: "f", Version: 1}, "key-1")
	if err != nil || !dup || rec.ID != "first" {
		t.Errorf("the retry with the key: %+v, duplicate %v, %v; want the first invocation", rec, dup, err)
	}
}

// TestStrandedIdempotencyKey: a key whose invocation never reached the
// queue (its server stopped between the two writes) answers "being
// queued" for a while, then is taken over by the next request with it.
func TestStrandedIdempotencyKey(t *testing.T) {
	s := newService(t)
	now := time.Now()
	s.now = func() time.Time { return now }
	job := Job{ID: "retry", Tenant: "t", Function: "f", Version: 1}
	claimed := now.Add(-keyTakeover + time.Second)
	if _, err := s.results.Create(t.Context(), idempotencyEntry(job, "key-2"), []byte("ghost "+strconv.FormatInt(claimed.UnixNano(), 10))); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Enqueue(t.Context(), job, "key-2"); !errors.Is(err, ErrPending) {
		t.Fatalf("Enqueue with a key claimed %v ago: %v, want ErrPending", now.Sub(claimed), err)
	}
	now = now.Add(2 * time.Second)
	rec, dup, err := s.Enqueue(t.Context(), job, "key-2")
	if err != nil || dup || rec.ID != "retry" {
		t.Fatalf("Enqueue with a key stranded for %v: %+v, duplicate %v, %v; want it taken over", now.Sub(claimed), rec, dup, err)
	}
	rec, dup, err = s.Enqueue(t.Context(), Job{ID: "third", Tenant: "t", Function: "f", Version: 1}, "key-2")
	if err != nil || !dup || rec.ID != "retry" {
		t.Errorf("after the takeover: %+v, duplicate %v, %v; want the invocation that took it over", rec, dup, err)
	}
}
