package async

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gust-faas/gust/internal/store"
)

// TestRetrySupersedesItsOriginal: a worker that queued an invocation's
// retry and stopped before it acknowledged the attempt's message leaves
// that message to be delivered again; the retry supersedes it, so that the
// invocation does not go on in two lines of attempts. The retry itself, and
// a message with no later one, are not superseded.
func TestRetrySupersedesItsOriginal(t *testing.T) {
	ctx := t.Context()
	s := newService(t)
	queue := func(job Job) {
		t.Helper()
		data := encodeJob(job)
		if err := s.queue.Publish(ctx, workSubject(job.Tenant, job.ID), data); err != nil {
			t.Fatal(err)
		}
	}
	original := Job{ID: "a", Tenant: "t", Function: "f", Version: 1}
	queue(original)
	queue(Job{ID: "b", Tenant: "t", Function: "f", Version: 1}) // another invocation

	type verdict struct {
		id         string
		failed     int
		delivered  uint64
		superseded bool
	}
	verdicts := make(chan verdict, 16)
	var retried atomic.Bool
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	err := s.queue.Consume(cctx, 4, func(m *store.Message) {
		job, err := decodeJob(m.Data)
		if err != nil {
			t.Error(err)
		}
		verdicts <- verdict{job.ID, job.Failed, m.Delivered, s.superseded(ctx, m, job)}
		switch {
		case job.ID == "a" && job.Failed == 0 && retried.CompareAndSwap(false, true):
			// The attempt failed: its retry is queued, and the worker
			// stops before the ack.
			retry := original
			retry.Failed, retry.NotBefore = 1, time.Now().Add(time.Hour)
			queue(retry)
			m.Retry(0)
		case job.Failed > 0:
			m.Retry(time.Hour) // the retry waits for its time
		default:
			m.Ack()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[verdict]bool{
		{"a", 0, 1, false}: true, // the first delivery: nothing later yet
		{"b", 0, 1, false}: true,
		{"a", 0, 2, true}:  true, // delivered again: the retry supersedes it
		{"a", 1, 1, false}: true, // the retry is the latest
	}
	for range want {
		select {
		case v := <-verdicts:
			if !want[v] {
				t.Errorf("invocation %s (failed %d, delivery %d): superseded = %t, want %t", v.id, v.failed, v.delivered, v.superseded, !v.superseded)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the queue delivered fewer messages than expected")
		}
	}
}

// TestWaitingRetrySupersedesItsOriginal: a retry waiting in the queue's
// schedule for its time supersedes the message of the attempt before it,
// delivered again because its worker stopped before the ack.
func TestWaitingRetrySupersedesItsOriginal(t *testing.T) {
	ctx := t.Context()
	s := newService(t)
	original := Job{ID: "c", Tenant: "t", Function: "f", Version: 1}
	data := encodeJob(original)
	if err := s.queue.Publish(ctx, workSubject("t", "c"), data); err != nil {
		t.Fatal(err)
	}
	verdicts := make(chan bool, 4)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	err := s.queue.Consume(cctx, 2, func(m *store.Message) {
		verdicts <- s.superseded(ctx, m, original)
		if m.Delivered > 1 {
			m.Ack()
			return
		}
		retry := original
		retry.Failed, retry.NotBefore = 1, time.Now().Add(time.Hour)
		data := encodeJob(retry)
		if err := s.queue.PublishAt(ctx, workSubject("t", "c"), data, retry.NotBefore); err != nil {
			t.Error(err)
		}
		m.Retry(0) // the worker stops before the ack
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{false, true} {
		select {
		case got := <-verdicts:
			if got != want {
				t.Errorf("delivery %d: superseded = %t, want %t", i+1, got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the queue did not deliver the message again")
		}
	}
}
