package wasm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gust-faas/gust/internal/runtime"
	"github.com/tetratelabs/wazero"
)

// wazero's decoder sizes what it allocates by the counts a module states
// (of imports, segments, locals, bytes of a name...) before it reads the
// elements, so a module of fifteen bytes that states four billion data
// segments makes it allocate hundreds of gigabytes, and the Go runtime ends
// the whole server ("out of memory" cannot be recovered); its compiler,
// too, can need gigabytes and minutes for a small module (a br_table of a
// million targets). Modules come from tenants, so Gust compiles each new
// one first in a child process (the Gust binary executed again as
// decodeCheckArg) with the server's own configuration and compilation
// cache, under limits of memory and time: a module that needs more is
// refused, the server stays up, and then loads the child's work from the
// cache.

// decodeCheckArg is argv[1] of the child process; argv[2] is "fast" or
// "safe" (the runtime it compiles for), argv[3] the cache directory or "".
const decodeCheckArg = "gust-wasm-decode-check"

// The child may use its address space at start plus decodeCheckBase plus
// decodeCheckPerByte for each byte of the module: wazero's compiler needs
// about 13 bytes per byte of a module compiled from Go, its interpreter 22.
const (
	decodeCheckBase    = 1 << 30
	decodeCheckPerByte = 24
)

// The child may take decodeCheckTime plus decodeCheckTimePerMiB for each
// MiB of the module: a Go module of 38 MiB compiles in 15 s here, a tenth of
// what it is allowed.
var (
	decodeCheckTime       = 10 * time.Second // a variable for tests
	decodeCheckTimePerMiB = 2 * time.Second
)

// decodeCheckSlots bounds the children running at once: each may use
// gigabytes.
var decodeCheckSlots = make(chan struct{}, 2)

func init() {
	if len(os.Args) > 3 && os.Args[1] == decodeCheckArg {
		os.Exit(runDecodeCheck(os.Args[2], os.Args[3]))
	}
}

// runDecodeCheck is the child: it reads a module on stdin and compiles it
// as the server would, and exits 0, or 1 with the reason on stderr. An
// allocation past its limit ends it otherwise (exit 2).
func runDecodeCheck(mode, cacheDir string) int {
	// If memory runs out on the host, this process goes first.
	os.WriteFile("/proc/self/oom_score_adj", []byte("1000"), 0)
	module, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "read the module: %v", err)
		return 3
	}
	if err := limitAddressSpace(decodeCheckBase + decodeCheckPerByte*uint64(len(module))); err != nil {
		fmt.Fprintf(os.Stderr, "limit the address space: %v", err)
		return 3
	}
	ctx := context.Background()
	rc := wazero.NewRuntimeConfig().WithCloseOnContextDone(mode == "safe")
	if cacheDir != "" {
		cache, err := wazero.NewCompilationCacheWithDir(cacheDir)
		if err != nil {
			fmt.Fprintf(os.Stderr, "compilation cache: %v", err)
			return 3
		}
		rc = rc.WithCompilationCache(cache)
	}
	if _, err := wazero.NewRuntimeWithConfig(ctx, rc).CompileModule(ctx, module); err != nil {
		fmt.Fprint(os.Stderr, err)
		return 1
	}
	return 0
}

// limitAddressSpace lets this process grow by budget bytes of address
// space from what it uses now (a Go runtime reserves much before it
// allocates), never past the hard limit it was given.
func limitAddressSpace(budget uint64) error {
	statm, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return err
	}
	pages, err := strconv.ParseUint(strings.Fields(string(statm))[0], 10, 64)
	if err != nil {
		return err
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_AS, &lim); err != nil {
		return err
	}
	lim.Cur = min(pages*uint64(os.Getpagesize())+budget, lim.Max)
	return syscall.Setrlimit(syscall.RLIMIT_AS, &lim)
}

// checksInChild says that decodeCheck compiles in a child process, which
// reports the files of compiled code it added to the cache.
const checksInChild = true

