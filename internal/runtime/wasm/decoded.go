package wasm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/gust-faas/gust/internal/runtime"
	"github.com/tetratelabs/wazero"
)

// decodedModules remembers the modules that passed decodeCheck, in memory
// (for the whole process and the cache directory: a module is its content,
// and a check also attributes the code it adds to a cache) and, with a
// cache directory, on disk, so that each is checked once, not at every compile or
// restart. The markers on disk are kept per version of the check and of
// wazero, so that an upgrade checks again. A marker also names the module's
// owner (the artifact's digest) and the files of compiled code its check
// added to the cache, so that prune can delete the code of artifacts that
// are gone: the cache holds tens of megabytes per module compiled from Go.
type decodedModules struct {
	dir  string // the compilation cache's directory, or ""
	code string // the folder of dir that wazero keeps compiled code in
	// mu keeps prune (a writer) from taking a check's files (checks are
	// readers) for no one's, between their move into the cache and the
	// marker that names them.
	mu sync.RWMutex
}

// decodeCheckVersion changes when what decodeCheck checks does, or what a
// marker holds.
const decodeCheckVersion = "3"

// compilingPrefix names the folders, in the cache directory, that the
// checks' children compile into.
const compilingPrefix = "compiling-"

var (
	decodedMu   sync.Mutex
	decodedSeen = map[decodedKey]bool{}
)

// decodedKey is a module that passed decodeCheck: a cache directory (or
// none) and the SHA-256 of the module.
type decodedKey struct {
	dir string
	sum [32]byte
}

// wazeroCodeDir returns the name of the folder in which wazero keeps its
// compiled code in a cache: it names it by its version and the platform.
func wazeroCodeDir(ctx context.Context, cacheDir string) (string, error) {
	probe, err := os.MkdirTemp(cacheDir, compilingPrefix)
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(probe)
	c, err := wazero.NewCompilationCacheWithDir(probe)
	if err != nil {
		return "", err
	}
	c.Close(ctx)
	entries, err := os.ReadDir(probe)
	if err != nil {
		return "", err
	}
	if len(entries) != 1 || !entries[0].IsDir() {
		return "", fmt.Errorf("wazero made %d entries in an empty cache, want its one folder", len(entries))
	}
	return entries[0].Name(), nil
}

// markerDir is the folder of the cache that holds the markers.
func (d *decodedModules) markerDir() string {
	return filepath.Join("decoded", "v"+decodeCheckVersion+"-"+d.code)
}

// marker is what a marker file holds.
type marker struct {
	Owner string   `json:"owner"`
	Files []string `json:"files"`
}

func (d *decodedModules) marker(sum [32]byte) string {
	return filepath.Join(d.dir, d.markerDir(), hex.EncodeToString(sum[:]))
}

// check runs decodeCheck on code, the module compiled for the fast or the
// safe runtime from artifact, unless artifact passed before. owner is the
// artifact's digest, or "" for none.
func (d *decodedModules) check(ctx context.Context, owner string, artifact, code []byte, safe bool) error {
	sum := sha256.Sum256(artifact)
	decodedMu.Lock()
	seen := decodedSeen[decodedKey{d.dir, sum}]
	decodedMu.Unlock()
	if seen {
		return nil
	}
	if d.dir != "" && readMarker(d.marker(sum)) != nil {
		d.remember(sum)
		return nil
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	files, err := decodeCheck(ctx, code, safe, d.dir)
	if err != nil {
		var rerr *runtime.Error
		if !safe && errors.As(err, &rerr) && rerr.Kind == runtime.BadArtifact {
			// Report what is wrong with the module as it was written,
			// not as instrument rewrote it.
			if _, origErr := decodeCheck(ctx, artifact, true, ""); origErr != nil {
				return origErr
			}
		}
		return err
	}
	d.remember(sum)
	if d.dir != "" && len(files) > 0 {
		// Best effort: without the marker, the next start checks again.
		b, _ := json.Marshal(marker{Owner: owner, Files: files})
		if os.MkdirAll(filepath.Dir(d.marker(sum)), 0o700) == nil {
			os.WriteFile(d.marker(sum), b, 0o600)
		}
	}
	return nil
}

// readMarker returns the marker at path, or nil if there is none that
// names files.
func readMarker(path string) *marker {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var m marker
	if json.Unmarshal(b, &m) != nil || len(m.Files) == 0 {
		return nil
	}
	return &m
}

func (d *decodedModules) remember(sum [32]byte) {
	decodedMu.Lock()
	decodedSeen[decodedKey{d.dir, sum}] = true
	decodedMu.Unlock()
}

func (d *decodedModules) forget(sum [32]byte) {
	decodedMu.Lock()
	delete(decodedSeen, decodedKey{d.dir, sum})
	decodedMu.Unlock()
}

// prune deletes from the cache the compiled code of the owners keep
// refuses, with their markers, and what no marker accounts for: the code
// of an older wazero, markers of older checks, and the checks' folders
// that a crash left. Markers and code written less than grace ago stay:
// their owner may be a deploy whose artifact is not stored yet. It returns
// how many bytes it freed.
func (d *decodedModules) prune(keep func(owner string) bool, grace time.Duration) (int64, error) {
	if d.dir == "" {
		return 0, nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var freed int64
	var errs []error
	remove := func(path string) {
		size := treeSize(path)
		if err := os.RemoveAll(path); err != nil {
			errs = append(errs, err)
			return
		}
		freed += size
	}
	entries, err := os.ReadDir(d.dir)
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		name := e.Name()
		older := strings.HasPrefix(name, "wazero-") && name != d.code
		if older || strings.HasPrefix(name, compilingPrefix) {
			remove(filepath.Join(d.dir, name))
		}
	}
	checks, _ := os.ReadDir(filepath.Join(d.dir, "decoded"))
	for _, c := range checks {
		if filepath.Join("decoded", c.Name()) != d.markerDir() {
			remove(filepath.Join(d.dir, "decoded", c.Name()))
		}
	}
	owned := map[string]bool{}
	markers, _ := os.ReadDir(filepath.Join(d.dir, d.markerDir()))
	recent := func(e os.DirEntry) bool {
		info, err := e.Info()
		return err == nil && time.Since(info.ModTime()) < grace
	}
	for _, mf := range markers {
		path := filepath.Join(d.dir, d.markerDir(), mf.Name())
		m := readMarker(path)
		if m != nil && (keep(m.Owner) || recent(mf)) {
			for _, f := range m.Files {
				owned[filepath.Clean(f)] = true
			}
			continue
		}
		if m != nil {
			for _, f := range m.Files {
				if filepath.IsLocal(f) {
					remove(filepath.Join(d.dir, f))
				}
			}
		}
		remove(path)
		if sum, err := hex.DecodeString(mf.Name()); err == nil && len(sum) == 32 {
			d.forget([32]byte(sum))
		}
	}
	if checksInChild {
		// Elsewhere, the code compiled in-process has no marker.
		code, _ := os.ReadDir(filepath.Join(d.dir, d.code))
		for _, f := range code {
			if rel := filepath.Join(d.code, f.Name()); !owned[rel] && !recent(f) {
				remove(filepath.Join(d.dir, rel))
			}
		}
	}
	return freed, errors.Join(errs...)
}

// treeSize is the size of the files under path.
func treeSize(path string) int64 {
	var size int64
	filepath.WalkDir(path, func(_ string, e os.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			if info, err := e.Info(); err == nil {
				size += info.Size()
			}
		}
		return nil
	})
	return size
}
