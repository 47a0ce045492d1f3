package wasm

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// forgetChecks makes this process forget which modules passed their
// check, as a restarted server has: other tests compiled the same
// fixtures, and a module checked before is not checked again, nor its
// compiled code attributed.
func forgetChecks(t *testing.T) {
	t.Helper()
	decodedMu.Lock()
	clear(decodedSeen)
	decodedMu.Unlock()
}

// cacheFiles lists the files under dir, relative to it.
func cacheFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(path string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			rel, _ := filepath.Rel(dir, path)
			out = append(out, rel)
		}
		return nil
	})
	return out
}

func compileInto(t *testing.T, dir, owner string, artifact []byte) {
	t.Helper()
	ctx := context.Background()
	rt, err := New(ctx, Config{CacheDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close(ctx)
	m, err := rt.Compile(ctx, owner, artifact)
	if err != nil {
		t.Fatal(err)
	}
	m.Close(ctx)
}

// TestPruneCache: the compilation cache keeps the code of the artifacts
// still stored, and loses that of the others, of an older wazero, of
// checks a crash cut short, and what no artifact owns; a marker cannot
// make it delete anything outside the cache.
func TestPruneCache(t *testing.T) {
	forgetChecks(t)
	root := t.TempDir()
	dir := filepath.Join(root, "cache")
	compileInto(t, dir, "sha256:kept", guestWasm)
	compileInto(t, dir, "sha256:gone", reactorWasm)
	rtCode, err := wazeroCodeDir(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	code := func() []string {
		var out []string
		for _, f := range cacheFiles(t, dir) {
			if filepath.Dir(f) == rtCode {
				out = append(out, f)
			}
		}
		return out
	}
	if n := len(code()); n != 2 {
		t.Fatalf("after compiling two modules, the cache holds %d files of code, want 2: %v", n, cacheFiles(t, dir))
	}
	// A restarted server (this process, forgetting) finds both compiled:
	// nothing is compiled again.
	forgetChecks(t)
	before := code()
	compileInto(t, dir, "sha256:kept", guestWasm)
	if after := code(); !slices.Equal(before, after) {
		t.Fatalf("compiling again changed the cache's code from %v to %v", before, after)
	}

	junk := map[string]string{
		"wazero-v0.0.1-amd64-linux/old":        "code of an older wazero",
		"compiling-123/" + rtCode + "/partial": "a check a crash cut short",
		"decoded/v1-wazero-v0.0.1/00":          "",
		rtCode + "/orphan":                     "code of no artifact",
	}
	for path, content := range junk {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, path)), 0o700)
		os.WriteFile(filepath.Join(dir, path), []byte(content), 0o600)
	}
	// A marker that names a file outside the cache.
	outside := filepath.Join(root, "outside")
	os.WriteFile(outside, []byte("not the cache's"), 0o600)
	hostile, _ := json.Marshal(marker{Owner: "sha256:hostile", Files: []string{"../outside", outside}})
	os.WriteFile(filepath.Join(dir, "decoded", "v"+decodeCheckVersion+"-"+rtCode, "ff"), hostile, 0o600)

	rt, err := New(context.Background(), Config{CacheDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close(context.Background())
	keep := func(digest string) bool { return digest == "sha256:kept" }
	// Within the grace, nothing of an owner goes.
	if _, err := rt.PruneCache(keep, time.Hour); err != nil {
		t.Fatal(err)
	}
	if n := len(code()); n != 3 {
		t.Errorf("a prune with an hour's grace left %d files of code, want the 3 just written: %v", n, code())
	}
	freed, err := rt.PruneCache(keep, 0)
	if err != nil {
		t.Fatal(err)
	}
	if freed < 1<<20 {
		t.Errorf("the prune freed %d bytes, want the megabytes of a module's code", freed)
	}
	left := cacheFiles(t, dir)
	if len(left) != 2 || len(code()) != 1 {
		t.Errorf("after the prune the cache holds %v, want the kept module's code and its marker", left)
	}
	if b, err := os.ReadFile(outside); err != nil || string(b) != "not the cache's" {
		t.Errorf("a marker naming a file outside the cache had it deleted or changed: %q, %v", b, err)
	}
	// The pruned module compiles again, from scratch, and is owned again.
	compileInto(t, dir, "sha256:gone", reactorWasm)
	if n := len(code()); n != 2 {
		t.Errorf("after compiling the pruned module again, %d files of code, want 2", n)
	}
}
