package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Objects is an object store for blobs too large for a key-value entry.
type Objects struct {
	obs jetstream.ObjectStore
}

// Put stores data under name and checks that the stored object's SHA-256
// digest, as JetStream computed it, is the digest of data.
func (o *Objects) Put(ctx context.Context, name string, data []byte) error {
	info, err := o.obs.Put(ctx, jetstream.ObjectMeta{Name: name}, bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("store: put object %s: %w", name, err)
	}
	sum := sha256.Sum256(data)
	want := "SHA-256=" + base64.URLEncoding.EncodeToString(sum[:])
	if info.Digest != want {
		return fmt.Errorf("store: object %s stored with digest %s, want %s", name, info.Digest, want)
	}
	return nil
}

// Get returns the object named name, or ErrNotFound. JetStream verifies its
// digest while reading. It returns when ctx is done, or after
// objectReadTimeout: the client's read heeds its context only at a chunk
// or at the context's deadline, so a chunk that never came (an object
// damaged, a consumer stalled) held a deploy, or a server's shutdown, for
// ever.
func (o *Objects) Get(ctx context.Context, name string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, objectReadTimeout)
	defer cancel()
	res, err := o.obs.Get(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("object %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("store: get object %s: %w", name, err)
	}
	type read struct {
		data []byte
		err  error
	}
	done := make(chan read, 1)
	go func() { // left behind if ctx ends first, until objectReadTimeout
		defer res.Close()
		data, err := io.ReadAll(res)
		done <- read{data, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, fmt.Errorf("store: get object %s: %w", name, r.err)
		}
		return r.data, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("store: get object %s: %w", name, ctx.Err())
	}
}

// objectReadTimeout bounds reading an object: 64 MiB take well under a
// second.
const objectReadTimeout = 2 * time.Minute

// ObjectInfo names an object and when it was last written or touched.
type ObjectInfo struct {
	Name     string
	Modified time.Time
}

// List returns the objects in the bucket.
func (o *Objects) List(ctx context.Context) ([]ObjectInfo, error) {
	infos, err := o.obs.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: list objects: %w", err)
	}
	out := make([]ObjectInfo, 0, len(infos))
	for _, info := range infos {
		out = append(out, ObjectInfo{Name: info.Name, Modified: info.ModTime})
	}
	return out, nil
}

// Info returns the object named name, or ErrNotFound.
func (o *Objects) Info(ctx context.Context, name string) (ObjectInfo, error) {
	info, err := o.obs.GetInfo(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return ObjectInfo{}, fmt.Errorf("object %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("store: object %s: %w", name, err)
	}
	return ObjectInfo{Name: info.Name, Modified: info.ModTime}, nil
}

// Delete removes the object named name; one that is not there is no error.
func (o *Objects) Delete(ctx context.Context, name string) error {
	if err := o.obs.Delete(ctx, name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("store: delete object %s: %w", name, err)
	}
	return nil
}
