package store

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
)

// View is an in-memory copy of a KV bucket's JSON values, kept current by a
// watch, so that hot paths never read the store. Every node keeps its own.
type View[T any] struct {
	kv  *KV
	log *slog.Logger

	mu       sync.RWMutex
	items    map[string]T
	applied  map[string]uint64 // last revision applied per key
	changed  chan struct{}     // closed and replaced on every change
	synced   chan struct{}     // closed once the initial values are in
	onDelete []func(key string, old T)
	onApply  []func(key string)
}

// NewView returns a View of kv; Start fills it.
func NewView[T any](kv *KV, log *slog.Logger) *View[T] {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &View[T]{
		kv:      kv,
		log:     log,
		items:   map[string]T{},
		applied: map[string]uint64{},
		changed: make(chan struct{}),
		synced:  make(chan struct{}),
	}
}

// OnDelete registers fn to be called, on the watch goroutine, with each key
// that leaves the view and its last value. Call it before Start.
func (v *View[T]) OnDelete(fn func(key string, old T)) { v.onDelete = append(v.onDelete, fn) }

// OnApply registers fn to be called, on the watch goroutine, after every
// change the view applies (once synced: not for the initial values). Call it
// before Start.
func (v *View[T]) OnApply(fn func(key string)) { v.onApply = append(v.onApply, fn) }

// Start begins the watch and returns once the view holds every key, or ctx
// is done. The watch runs until watchCtx is done.
func (v *View[T]) Start(ctx, watchCtx context.Context) error {
	err := v.kv.Watch(watchCtx, v.apply, func() {
		v.mu.Lock()
		defer v.mu.Unlock()
		select {
		case <-v.synced:
		default:
			close(v.synced)
		}
	})
	if err != nil {
		return err
	}
	select {
	case <-v.synced:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("store: waiting for the view of %s: %w", v.kv.kv.Bucket(), ctx.Err())
	}
}

// Ready reports whether the view has caught up with the store once.
func (v *View[T]) Ready() bool {
	select {
	case <-v.synced:
		return true
	default:
		return false
	}
}

func (v *View[T]) apply(e Entry) {
	var (
		old     T
		removed bool
	)
	v.mu.Lock()
	if e.Deleted {
		old, removed = v.items[e.Key]
		delete(v.items, e.Key)
	} else {
		var item T
		if err := json.Unmarshal(e.Value, &item); err != nil {
			v.log.Error("skipping an unreadable record", "bucket", v.kv.kv.Bucket(), "key", e.Key, "err", err)
		} else {
			v.items[e.Key] = item
		}
	}
	v.applied[e.Key] = e.Revision
	close(v.changed)
	v.changed = make(chan struct{})
	v.mu.Unlock()
	if removed {
		for _, fn := range v.onDelete {
			fn(e.Key, old)
		}
	}
	if v.Ready() {
		for _, fn := range v.onApply {
			fn(e.Key)
		}
	}
}

// Get returns the value of key.
func (v *View[T]) Get(key string) (T, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	item, ok := v.items[key]
	return item, ok
}

// List returns the values whose keys start with prefix, sorted by key.
func (v *View[T]) List(prefix string) []T {
	v.mu.RLock()
	keys := make([]string, 0, len(v.items))
	for k := range v.items {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	out := make([]T, len(keys))
	for i, k := range keys {
		out[i] = v.items[k]
	}
	v.mu.RUnlock()
	return out
}

// WaitApplied returns once the view has applied revision rev of key: a
// client that wrote through this node then reads its own write here.
func (v *View[T]) WaitApplied(ctx context.Context, key string, rev uint64) error {
	return v.waitUntil(ctx, key, func() bool { return v.applied[key] >= rev })
}

// WaitPast returns once the view has applied a change of key after its
// revision rev: the delete of rev, say, or a write since. (Waiting for the
// key to be gone could wait for ever while another client writes it
// again.)
func (v *View[T]) WaitPast(ctx context.Context, key string, rev uint64) error {
	return v.WaitApplied(ctx, key, rev+1)
}

func (v *View[T]) waitUntil(ctx context.Context, key string, done func() bool) error {
	for {
		v.mu.RLock()
		ok, changed := done(), v.changed
		v.mu.RUnlock()
		if ok {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("store: waiting for the view to catch up with %s: %w", key, ctx.Err())
		}
	}
}
