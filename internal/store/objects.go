package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"

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

// Has reports whether an object named name exists.
func (o *Objects) Has(ctx context.Context, name string) (bool, error) {
	_, err := o.obs.GetInfo(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store: object %s: %w", name, err)
	}
	return true, nil
}

// Get returns the object named name, or ErrNotFound. JetStream verifies its
// digest while reading.
func (o *Objects) Get(ctx context.Context, name string) ([]byte, error) {
	data, err := o.obs.GetBytes(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("object %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("store: get object %s: %w", name, err)
	}
	return data, nil
}
