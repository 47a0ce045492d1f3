package tenant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/gust-faas/gust/internal/store"
)

// createJSON writes v under key if key does not exist.
func createJSON(ctx context.Context, kv *store.KV, key string, v any) (uint64, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return 0, err
	}
	return kv.Create(ctx, key, data)
}

// updateJSON reads key, lets change modify it, and writes it back if nobody
// wrote in between, retrying otherwise.
func updateJSON[T any](ctx context.Context, kv *store.KV, key string, change func(*T) error) (uint64, error) {
	for {
		cur, err := kv.Get(ctx, key)
		if errors.Is(err, store.ErrNotFound) {
			return 0, fmt.Errorf("%s: %w", key, ErrNotFound)
		}
		if err != nil {
			return 0, err
		}
		var v T
		if err := json.Unmarshal(cur.Value, &v); err != nil {
			return 0, fmt.Errorf("tenant: record %s: %w", key, err)
		}
		if err := change(&v); err != nil {
			return 0, err
		}
		data, err := json.Marshal(v)
		if err != nil {
			return 0, err
		}
		rev, err := kv.Update(ctx, key, data, cur.Revision)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		return rev, err
	}
}

// deleteKey deletes key whatever its revision, and returns the revision it
// deleted; a missing key is not an error (and 0).
func deleteKey(ctx context.Context, kv *store.KV, key string) (deleted uint64, err error) {
	for {
		cur, err := kv.Get(ctx, key)
		if errors.Is(err, store.ErrNotFound) {
			return 0, nil
		}
		if err != nil {
			return 0, err
		}
		err = kv.Delete(ctx, key, cur.Revision)
		if !errors.Is(err, store.ErrConflict) {
			return cur.Revision, err
		}
	}
}

// deleteSeen deletes key and waits until view has seen the delete, or a
// write of key since.
func deleteSeen[T any](ctx context.Context, kv *store.KV, view *store.View[T], key string) error {
	rev, err := deleteKey(ctx, kv, key)
	if err != nil || rev == 0 {
		return err
	}
	return view.WaitPast(ctx, key, rev)
}
