package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Queue is a durable work queue: a stream that keeps each message until a
// worker acknowledges it, and one durable consumer that every node's workers
// share. A message whose worker dies is delivered again once its ack wait
// passes.
type Queue struct {
	js       jetstream.JetStream
	stream   jetstream.Stream
	consumer jetstream.Consumer
	ackWait  time.Duration
	held     held          // the messages this node holds
	waiting  chan *Message // those of them no worker has taken yet
	log      *slog.Logger
}

// Waiting returns how many messages this node holds that no worker has
// taken yet.
func (q *Queue) Waiting() int { return len(q.waiting) }

// QueueConfig configures a Queue.
type QueueConfig struct {
	Name     string
	Subjects []string
	// AckWait is how long a delivered message may go without an ack or a
	// check-in before it is delivered again.
	AckWait time.Duration
	// MaxAckPending bounds the messages delivered and not yet acknowledged,
	// those waiting for a Retry included (0: 200,000). At the bound the
	// queue hands out nothing new.
	MaxAckPending int
}

// laterPrefix is what a message published with PublishAt waits under,
// until its time: laterPrefix + its subject.
const laterPrefix = "later."

// Queue opens (creating it if needed) a work queue.
func (s *Store) Queue(ctx context.Context, cfg QueueConfig) (*Queue, error) {
	subjects := slices.Clone(cfg.Subjects)
	for _, subject := range cfg.Subjects {
		subjects = append(subjects, laterPrefix+subject)
	}
	st, err := s.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:              cfg.Name,
		Subjects:          subjects,
		Retention:         jetstream.WorkQueuePolicy,
		Storage:           jetstream.FileStorage,
		AllowMsgSchedules: true,
	})
	if err != nil {
		return nil, fmt.Errorf("store: queue %s: %w", cfg.Name, err)
	}
	if cfg.MaxAckPending == 0 {
		// The server keeps some 50 bytes per pending message.
		cfg.MaxAckPending = 200_000
	}
	cc := jetstream.ConsumerConfig{
		Durable:       "workers",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: cfg.MaxAckPending,
	}
	// Not the messages waiting for their time. One subject goes in
	// FilterSubject: the server's answer to an update that adds
	// FilterSubjects to a consumer without a filter (a data dir from
	// before PublishAt) does not list them, and nats.go takes that for a
	// server without the feature.
	if len(cfg.Subjects) == 1 {
		cc.FilterSubject = cfg.Subjects[0]
	} else {
		cc.FilterSubjects = cfg.Subjects
	}
	c, err := st.CreateOrUpdateConsumer(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("store: queue %s: consumer: %w", cfg.Name, err)
	}
	return &Queue{js: s.js, stream: st, consumer: c, ackWait: cfg.AckWait, log: s.log}, nil
}

// Publish appends a message and returns once it is stored. Messages carry
// no id for JetStream's deduplication, whose window would hold an entry for
// every message (hundreds of megabytes at thousands a second): callers that
// need a message once make sure of it themselves, or use PublishOnce where
// messages are few.
func (q *Queue) Publish(ctx context.Context, subject string, data []byte) error {
	if _, err := publish(ctx, q.js, &nats.Msg{Subject: subject, Data: data}); err != nil {
		return fmt.Errorf("store: publish to %s: %w", subject, err)
	}
	return nil
}

// PublishOnce appends a message unless one with the same id was published
// in the last two minutes (JetStream's deduplication window), and reports
// whether it was such a duplicate.
func (q *Queue) PublishOnce(ctx context.Context, subject string, data []byte, id string) (duplicate bool, err error) {
	ack, err := q.js.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: data}, jetstream.WithMsgID(id))
	if err != nil {
		return false, fmt.Errorf("store: publish to %s: %w", subject, err)
	}
	return ack.Duplicate, nil
}

// PublishAt appends a message that the queue hands out on subject no
// sooner than at (rounded up to the second). Until then it waits in the
// stream apart from the queued messages, holding none of the consumer's
// MaxAckPending: work deferred for long, however much of it, cannot stop
// the queue from handing out the rest. A later PublishAt for the same
// subject replaces one whose time has not come.
func (q *Queue) PublishAt(ctx context.Context, subject string, data []byte, at time.Time) error {
	if whole := at.Truncate(time.Second); whole.Before(at) {
		at = whole.Add(time.Second)
	}
	msg := &nats.Msg{Subject: laterPrefix + subject, Data: data}
	if _, err := q.js.PublishMsg(ctx, msg, jetstream.WithScheduleAt(at), jetstream.WithScheduleTarget(subject)); err != nil {
		return fmt.Errorf("store: publish to %s at %s: %w", subject, at.Format(time.RFC3339), err)
	}
	return nil
}

// Purge removes the messages on subjects matching filter, those waiting
// for their time included.
func (q *Queue) Purge(ctx context.Context, filter string) error {
	for _, f := range []string{filter, laterPrefix + filter} {
		if err := q.stream.Purge(ctx, jetstream.WithPurgeSubject(f)); err != nil {
			return fmt.Errorf("store: purge %s: %w", f, err)
		}
	}
	return nil
}

