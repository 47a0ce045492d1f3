// Package wasm runs WebAssembly functions on wazero: WASI command modules,
// called as CGI is, with memory capped per instance, the deadline enforced by
// interrupting the guest, and no filesystem or network.
package wasm

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"

	"github.com/gust-faas/gust/internal/cgi"
	"github.com/gust-faas/gust/internal/runtime"
)

const pageSize = 65536

// Config configures a Runtime.
type Config struct {
	// CacheDir keeps compiled machine code across restarts. Empty keeps it
	// in memory only.
	CacheDir string
}

// Runtime compiles and runs WebAssembly modules. It is safe for concurrent use.
//
// It holds two wazero runtimes. Modules are instrumented so that the host can
// interrupt them cheaply (see instrument) and run in fast, which has no
// termination checks of its own; a module the instrumentation cannot parse
// runs in safe, whose code calls out to Go at every loop to check its
// context, and is slower.
type Runtime struct {
	fast, safe wazero.Runtime
	spares     *mappingSpares // closed instances' memory
	// snapshotBytes counts the bytes of the modules' snapshots, which
	// snapshotBudget bounds.
	snapshotBytes atomic.Int64
	decoded       *decodedModules
	wasi          map[string]bool // functions of wasi_snapshot_preview1 that wazero provides
	host          map[string]bool // functions of the gust host module
	closeFn       func(context.Context) error
}

// New returns a Runtime with WASI preview 1 and the gust host ABI available
// to guests.
func New(ctx context.Context, cfg Config) (*Runtime, error) {
	rc := wazero.NewRuntimeConfig()
	var cache wazero.CompilationCache
	if cfg.CacheDir != "" {
		c, err := wazero.NewCompilationCacheWithDir(cfg.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("wasm: compilation cache %s: %w", cfg.CacheDir, err)
		}
		cache = c
		rc = rc.WithCompilationCache(c)
	}
	decoded := &decodedModules{dir: cfg.CacheDir}
	if cfg.CacheDir != "" {
		code, err := wazeroCodeDir(ctx, cfg.CacheDir)
		if err != nil {
			cache.Close(ctx)
			return nil, fmt.Errorf("wasm: compilation cache %s: %w", cfg.CacheDir, err)
		}
		decoded.code = code
	}
	r := &Runtime{
		fast:    wazero.NewRuntimeWithConfig(ctx, rc),
		safe:    wazero.NewRuntimeWithConfig(ctx, rc.WithCloseOnContextDone(true)),
		spares:  newMappingSpares(sparesBudget),
		decoded: decoded,
	}
	r.closeFn = func(ctx context.Context) error {
		r.spares.close() // first: what the runtimes free now is unmapped
		err := errors.Join(r.fast.Close(ctx), r.safe.Close(ctx))
		if cache != nil {
			err = errors.Join(err, cache.Close(ctx))
		}
		return err
	}
	for _, rt := range []wazero.Runtime{r.fast, r.safe} {
		if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
			r.closeFn(ctx)
			return nil, fmt.Errorf("wasm: instantiate WASI: %w", err)
		}
		host, err := instantiateHost(ctx, rt)
		if err != nil {
			r.closeFn(ctx)
			return nil, fmt.Errorf("wasm: instantiate the gust host module: %w", err)
		}
		r.host = host
	}
	r.wasi = map[string]bool{}
	for name := range r.fast.Module(wasi_snapshot_preview1.ModuleName).ExportedFunctionDefinitions() {
		r.wasi[name] = true
	}
	return r, nil
}

// PruneCache deletes from the compilation cache the code of the artifacts
// whose digests keep refuses, and what belongs to no artifact (code of an
// older wazero, or of a compile a crash cut short), but what was compiled
// less than grace ago; it waits for the compiles in progress. It returns
// how many bytes it freed.
func (r *Runtime) PruneCache(keep func(digest string) bool, grace time.Duration) (int64, error) {
	return r.decoded.prune(keep, grace)
}

