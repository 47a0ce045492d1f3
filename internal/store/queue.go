package store

import (
	"context"
	"errors"
	"fmt"
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
}

// QueueConfig configures a Queue.
type QueueConfig struct {
	Name     string
	Subjects []string
	// AckWait is how long a delivered message may go without an ack or an
	// Extend before it is delivered again.
	AckWait time.Duration
}

// Queue opens (creating it if needed) a work queue.
func (s *Store) Queue(ctx context.Context, cfg QueueConfig) (*Queue, error) {
	st, err := s.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:      cfg.Name,
		Subjects:  cfg.Subjects,
		Retention: jetstream.WorkQueuePolicy,
		Storage:   jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("store: queue %s: %w", cfg.Name, err)
	}
	c, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       "workers",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: 10000,
	})
	if err != nil {
		return nil, fmt.Errorf("store: queue %s: consumer: %w", cfg.Name, err)
	}
	return &Queue{js: s.js, stream: st, consumer: c}, nil
}

// Publish appends a message and returns once it is stored. Messages carry
// no id for JetStream's deduplication, whose window would hold an entry for
// every message (hundreds of megabytes at thousands a second): callers that
// need a message once make sure of it themselves.
func (q *Queue) Publish(ctx context.Context, subject string, data []byte) error {
	if _, err := q.js.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: data}); err != nil {
		return fmt.Errorf("store: publish to %s: %w", subject, err)
	}
	return nil
}

// Pending returns the data of the last message on subject (no wildcards)
// that is still queued, or ErrNotFound once every message on it has been
// acknowledged.
func (q *Queue) Pending(ctx context.Context, subject string) ([]byte, error) {
	m, err := q.stream.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("%s: %w", subject, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("store: get %s: %w", subject, err)
	}
	return m.Data, nil
}

// Message is one delivery of a queued message.
type Message struct {
	Data []byte
	// Delivered counts the deliveries of this message, this one included.
	Delivered uint64
	m         jetstream.Msg
}

// Ack removes the message from the queue.
func (m *Message) Ack() error { return m.m.Ack() }

// Retry delivers the message again after delay.
func (m *Message) Retry(delay time.Duration) error { return m.m.NakWithDelay(delay) }

// Extend resets the message's ack wait: its worker is still at it.
func (m *Message) Extend() error { return m.m.InProgress() }

// Consume calls handle with each message, one at a time, until ctx is done
// or stop is called. handle must Ack, Retry or leave the message to be
// delivered again.
func (q *Queue) Consume(ctx context.Context, batch int, handle func(*Message)) (stop func(), err error) {
	cc, err := q.consumer.Consume(func(msg jetstream.Msg) {
		m := &Message{Data: msg.Data(), m: msg}
		if md, err := msg.Metadata(); err == nil {
			m.Delivered = md.NumDelivered
		}
		handle(m)
	}, jetstream.PullMaxMessages(batch))
	if err != nil {
		return nil, fmt.Errorf("store: consume: %w", err)
	}
	go func() {
		<-ctx.Done()
		cc.Stop()
	}()
	return cc.Stop, nil
}

// StreamMsg is a message read back from a Stream.
type StreamMsg struct {
	Seq  uint64
	Data []byte
}

// Delete removes the message with sequence seq from the stream.
func (st *Stream) Delete(ctx context.Context, seq uint64) error {
	s, err := st.js.Stream(ctx, st.name)
	if err != nil {
		return fmt.Errorf("store: stream %s: %w", st.name, err)
	}
	if err := s.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("store: delete from %s: %w", st.name, err)
	}
	return nil
}