// Pending returns the last message on subject (no wildcards) that is
// still queued, or ErrNotFound once every message on it has been
// acknowledged.
func (q *Queue) Pending(ctx context.Context, subject string) (StreamMsg, error) {
	return q.last(ctx, subject)
}

// Later returns the message that PublishAt left to be queued on subject
// (no wildcards) when its time comes, or ErrNotFound if none is waiting.
func (q *Queue) Later(ctx context.Context, subject string) (StreamMsg, error) {
	return q.last(ctx, laterPrefix+subject)
}

// last returns the last message on subject.
func (q *Queue) last(ctx context.Context, subject string) (StreamMsg, error) {
	m, err := q.stream.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return StreamMsg{}, fmt.Errorf("%s: %w", subject, ErrNotFound)
	}
	if err != nil {
		return StreamMsg{}, fmt.Errorf("store: get %s: %w", subject, err)
	}
	return StreamMsg{Seq: m.Sequence, Data: m.Data}, nil
}

// Message is one delivery of a queued message.
type Message struct {
	Data []byte
	// Seq is the message's sequence in the queue: a later message has a
	// higher one.
	Seq uint64
	// Delivered counts the deliveries of this message, this one included.
	Delivered uint64
	m         jetstream.Msg
}

// Ack removes the message from the queue.
func (m *Message) Ack() error { return m.m.Ack() }

// Retry delivers the message again after delay.
func (m *Message) Retry(delay time.Duration) error { return m.m.NakWithDelay(delay) }

// extend resets the message's ack wait: its node still holds it.
func (m *Message) extend() error { return m.m.InProgress() }