// Close closes every module and the runtime. Call it once, after every
// invocation has returned.
func (r *Runtime) Close(ctx context.Context) error { return r.closeFn(ctx) }

// Module is a compiled WebAssembly module, ready to be instantiated.
type Module struct {
	rt        *Runtime
	engine    wazero.Runtime // the runtime that compiled it: fast or safe
	compiled  wazero.CompiledModule
	kind      Kind
	minMemory uint64 // bytes the module needs at instantiation
	// snapshots hold the state of started reactor instances, which starts
	// later ones (see snapshot.go); nil for a module whose state they
	// cannot hold.
	snapshots *snapshots
}

// Kind says whether the module is a command or a reactor.
func (m *Module) Kind() Kind { return m.kind }

// Compile validates and compiles a module. A module that Gust cannot run
// fails with a runtime.BadArtifact error that says why. owner is the
// artifact's digest, which PruneCache keeps its compiled code by ("" for
// none: then PruneCache drops it).
func (r *Runtime) Compile(ctx context.Context, owner string, artifact []byte) (*Module, error) {
	if !bytes.HasPrefix(artifact, []byte("\x00asm")) {
		return nil, runtime.Errorf(runtime.BadArtifact, "artifact is not a WebAssembly module (it does not start with \\0asm)")
	}
	artifact, err := boundTables(artifact)
	if err != nil {
		return nil, err
	}
	engine, code := r.fast, artifact
	var snaps *snapshots
	switch instrumented, err := instrument(artifact); {
	case err == nil:
		code = instrumented.code
		if instrumented.snapshots {
			snaps = &snapshots{globals: instrumented.globals, held: &r.snapshotBytes}
		}
	case errors.Is(err, errInvalid):
		return nil, &runtime.Error{Kind: runtime.BadArtifact, Message: "invalid WebAssembly module", Err: err}
	default:
		engine = r.safe // wazero's own checks stop it, and its decoder judges it
	}
	// Compiled first in a child process with limited memory and time, and
	// into the same compilation cache: then here, from the cache.
	if err := r.decoded.check(ctx, owner, artifact, code, engine == r.safe); err != nil {
		return nil, err
	}
	compiled, err := engine.CompileModule(ctx, code)
	if err != nil {
		return nil, &runtime.Error{Kind: runtime.BadArtifact, Message: "invalid WebAssembly module", Err: err}
	}
	m := &Module{rt: r, engine: engine, compiled: compiled, snapshots: snaps}
	if err := m.validate(); err != nil {
		compiled.Close(ctx)
		return nil, err
	}
	collapseCodeSoon() // off the path of the request that waits for the module
	return m, nil
}

func (m *Module) validate() error {
	exports := m.compiled.ExportedFunctions()
	switch {
	case exports[exportHandle] != nil && exports[exportStart] != nil && exports["_initialize"] != nil:
		m.kind = Reactor
	case exports["_start"] != nil:
		m.kind = Command
	case exports[exportHandle] != nil:
		return runtime.Errorf(runtime.BadArtifact, "module exports %s but not _initialize and %s: build it with -buildmode=c-shared", exportHandle, exportStart)
	default:
		return runtime.Errorf(runtime.BadArtifact, "module exports neither _start (a WASI command: GOOS=wasip1 GOARCH=wasm go build) nor %s (a reactor: the Go SDK with -buildmode=c-shared)", exportHandle)
	}
	for _, fn := range m.compiled.ImportedFunctions() {
		mod, name, _ := fn.Import()
		ok := mod == wasi_snapshot_preview1.ModuleName && m.rt.wasi[name] || mod == hostModule && m.rt.host[name]
		if !ok {
			return runtime.Errorf(runtime.BadArtifact, "module imports %s.%s, which Gust does not provide (only %s and the gust host ABI)", mod, name, wasi_snapshot_preview1.ModuleName)
		}
	}
	if mems := m.compiled.ImportedMemories(); len(mems) > 0 {
		return runtime.Errorf(runtime.BadArtifact, "module imports a memory, which Gust does not provide")
	}
	for _, mem := range m.compiled.ExportedMemories() {
		m.minMemory = uint64(mem.Min()) * pageSize
	}
	return nil
}

