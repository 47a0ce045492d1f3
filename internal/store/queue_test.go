package store_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

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
	publishNumbered(t, q, "held.", messages)
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
	waitRuns(t, done, messages)
	time.Sleep(2 * ackWait) // a message delivered again would run by now
	mu.Lock()
	defer mu.Unlock()
	for i := range messages {
		if n := runs[strconv.Itoa(i)]; n != 1 {
			t.Errorf("message %d ran %d times, want once (runs: %v)", i, n, runs)
		}
	}
}

// TestPublishAtWaitsForItsTime: a message published for later reaches the
// workers no sooner than its time; until then it can be read back, a later
// one for the same subject replaces it, and a purge removes it.
func TestPublishAtWaitsForItsTime(t *testing.T) {
	s := openStore(t, store.Config{DataDir: t.TempDir()})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	q, err := s.Queue(ctx, store.QueueConfig{Name: "later", Subjects: []string{"jobs.>"}, AckWait: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(1500 * time.Millisecond)
	for _, p := range []struct {
		subject, data string
		at            time.Time
	}{
		{"jobs.a", "replaced", at.Add(time.Hour)},
		{"jobs.a", "due", at},
		{"jobs.b", "purged", at},
	} {
		if err := q.PublishAt(ctx, p.subject, []byte(p.data), p.at); err != nil {
			t.Fatal(err)
		}
	}
	if m, err := q.Later(ctx, "jobs.a"); err != nil || string(m.Data) != "due" {
		t.Errorf("waiting on jobs.a: %q, %v; want the last published, due", m.Data, err)
	}
	if _, err := q.Pending(ctx, "jobs.a"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("jobs.a is queued before its time: %v", err)
	}
	if err := q.Purge(ctx, "jobs.b"); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Later(ctx, "jobs.b"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("jobs.b still waits after its purge: %v", err)
	}
	type delivery struct {
		data string
		at   time.Time
	}
	got := make(chan delivery, 4)
	if err := q.Consume(ctx, 2, func(m *store.Message) {
		got <- delivery{string(m.Data), time.Now()}
		m.Ack()
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-got:
		if d.data != "due" || d.at.Before(at) {
			t.Errorf("delivered %q at %v, want due no sooner than %v", d.data, d.at.Format(time.StampMilli), at.Format(time.StampMilli))
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the message published for later never arrived")
	}
	select {
	case d := <-got:
		t.Errorf("delivered %q as well, want only the last published for jobs.a", d.data)
	case <-time.After(2 * time.Second):
	}
	if _, err := q.Later(ctx, "jobs.a"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("jobs.a still waits once delivered: %v", err)
	}
}

// TestQueueOpensAnOlderQueue: a queue made before PublishAt (its consumer
// had no filter) opens on the first start after the upgrade (which once
// failed: nats.go took the server's answer for a refusal), and hands out
// what is published for later only when its time comes.
func TestQueueOpensAnOlderQueue(t *testing.T) {
	addr, dir := freeAddr(t), t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	// The queue as the earlier version made it, on a server since stopped.
	old, err := store.Open(ctx, store.Config{DataDir: dir, Listen: addr, Token: "secret-token"})
	if err != nil {
		t.Fatal(err)
	}
	js := jetStreamClient(t, addr, "secret-token")
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "old", Subjects: []string{"old.>"}, Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "workers", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 10 * time.Second, MaxDeliver: -1, MaxAckPending: 200_000}); err != nil {
		t.Fatal(err)
	}
	js.Conn().Close() // before its server stops
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	s := openStore(t, store.Config{DataDir: dir})
	q, err := s.Queue(ctx, store.QueueConfig{Name: "old", Subjects: []string{"old.>"}, AckWait: 10 * time.Second})
	if err != nil {
		t.Fatalf("opening the older queue: %v", err)
	}
	at := time.Now().Add(time.Second)
	if err := q.PublishAt(ctx, "old.a", []byte("later"), at); err != nil {
		t.Fatal(err)
	}
	got := make(chan time.Time, 2)
	if err := q.Consume(ctx, 1, func(m *store.Message) {
		got <- time.Now()
		m.Ack()
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case when := <-got:
		if when.Before(at) {
			t.Errorf("the message for later came at %v, before its time %v", when.Format(time.StampMilli), at.Format(time.StampMilli))
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the message for later never came")
	}
}

// TestStoppingNodeKeepsWhatItRuns: a node that stops lets the message a
// worker runs finish there: it goes on checking it in, and another node
// does not get it meanwhile to run it a second time (its check-ins
// stopped with the node, and after the ack wait every invocation running
// longer than that at a shutdown ran twice).
func TestStoppingNodeKeepsWhatItRuns(t *testing.T) {
	s := openStore(t, store.Config{DataDir: t.TempDir()})
	const ackWait = time.Second
	open := func() *store.Queue {
		q, err := s.Queue(t.Context(), store.QueueConfig{Name: "stopping", Subjects: []string{"stopping.>"}, AckWait: ackWait})
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	var mu sync.Mutex
	var runs []string
	started := make(chan struct{})
	stopping, stop := context.WithCancel(t.Context())
	a := open()
	err := a.Consume(stopping, 1, func(m *store.Message) {
		mu.Lock()
		runs = append(runs, "a")
		mu.Unlock()
		close(started)
		time.Sleep(3 * ackWait) // the invocation outlasts the ack wait
		m.Ack()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Publish(t.Context(), "stopping.x", []byte("x")); err != nil {
		t.Fatal(err)
	}
	<-started
	stop() // node a shuts down, letting its invocation finish
	b := open()
	if err := b.Consume(t.Context(), 1, func(m *store.Message) {
		mu.Lock()
		runs = append(runs, "b")
		mu.Unlock()
		m.Ack()
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * ackWait)
	mu.Lock()
	defer mu.Unlock()
	if len(runs) != 1 {
		t.Errorf("the message ran on %v, want once, on the stopping node that had it", runs)
	}
}

// A publish that no stream takes fails, after the library's retries: it
// is not taken for stored.
func TestPublishFailures(t *testing.T) {
	s := openStore(t, store.Config{DataDir: t.TempDir()})
	ctx := t.Context()
	q, err := s.Queue(ctx, store.QueueConfig{Name: "pub", Subjects: []string{"pub.>"}, AckWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Publish(ctx, "nowhere.x", []byte("x")); !errors.Is(err, jetstream.ErrNoStreamResponse) {
		t.Errorf("publish to a subject no stream takes: %v, want no stream response", err)
	}
	if err := q.Publish(ctx, "pub.ok", []byte("x")); err != nil {
		t.Errorf("publish after the failures: %v", err)
	}
}

// TestBacklogOfShortWorkIsNotSentBack: messages that each wait a moment for
// a busy worker, in a backlog longer than a fifth of the ack wait, are
// handed over one after another, none of them given back to the queue to
// be delivered again a second later. (Counting the backlog's wait from when
// the workers were first found busy sent everything back, and 20,000
// invocations took 30 s instead of 4.)
func TestBacklogOfShortWorkIsNotSentBack(t *testing.T) {
	s := openStore(t, store.Config{DataDir: t.TempDir()})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	const ackWait = 2 * time.Second // a fifth of it: 400 ms
	q, err := s.Queue(ctx, store.QueueConfig{Name: "backlog", Subjects: []string{"backlog.>"}, AckWait: ackWait})
	if err != nil {
		t.Fatal(err)
	}
	const messages, work = 150, 10 * time.Millisecond // 2 workers: 750 ms of backlog
	publishNumbered(t, q, "backlog.", messages)
	var mu sync.Mutex
	var again []string
	done := make(chan struct{}, messages)
	err = q.Consume(ctx, 2, func(m *store.Message) {
		if m.Delivered > 1 {
			mu.Lock()
			again = append(again, string(m.Data))
			mu.Unlock()
		}
		time.Sleep(work)
		m.Ack()
		done <- struct{}{}
	})
	if err != nil {
		t.Fatal(err)
	}
	waitRuns(t, done, messages)
	mu.Lock()
	defer mu.Unlock()
	if len(again) > 0 {
		t.Errorf("%d messages were given back and delivered again: %v", len(again), again)
	}
}

// publishNumbered publishes messages 0 to n-1 on prefix+i, each holding i.
func publishNumbered(t *testing.T, q *store.Queue, prefix string, n int) {
	t.Helper()
	for i := range n {
		if err := q.Publish(t.Context(), prefix+strconv.Itoa(i), []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
}

// waitRuns waits for n runs to report on done.
func waitRuns(t *testing.T, done <-chan struct{}, n int) {
	t.Helper()
	for i := range n {
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("%d of %d messages ran", i, n)
		}
	}
}

// TestConsumeFailureIsLogged: when the queue's consumer goes away behind
// its back (an operator deleted it over the NATS port), the node says so
// in its log rather than wait for work in silence.
func TestConsumeFailureIsLogged(t *testing.T) {
	addr := freeAddr(t)
	var log lockedBuffer
	s := openStore(t, store.Config{DataDir: t.TempDir(), Listen: addr, Token: "tok",
		Logger: slog.New(slog.NewTextHandler(&log, nil))})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	q, err := s.Queue(ctx, store.QueueConfig{Name: "gone", Subjects: []string{"gone.>"}, AckWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Consume(ctx, 2, func(m *store.Message) { m.Ack() }); err != nil {
		t.Fatal(err)
	}
	if err := jetStreamClient(t, addr, "tok").DeleteConsumer(ctx, "gone", "workers"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(log.String(), "work queue: consuming failed") {
		if time.Now().After(deadline) {
			t.Fatalf("no warning after the consumer was deleted; the log:\n%s", log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(log.String(), "level=WARN") {
		t.Errorf("the failure is not a warning:\n%s", log.String())
	}
}

// lockedBuffer is a bytes.Buffer that a log may write while a test reads.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