// Consume runs workers goroutines that call handle with each message until
// ctx is done. handle must Ack, Retry or leave the message to be delivered
// again.
//
// The node holds a message from the moment the queue hands it over until
// handle returns, and checks it in with the queue meanwhile (a third of the
// ack wait apart), so that no other worker gets it: a message that waited
// here for a worker past its ack wait was delivered again, and ran twice.
// Besides those it runs, it holds as many as it has workers. The client
// takes up to as many more ahead of them, which are not held: each waits
// while those before it wait for a worker. So when the waits of the last
// workers messages add up to a fifth of the ack wait, the workers are busy
// with long invocations: the messages the queue hands over then go back to
// it for busyRetry, one each ack wait / (4 x workers), so that those the
// client took wait less than half the ack wait. A backlog of short
// invocations, each waiting a moment for a worker, never adds up to that.
func (q *Queue) Consume(ctx context.Context, workers int, handle func(*Message)) error {
	waiting := make(chan *Message, workers)
	q.waiting = waiting
	holdFull, busyPause := q.ackWait/5, q.ackWait/time.Duration(4*workers)
	waits := newWindow(workers) // the last messages' waits for a worker
	expiry := pullExpiry(q.ackWait)
	take := func(msg jetstream.Msg) {
		m := &Message{Data: msg.Data(), m: msg}
		if md, err := msg.Metadata(); err == nil {
			m.Seq, m.Delivered = md.Sequence.Stream, md.NumDelivered
		}
		q.held.add(m)
		select {
		case waiting <- m:
			waits.add(0)
			return
		default:
		}
		var waited time.Duration
		if wait := holdFull - waits.total(); wait > 0 {
			start := time.Now()
			t := time.NewTimer(wait)
			defer t.Stop()
			select {
			case waiting <- m:
				waits.add(time.Since(start))
				return
			case <-t.C:
				waited = time.Since(start)
			case <-ctx.Done():
				q.held.remove(m) // the queue delivers it again
				return
			}
		}
		q.held.remove(m)
		msg.NakWithDelay(busyRetry)
		waits.add(waited + busyPause)
		select {
		case <-time.After(busyPause):
		case <-ctx.Done():
		}
	}
	// Two subscriptions share the work, each asking for up to half of the
	// workers' messages: one that pauses (see pullHeartbeat) leaves the
	// other asking. Their callbacks may run at once; the window is locked.
	sizes := []int{workers}
	if workers > 1 {
		sizes = []int{workers - workers/2, workers / 2}
	}
	logFailure := jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if errors.Is(err, jetstream.ErrNoHeartbeat) {
			q.log.Debug("work queue: no heartbeat from the server; asking for messages again")
			return
		}
		q.log.Warn("work queue: consuming failed", "err", err)
	})
	var subs []jetstream.ConsumeContext
	for _, size := range sizes {
		cc, err := q.consumer.Consume(take, jetstream.PullMaxMessages(size),
			jetstream.PullExpiry(expiry), jetstream.PullHeartbeat(pullHeartbeat(expiry)), logFailure)
		if err != nil {
			for _, cc := range subs {
				cc.Stop()
			}
			return fmt.Errorf("store: consume: %w", err)
		}
		subs = append(subs, cc)
	}
	for range workers {
		go func() {
			for {
				select {
				case m := <-waiting:
					q.held.run(m) // before the check: a check-in round must not find none running in between
					if ctx.Err() != nil {
						q.held.remove(m) // stopping: the queue delivers it again
						return
					}
					handle(m)
					q.held.remove(m)
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	go func() {
		<-ctx.Done()
		for _, cc := range subs {
			cc.Stop()
		}
	}()
	go q.held.checkIn(ctx, q.ackWait/3)
	return nil
}

// pullExpiry is how long each of the client's requests for messages
// lasts, for a queue whose ack wait is ackWait: half of it, and at least a
// second, against the library's 30 s. At a request's end the server tells
// the client how many of the messages it asked for it did not send, which
// puts right the client's count of them within an ack wait.
func pullExpiry(ackWait time.Duration) time.Duration {
	return max(time.Second, ackWait/2)
}

// pullHeartbeat is how often the server tells the client that a request
// for messages of the given expiry is still open, while it has none to
// send. The client asks for more messages when it has taken half of those
// it asked for, but not while it is still sending its last request
// (nats.go v1.55.0, pullSubscription.checkPending): if the rest arrive
// meanwhile, it waits with none asked for until it misses two heartbeats.
// Under load that happened about once in ten rounds of 20,000 invocations,
// with the library's heartbeat of half the expiry: no work ran for 5 s.
// At the shortest heartbeat the library takes, half a second (the expiry
// is at least a second, twice that), such a pause lasts a second at most,
// and Consume's other subscription goes on meanwhile.
// A heartbeat the client only thought it missed (under a pause of the
// whole process) makes it ask for a batch more than it counts on: those
// messages wait in the client while Consume gives back, a short pause
// each, what its busy workers cannot take.
func pullHeartbeat(expiry time.Duration) time.Duration {
	return min(max(expiry/10, 500*time.Millisecond), expiry/2)
}

// busyRetry is how long a message a busy node gave back waits in the
// queue.
const busyRetry = time.Second

// window is the sum of the last n durations added.
type window struct {
	mu   sync.Mutex
	last []time.Duration // a ring
	next int
	sum  time.Duration
}

func newWindow(n int) *window { return &window{last: make([]time.Duration, n)} }

func (w *window) add(d time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sum += d - w.last[w.next]
	w.last[w.next] = d
	w.next = (w.next + 1) % len(w.last)
}

func (w *window) total() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.sum
}

// held are the messages a node holds.
type held struct {
	mu   sync.Mutex
	msgs map[*Message]*holding
}

// holding is a held message's state.
type holding struct {
	checked time.Time // when it last checked in
	running bool      // a worker runs it
}

func (h *held) add(m *Message) {
	h.mu.Lock()
	if h.msgs == nil {
		h.msgs = map[*Message]*holding{}
	}
	h.msgs[m] = &holding{} // unknown check-in: it may have waited in the client; the next round checks it in
	h.mu.Unlock()
}

// run marks m as taken by a worker.
func (h *held) run(m *Message) {
	h.mu.Lock()
	if hm := h.msgs[m]; hm != nil {
		hm.running = true
	}
	h.mu.Unlock()
}

func (h *held) remove(m *Message) {
	h.mu.Lock()
	delete(h.msgs, m)
	h.mu.Unlock()
}

// due returns the messages that last checked in before since (only those
// a worker runs, if running), marking them checked in at now, and how many
// messages workers run.
func (h *held) due(since, now time.Time, running bool) (due []*Message, runs int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for m, hm := range h.msgs {
		if hm.running {
			runs++
		}
		if hm.checked.Before(since) && (!running || hm.running) {
			due = append(due, m)
			hm.checked = now
		}
	}
	return due, runs
}

// checkIn extends the ack wait of each message held for every. Once ctx
// is done, it goes on for the messages workers still run, until they
// end: a server that stops lets its invocations finish (for up to its
// shutdown timeout), and another node must not take them meanwhile and
// run them a second time. Those no worker took go back to the queue. A
// failed check-in is not retried: the message may then be delivered
// again, which its handler must expect anyway.
func (h *held) checkIn(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every / 2)
	defer t.Stop()
	for now := range t.C {
		stopping := ctx.Err() != nil
		due, runs := h.due(now.Add(-every), now, stopping)
		for _, m := range due {
			m.extend()
		}
		if stopping && runs == 0 {
			return
		}
	}
}

// StreamMsg is a message read back from a Stream.
type StreamMsg struct {
	Seq  uint64
	Data []byte
}

// Delete removes the message with sequence seq from the stream; one that
// is gone already (deleted, expired, over the stream's bound) is no error.
func (st *Stream) Delete(ctx context.Context, seq uint64) error {
	s, err := st.js.Stream(ctx, st.name)
	if err != nil {
		return fmt.Errorf("store: stream %s: %w", st.name, err)
	}
	if err := s.DeleteMsg(ctx, seq); err != nil {
		// nats.go's error keeps the server's reason only as text: ask
		// whether the message is there.
		if _, gerr := s.GetMsg(ctx, seq); errors.Is(gerr, jetstream.ErrMsgNotFound) {
			return nil
		}
		return fmt.Errorf("store: delete from %s: %w", st.name, err)
	}
	return nil
}