// CheckMemory fails with runtime.OutOfMemory if the module needs more memory
// at start than limit bytes.
func (m *Module) CheckMemory(limit uint64) error {
	if m.minMemory > limit {
		return runtime.Errorf(runtime.OutOfMemory, "module needs %d MiB of memory to start, its limit is %d MiB", ceilMiB(m.minMemory), limit>>20)
	}
	return nil
}

func ceilMiB(b uint64) uint64 { return (b + 1<<20 - 1) >> 20 }

// Close releases the compiled code. Calling it twice is harmless.
func (m *Module) Close(ctx context.Context) error {
	if m.snapshots != nil {
		m.snapshots.drop()
	}
	return m.compiled.Close(ctx)
}

// Invocation is everything one call needs besides the request.
type Invocation struct {
	// Env holds KEY=value pairs from the function's spec; CGI variables
	// are added after them.
	Env    []string
	Limits runtime.Limits
	// Stderr receives the guest's stderr. Required.
	Stderr *runtime.StderrLog
}

// Invoke runs a fresh instance of the module for req, as a CGI program:
// headers in the environment, the body on stdin, the response on stdout.
// Failures are *runtime.Error. The instance is closed before Invoke returns.
func (m *Module) Invoke(ctx context.Context, req *runtime.Request, inv Invocation) (*runtime.Response, error) {
	if m.kind != Command {
		return nil, fmt.Errorf("wasm: Invoke runs a command module, this one is a %s: Start an instance", m.kind)
	}
	if err := m.CheckMemory(inv.Limits.MemoryBytes); err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, stopped(ctx)
	}
	mem := &limitedMemory{limit: inv.Limits.MemoryBytes, spares: m.rt.spares}
	stdout := &cappedBuffer{max: inv.Limits.MaxOutputBytes + cgi.MaxHeaderBytes}
	y := newYielder(ctx)
	cfg := wazero.NewModuleConfig().
		WithName("").
		WithStartFunctions(). // called below, under the interrupt
		WithArgs(req.Function).
		WithStdin(bytes.NewReader(req.Body)).
		WithStdout(stdout).
		WithStderr(inv.Stderr).
		WithSysWalltime().
		WithSysNanotime().
		WithRandSource(rand.Reader).
		WithOsyield(y.yield).
		WithNanosleep(y.sleep)
	for _, kv := range append(inv.Env, cgi.Env(req)...) {
		k, v, _ := strings.Cut(kv, "=")
		cfg = cfg.WithEnv(k, v)
	}
	mod, err := m.instantiate(ctx, mem, cfg)
	if err == nil {
		err = call(ctx, mod, "_start")
	}
	if mod != nil {
		mod.Close(context.WithoutCancel(ctx))
	}
	inv.Stderr.Flush()
	if err := classify(ctx, err, mem, inv.Stderr); err != nil {
		return nil, err
	}
	return parseOutput(stdout, inv.Limits.MaxOutputBytes, inv.Stderr)
}

// instantiate instantiates the module with mem as its memory. If it
// fails, mem is freed (wazero frees only the memory of a module it made),
// and a panic inside wazero (it indexes a memory that the allocator
// refused to make as large as a memory the module does not export needs)
// is an error.
func (m *Module) instantiate(ctx context.Context, mem *limitedMemory, cfg wazero.ModuleConfig) (mod api.Module, err error) {
	defer func() {
		if p := recover(); p != nil {
			mod, err = nil, fmt.Errorf("wasm: instantiating the module failed: %v", p)
		}
		if err != nil {
			mem.Free()
		}
	}()
	return m.engine.InstantiateModule(experimental.WithMemoryAllocator(ctx, mem), m.compiled, cfg)
}