// decodeCheck compiles module for the fast or the safe runtime (safe) in a
// child process, into cacheDir if not empty, and returns the files of
// compiled code it added there (paths relative to cacheDir): the child
// compiles into a folder of its own, whose files are then moved into the
// cache, so that each is known to be this module's. A module that is
// invalid, or that needs more memory or time than the child has, is a
// runtime.BadArtifact error; another error says the check could not be
// made. The caller's cancellation ends its wait for a slot, not a check
// that has started, which is bounded by its own timeout: its time counts
// from its start, not from when it was asked for, so that a module
// checked while others are is not refused for their time.
func decodeCheck(ctx context.Context, module []byte, safe bool, cacheDir string) ([]string, error) {
	mode := "fast"
	if safe {
		mode = "safe"
	}
	select {
	case decodeCheckSlots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("wasm: the module could not be checked: waiting for other modules' checks: %w", context.Cause(ctx))
	}
	defer func() { <-decodeCheckSlots }()
	timeout := decodeCheckTime + decodeCheckTimePerMiB*time.Duration(len(module)>>20)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	childCache := ""
	if cacheDir != "" {
		dir, err := os.MkdirTemp(cacheDir, compilingPrefix)
		if err != nil {
			return nil, fmt.Errorf("wasm: the module could not be checked: %w", err)
		}
		defer os.RemoveAll(dir)
		childCache = dir
	}
	// The running binary, even if the file was replaced since it started.
	cmd := exec.CommandContext(ctx, "/proc/self/exe", decodeCheckArg, mode, childCache)
	cmd.Stdin = bytes.NewReader(module)
	var stderr bytes.Buffer
	cmd.Stderr = &limitedWriter{w: &stderr, n: 4 << 10}
	cmd.Env = []string{"GOMAXPROCS=1", "GOTRACEBACK=none"}
	err := cmd.Run()
	refused := func(why string) error {
		if len(why) > 300 {
			why = why[:300] + "..."
		}
		return runtime.Errorf(runtime.BadArtifact, "invalid WebAssembly module: %s", why)
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		if childCache == "" {
			return nil, nil
		}
		// Without the files, the module still compiles here: from
		// scratch, into the cache, and owned by no one.
		files, _ := adoptCompiled(childCache, cacheDir)
		return files, nil
	case ctx.Err() != nil:
		return nil, refused(fmt.Sprintf("compiling it takes longer than %s", timeout))
	case errors.As(err, &exit) && exit.ExitCode() == 1:
		return nil, refused(strings.TrimSpace(stderr.String()))
	case errors.As(err, &exit) && exit.ExitCode() == 2:
		// A fatal error of the Go runtime: out of memory, most often.
		return nil, refused(fmt.Sprintf("compiling it needs more than %d MiB of memory, or crashed the compiler", (decodeCheckBase+decodeCheckPerByte*len(module))>>20))
	}
	// Killed by a signal (the host's OOM killer), or could not start.
	return nil, fmt.Errorf("wasm: the module could not be checked: %v: %s", err, strings.TrimSpace(stderr.String()))
}

// adoptCompiled moves the files of compiled code from the child's cache
// folder into the cache at the same place (wazero keeps them in a folder
// per wazero version, platform included), and returns their paths
// relative to the cache.
func adoptCompiled(childCache, cacheDir string) ([]string, error) {
	dirs, err := os.ReadDir(childCache)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		entries, err := os.ReadDir(filepath.Join(childCache, d.Name()))
		if err != nil {
			return files, err
		}
		for _, e := range entries {
			if !e.Type().IsRegular() || strings.HasSuffix(e.Name(), ".tmp") {
				continue // one wazero was still writing: the child failed
			}
			rel := filepath.Join(d.Name(), e.Name())
			if err := os.MkdirAll(filepath.Join(cacheDir, d.Name()), 0o700); err != nil {
				return files, err
			}
			if err := os.Rename(filepath.Join(childCache, rel), filepath.Join(cacheDir, rel)); err != nil {
				return files, err
			}
			files = append(files, rel)
		}
	}
	return files, nil
}

// limitedWriter keeps the first n bytes written to it.
type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := min(len(p), l.n)
		l.w.Write(p[:k])
		l.n -= k
	}
	return len(p), nil
}
