package store

import (
	"cmp"
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
// messages on subjects for maxAge (0: forever), and at most maxMsgs of them
// (0: no bound), the oldest going first.
func (s *Store) Stream(ctx context.Context, name string, subjects []string, maxAge time.Duration, maxMsgs int64) (*Stream, error) {
	_, err := s.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:     name,
		Subjects: subjects,
		Storage:  jetstream.FileStorage,
		MaxAge:   maxAge,
		MaxMsgs:  cmp.Or(maxMsgs, -1),
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

// Purge removes the messages on subjects matching filter (a NATS subject,
// wildcards allowed).
func (st *Stream) Purge(ctx context.Context, filter string) error {
	return purge(ctx, st.js, st.name, filter)
}

func purge(ctx context.Context, js jetstream.JetStream, stream, filter string) error {
	s, err := js.Stream(ctx, stream)
	if err == nil {
		err = s.Purge(ctx, jetstream.WithPurgeSubject(filter))
	}
	if err != nil {
		return fmt.Errorf("store: purge %s from %s: %w", filter, stream, err)
	}
	return nil
}

// Last returns the last n messages on subjects matching any of filters
// (NATS subjects, wildcards allowed, none overlapping another), oldest
// first. It reads about n messages however many match: where more match,
// it first finds the sequence from which only the last n do.
func (st *Stream) Last(ctx context.Context, n int, filters ...string) ([]StreamMsg, error) {
	if n <= 0 || len(filters) == 0 {
		return nil, nil
	}
	s, err := st.js.Stream(ctx, st.name)
	if err != nil {
		return nil, fmt.Errorf("store: stream %s: %w", st.name, err)
	}
	state := s.CachedInfo().State
	start := max(state.FirstSeq, 1) // 0 in a stream never written
	if state.Msgs > uint64(n)+lastSlack {
		if start, err = st.startOfLast(ctx, s, filters, uint64(n), state.FirstSeq, state.LastSeq); err != nil {
			return nil, err
		}
	}
	// The server keeps a consumer until it has been idle for its
	// threshold (5 minutes by default): one read each time a dashboard
	// polls would pile them up. This one is deleted once read, and goes
	// by itself soon if that fails.
	cons, err := st.js.OrderedConsumer(ctx, st.name, jetstream.OrderedConsumerConfig{
		FilterSubjects:    filters,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       start,
		InactiveThreshold: 30 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("store: read %s: %w", st.name, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: read %s: %w", st.name, err)
	}
	defer func() {
		if ci := cons.CachedInfo(); ci != nil { // a fetch may have made another
			st.js.DeleteConsumer(context.WithoutCancel(ctx), st.name, ci.Name)
		}
	}()
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

// lastSlack is how many messages more than it returns Last may read rather
// than search further for where to start.
const lastSlack = 256

// startOfLast returns a sequence in [first, last] from which at least n and
// at most n+lastSlack messages match filters, or first if fewer match. It
// bisects the sequences, counting with the server's index: a consumer's
// pending count, from a consumer made and deleted for each probe.
func (st *Stream) startOfLast(ctx context.Context, s jetstream.Stream, filters []string, n, first, last uint64) (uint64, error) {
	matching := func(from uint64) (uint64, error) {
		c, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{
			FilterSubjects:    filters,
			DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
			OptStartSeq:       from,
			AckPolicy:         jetstream.AckNonePolicy,
			InactiveThreshold: time.Minute, // if the delete below fails
		})
		if err != nil {
			return 0, fmt.Errorf("store: read %s: %w", st.name, err)
		}
		info := c.CachedInfo()
		if err := s.DeleteConsumer(ctx, info.Name); err != nil {
			return 0, fmt.Errorf("store: read %s: %w", st.name, err)
		}
		return info.NumPending, nil
	}
	// From lo, at least n match; from hi, fewer.
	lo, hi := first, last+1
	if m, err := matching(lo); err != nil || m <= n+lastSlack {
		return lo, err
	}
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		m, err := matching(mid)
		if err != nil {
			return 0, err
		}
		switch {
		case m < n:
			hi = mid
		case m <= n+lastSlack:
			return mid, nil
		default:
			lo = mid
		}
	}
	return lo, nil
}
