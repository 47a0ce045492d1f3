package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/gust-faas/gust/internal/store"
)

// Artifacts stores function artifacts in the object store, addressed by the
// SHA-256 of their content, so every node fetches the same bytes.
type Artifacts struct {
	objects *store.Objects
}

// OpenArtifacts opens (creating it if needed) the artifact store.
func OpenArtifacts(ctx context.Context, s *store.Store) (*Artifacts, error) {
	obs, err := s.Objects(ctx, artifactsBucket)
	if err != nil {
		return nil, err
	}
	return &Artifacts{objects: obs}, nil
}

// Digest returns the digest written in version records: "sha256:" and the
// hex SHA-256 of the artifact.
func Digest(artifact []byte) string {
	sum := sha256.Sum256(artifact)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func objectName(digest string) string { return strings.Replace(digest, ":", "-", 1) }

// Put stores artifact under digest unless it is there already, and checks
// the digest of what was stored.
func (a *Artifacts) Put(ctx context.Context, digest string, artifact []byte) error {
	if got := Digest(artifact); got != digest {
		return fmt.Errorf("registry: artifact has digest %s, not %s", got, digest)
	}
	name := objectName(digest)
	has, err := a.objects.Has(ctx, name)
	if err != nil || has {
		return err
	}
	return a.objects.Put(ctx, name, artifact)
}

// Get returns the artifact with the given digest, checked against it.
func (a *Artifacts) Get(ctx context.Context, digest string) ([]byte, error) {
	data, err := a.objects.Get(ctx, objectName(digest))
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("artifact %s: %w", digest, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	if got := Digest(data); got != digest {
		return nil, fmt.Errorf("registry: artifact %s read back with digest %s", digest, got)
	}
	return data, nil
}
