package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream is an append-only log of messages on subjects, kept on disk.
type Stream struct {
	js   jetstream.JetStream
	name string
}

// Stream opens (creating it if needed) a stream named name that keeps the
// messages on subjects for maxAge (0: forever).
func (s *Store) Stream(ctx context.Context, name string, subjects []string, maxAge time.Duration) (*Stream, error) {
	_, err := s.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:     name,
		Subjects: subjects,
		Storage:  jetstream.FileStorage,
		MaxAge:   maxAge,
	})
	if err != nil {
		return nil, fmt.Errorf("store: stream %s: %w", name, err)
	}
	return &Stream{js: s.js, name: name}, nil
}

// Publish appends data on subject and returns once it is stored.
func (st *Stream) Publish(ctx context.Context, subject string, data []byte) error {
	if _, err := st.js.Publish(ctx, subject, data); err != nil {
		return fmt.Errorf("store: publish to %s: %w", subject, err)
	}
	return nil
}

// Last returns the last n messages on subjects matching filter (a NATS
// subject, wildcards allowed), oldest first.
func (st *Stream) Last(ctx context.Context, filter string, n int) ([]StreamMsg, error) {
	if n <= 0 {
		return nil, nil
	}
	cons, err := st.js.OrderedConsumer(ctx, st.name, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		return nil, fmt.Errorf("store: read %s: %w", st.name, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: read %s: %w", st.name, err)
	}
	pending := info.NumPending
	out := make([]StreamMsg, 0, min(uint64(n), pending))
	for pending > 0 {
		batch, err := cons.Fetch(int(min(pending, 256)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, fmt.Errorf("store: read %s: %w", st.name, err)
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			pending--
			var seq uint64
			if md, err := msg.Metadata(); err == nil {
				seq = md.Sequence.Stream
			}
			out = append(out, StreamMsg{Seq: seq, Data: msg.Data()})
			if len(out) > n {
				out = out[1:]
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, fmt.Errorf("store: read %s: %w", st.name, err)
		}
		if got == 0 {
			break
		}
	}
	return out, nil
}
