package wasm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"sync"
)

// decodedModules remembers the modules that passed decodeCheck, in memory
// (for the whole process: a module is its content) and, with a cache
// directory, on disk, so that each is checked once, not at every compile or
// restart.
type decodedModules struct {
	dir string // the compilation cache's directory, or ""
}

var (
	decodedMu   sync.Mutex
	decodedSeen = map[[32]byte]bool{}
)

func (d *decodedModules) marker(sum [32]byte) string {
	return filepath.Join(d.dir, "decoded", hex.EncodeToString(sum[:]))
}

// check runs decodeCheck on module unless it passed before.
func (d *decodedModules) check(ctx context.Context, module []byte) error {
	sum := sha256.Sum256(module)
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
	if err := decodeCheck(ctx, module); err != nil {
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
