package store_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gust-faas/gust/internal/store"
)

// TestQueueHoldsWhatItTakes: work that outlasts the ack wait, with more
// messages than workers, runs each message once: those that wait on the
// node for a worker are checked in too, not delivered again to run twice.
func TestQueueHoldsWhatItTakes(t *testing.T) {
	s := openStore(t, store.Config{DataDir: t.TempDir()})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	const ackWait = time.Second
	q, err := s.Queue(ctx, store.QueueConfig{Name: "held", Subjects: []string{"held.>"}, AckWait: ackWait})
	if err != nil {
		t.Fatal(err)
	}
	const messages = 6
	for i := range messages {
		if err := q.Publish(ctx, "held."+strconv.Itoa(i), []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	runs := map[string]int{}
	done := make(chan struct{}, messages*2)
	err = q.Consume(ctx, 2, func(m *store.Message) {
		mu.Lock()
		runs[string(m.Data)]++
		mu.Unlock()
		time.Sleep(ackWait * 3 / 2) // longer than the ack wait
		m.Ack()
		done <- struct{}{}
	})
	if err != nil {
		t.Fatal(err)
	}
	for range messages {
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("not every message ran: %v", runs)
		}
	}
	time.Sleep(2 * ackWait) // a message delivered again would run by now
	mu.Lock()
	defer mu.Unlock()
	for i := range messages {
		if n := runs[strconv.Itoa(i)]; n != 1 {
			t.Errorf("message %d ran %d times, want once (runs: %v)", i, n, runs)
		}
	}
}