// parseOutput parses the CGI response a guest wrote into out, whose body
// may take at most maxBody bytes (out holds its head too).
func parseOutput(out *cappedBuffer, maxBody int, stderr *runtime.StderrLog) (*runtime.Response, error) {
	if out.overflow {
		return nil, tooLarge(maxBody)
	}
	resp, err := cgi.ParseResponse(out.Bytes())
	if err != nil {
		return nil, &runtime.Error{Kind: runtime.BadResponse, Message: err.Error(), Stderr: stderr.Tail()}
	}
	if len(resp.Body) > maxBody {
		return nil, tooLarge(maxBody)
	}
	return resp, nil
}

func tooLarge(maxBody int) error {
	return runtime.Errorf(runtime.BadResponse, "response is larger than %d bytes", maxBody)
}

// classify turns what InstantiateModule returned into a typed error, or nil
// if the guest ran to a successful exit.
func classify(ctx context.Context, err error, mem *limitedMemory, stderr *runtime.StderrLog) error {
	if err == nil {
		return nil
	}
	var exit *sys.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 0 {
		return nil
	}
	if ctx.Err() != nil {
		return stopped(ctx)
	}
	tail := stderr.Tail()
	switch {
	case mem.refused:
		return &runtime.Error{Kind: runtime.OutOfMemory, Message: fmt.Sprintf("needed more than its %d MiB of memory", mem.limit>>20), Stderr: tail}
	case exit != nil:
		return &runtime.Error{Kind: runtime.Crashed, Message: fmt.Sprintf("exited with code %d", exit.ExitCode()), Stderr: tail}
	default:
		msg, _, _ := strings.Cut(err.Error(), "\n")
		return &runtime.Error{Kind: runtime.Crashed, Message: "trapped: " + strings.TrimPrefix(msg, "wasm error: "), Stderr: tail, Err: err}
	}
}

// call calls the exported function name of mod. It stops at ctx's end: an
// instrumented module when it next yields (see yielder), one in the safe
// runtime by wazero's own checks.
func call(ctx context.Context, mod api.Module, name string) error {
	fn := mod.ExportedFunction(name)
	if fn == nil {
		return fmt.Errorf("wasm: module exports no %s", name)
	}
	_, err := fn.Call(ctx)
	return err
}

// yielder is an instance's view of the call it is running: its sleeps end,
// and its yields (sched_yield, which instrument makes every loop call now
// and then) stop the guest, when the call's context is done.
type yielder struct {
	ctx atomic.Pointer[context.Context]
}

func newYielder(ctx context.Context) *yielder {
	y := &yielder{}
	y.set(ctx)
	return y
}

func (y *yielder) set(ctx context.Context) { y.ctx.Store(&ctx) }

func (y *yielder) sleep(ns int64) { runtime.SleepUntilDone(*y.ctx.Load(), time.Duration(ns)) }

// errStopped unwinds a guest from inside sched_yield once its context is done.
var errStopped = errors.New("stopped at the end of its context")

func (y *yielder) yield() {
	if (*y.ctx.Load()).Err() != nil {
		panic(errStopped)
	}
}

func stopped(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return &runtime.Error{Kind: runtime.Timeout, Message: "stopped at its deadline", Err: context.DeadlineExceeded}
	}
	return &runtime.Error{Kind: runtime.Timeout, Message: "cancelled", Err: ctx.Err()}
}

// cappedBuffer keeps at most max bytes and fails writes past that.
type cappedBuffer struct {
	bytes.Buffer
	max      int
	overflow bool
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	if c.Len()+len(p) > c.max {
		c.overflow = true
		return 0, io.ErrShortWrite
	}
	return c.Buffer.Write(p)
}
