package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/gust-faas/gust/internal/store"
)

// Artifacts stores function artifacts in the object store, addressed by the
// SHA-256 of their content, so every node fetches the same bytes.
type Artifacts struct {
	objects *store.Objects
	// Grace is how long an artifact that no version uses is kept after it
	// was last stored (see Sweep); a Put stores an artifact again once it
	// is half that old.
	Grace time.Duration

	mu     sync.Mutex
	unused map[string]bool // objects that no version used at the last Sweep
}

// DefaultArtifactGrace is Artifacts.Grace unless changed.
const DefaultArtifactGrace = 10 * time.Minute

// OpenArtifacts opens (creating it if needed) the artifact store.
func OpenArtifacts(ctx context.Context, s *store.Store) (*Artifacts, error) {
	obs, err := s.Objects(ctx, artifactsBucket)
	if err != nil {
		return nil, err
	}
	return &Artifacts{objects: obs, Grace: DefaultArtifactGrace}, nil
}

// Digest returns the digest written in version records: "sha256:" and the
// hex SHA-256 of the artifact.
func Digest(artifact []byte) string {
	sum := sha256.Sum256(artifact)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func objectName(digest string) string { return strings.Replace(digest, ":", "-", 1) }

func digestOf(objectName string) string { return strings.Replace(objectName, "-", ":", 1) }

// Stored returns the digests of the artifacts in the store.
func (a *Artifacts) Stored(ctx context.Context) (map[string]bool, error) {
	objects, err := a.objects.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(objects))
	for _, o := range objects {
		out[digestOf(o.Name)] = true
	}
	return out, nil
}

// Put stores artifact under digest, and checks the digest of what was
// stored. One stored already is not stored again unless it was stored more
// than Grace/2 ago: then it is, so that Sweep leaves it for a while, as the
// version about to use it is not recorded yet. (Storing it again is what
// makes it new: a metadata-only update could write back an object that a
// concurrent Sweep deleted.)
func (a *Artifacts) Put(ctx context.Context, digest string, artifact []byte) error {
	if got := Digest(artifact); got != digest {
		return fmt.Errorf("registry: artifact has digest %s, not %s", got, digest)
	}
	name := objectName(digest)
	info, err := a.objects.Info(ctx, name)
	if err == nil && time.Since(info.Modified) < a.Grace/2 {
		return nil
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return a.objects.Put(ctx, name, artifact)
}

// ensure stores artifact again if a Sweep deleted it after Put: Deploy
// calls it once the version that uses it is recorded.
func (a *Artifacts) ensure(ctx context.Context, digest string, artifact []byte) error {
	name := objectName(digest)
	_, err := a.objects.Info(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return a.objects.Put(ctx, name, artifact)
	}
	return err
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

// Sweep deletes the artifacts that no version uses, and returns their
// digests. inUse returns the digests of every version; it is called once
// per sweep and again before each deletion. An artifact goes only when it
// was unused at the previous Sweep too and was last stored more than Grace
// before now: a deploy that found its artifact stored and has not recorded
// its version yet, or a node whose view has not caught up with a deploy on
// another, keeps it. Any node may sweep; a second delete is harmless.
func (a *Artifacts) Sweep(ctx context.Context, inUse func() map[string]bool, now time.Time) (deleted []string, err error) {
	objects, err := a.objects.List(ctx)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	used := inUse()
	unused := map[string]bool{}
	for _, o := range objects {
		digest := digestOf(o.Name)
		if used[digest] {
			continue
		}
		if !a.unused[o.Name] || now.Sub(o.Modified) < a.Grace {
			unused[o.Name] = true
			continue
		}
		if inUse()[digest] {
			continue // deployed since the sweep began
		}
		if err := a.objects.Delete(ctx, o.Name); err != nil {
			a.unused = unused
			return deleted, err
		}
		deleted = append(deleted, digest)
	}
	a.unused = unused
	return deleted, nil
}
