package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// KV is one key-value bucket. Writes that must not lose a concurrent update
// from another node use Create or Update with the revision they read.
type KV struct {
	kv jetstream.KeyValue
	js jetstream.JetStream
}

// PurgePrefix removes every key that starts with prefix, which ends in a
// dot ("idem.acme." removes idem.acme.x and idem.acme.x.y).
func (k *KV) PurgePrefix(ctx context.Context, prefix string) error {
	bucket := k.kv.Bucket()
	return purge(ctx, k.js, kvStreamPrefix+bucket, "$KV."+bucket+"."+prefix+">")
}

// Entry is a key's value at a revision.
type Entry struct {
	Key      string
	Value    []byte
	Revision uint64
	// Deleted is set on watch events for a key that was deleted.
	Deleted bool
}

// Get returns the current value of key, or ErrNotFound.
func (k *KV) Get(ctx context.Context, key string) (Entry, error) {
	e, err := k.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return Entry{}, fmt.Errorf("%s: %w", key, ErrNotFound)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("store: get %s: %w", key, err)
	}
	return Entry{Key: e.Key(), Value: e.Value(), Revision: e.Revision()}, nil
}

// Put writes key whatever its revision.
func (k *KV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	if !validKey(key) {
		return 0, fmt.Errorf("store: put %q: %w", key, jetstream.ErrInvalidKey)
	}
	rev, err := publish(ctx, k.js, &nats.Msg{Subject: "$KV." + k.kv.Bucket() + "." + key, Data: value})
	if err != nil {
		return 0, fmt.Errorf("store: put %s: %w", key, err)
	}
	return rev, nil
}

// Create writes key only if it does not exist (or was deleted); otherwise it
// returns ErrConflict.
func (k *KV) Create(ctx context.Context, key string, value []byte) (uint64, error) {
	rev, err := k.kv.Create(ctx, key, value)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, fmt.Errorf("%s: %w", key, ErrConflict)
	}
	if err != nil {
		return 0, fmt.Errorf("store: create %s: %w", key, err)
	}
	return rev, nil
}

// Update writes key only if its revision is still rev; otherwise it returns
// ErrConflict.
func (k *KV) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	rev, err := k.kv.Update(ctx, key, value, rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return 0, fmt.Errorf("%s: %w", key, ErrConflict)
	}
	if err != nil {
		return 0, fmt.Errorf("store: update %s: %w", key, err)
	}
	return rev, nil
}

// Delete removes key if its revision is still rev (which must not be 0);
// otherwise it returns ErrConflict.
func (k *KV) Delete(ctx context.Context, key string, rev uint64) error {
	if rev == 0 {
		return fmt.Errorf("store: delete %s: a revision is required", key)
	}
	err := k.kv.Delete(ctx, key, jetstream.LastRevision(rev))
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("%s: %w", key, ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("store: delete %s: %w", key, err)
	}
	return nil
}

// Watch calls apply for the current value of every key, then sends on synced
// once, then calls apply for every change until ctx is done. apply runs on one
// goroutine, in revision order. Should the watch restart (NATS resets its
// ordered consumer after missed heartbeats, under load), a value replaced
// meanwhile may be skipped: what apply sees always converges to the
// bucket's state. Watch returns once the watch is set up.
func (k *KV) Watch(ctx context.Context, apply func(Entry), synced func()) error {
	w, err := k.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("store: watch %s: %w", k.kv.Bucket(), err)
	}
	go func() {
		defer w.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					synced()
					continue
				}
				apply(Entry{
					Key:      e.Key(),
					Value:    e.Value(),
					Revision: e.Revision(),
					Deleted:  e.Operation() != jetstream.KeyValuePut,
				})
			}
		}
	}()
	return nil
}
