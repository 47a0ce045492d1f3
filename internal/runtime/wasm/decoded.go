package wasm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"

	"github.com/gust-faas/gust/internal/runtime"
)

// decodedModules remembers the modules that passed decodeCheck, in memory
// (for the whole process: a module is its content) and, with a cache
// directory, on disk, so that each is checked once, not at every compile or
// restart. The markers on disk are kept per version of the check and of
// wazero, so that an upgrade checks again.
type decodedModules struct {
	dir string // the compilation cache's directory, or ""
}

// decodeCheckVersion changes when what decodeCheck checks does.
const decodeCheckVersion = "2"

var (
	decodedMu   sync.Mutex
	decodedSeen = map[[32]byte]bool{}

	markerDir = sync.OnceValue(func() string {
		version := "unknown"
		if info, ok := debug.ReadBuildInfo(); ok {
			for _, dep := range info.Deps {
				if dep.Path == "github.com/tetratelabs/wazero" {
					version = dep.Version
				}
			}
		}
		return filepath.Join("decoded", "v"+decodeCheckVersion+"-wazero-"+version)
	})
)

func (d *decodedModules) marker(sum [32]byte) string {
	return filepath.Join(d.dir, markerDir(), hex.EncodeToString(sum[:]))
}

// check runs decodeCheck on code, the module compiled for the fast or the
// safe runtime from artifact, unless artifact passed before.
func (d *decodedModules) check(ctx context.Context, artifact, code []byte, safe bool) error {
	sum := sha256.Sum256(artifact)
	decodedMu.Lock()
	seen := decodedSeen[sum]
	decodedMu.Unlock()
	if seen {
		return nil
	}
	if d.dir != "" {
		if _, err := os.Stat(d.marker(sum)); err == nil {
			d.remember(sum)
			return nil
		}
	}
	if err := decodeCheck(ctx, code, safe, d.dir); err != nil {
		var rerr *runtime.Error
		if !safe && errors.As(err, &rerr) && rerr.Kind == runtime.BadArtifact {
			// Report what is wrong with the module as it was written,
			// not as instrument rewrote it.
			if origErr := decodeCheck(ctx, artifact, true, ""); origErr != nil {
				return origErr
			}
		}
		return err
	}
	d.remember(sum)
	if d.dir != "" {
		// Best effort: without the marker, the next start checks again.
		if os.MkdirAll(filepath.Dir(d.marker(sum)), 0o700) == nil {
			os.WriteFile(d.marker(sum), nil, 0o600)
		}
	}
	return nil
}

func (d *decodedModules) remember(sum [32]byte) {
	decodedMu.Lock()
	decodedSeen[sum] = true
	decodedMu.Unlock()
}
