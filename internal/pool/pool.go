// Package pool keeps, on each node, what every function version needs to
// run: its artifact fetched and compiled once (keyed by digest), and the
// limits of each invocation. It knows nothing of HTTP or tenants.
package pool

import (
	"context"

	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/gust-faas/gust/internal/registry"
	"github.com/gust-faas/gust/internal/runtime"
	"github.com/gust-faas/gust/internal/runtime/wasm"
)

// MaxResponseBytes bounds a function's response body, as Lambda's 6 MB does.
const MaxResponseBytes = 6 << 20

// maxStderrLines bounds how many stderr lines one invocation may log.
const maxStderrLines = 200

// Artifacts fetches an artifact by digest.
type Artifacts interface {
	Get(ctx context.Context, digest string) ([]byte, error)
}

// Secrets resolves the values of a tenant's secrets.
type Secrets interface {
	Resolve(tenant string, names []string) (map[string]string, error)
}

// Deps are what a Pool needs.
type Deps struct {
	Runtime   *wasm.Runtime
	Artifacts Artifacts
	// Secrets may be nil if no function uses secrets.
	Secrets Secrets
	Logger  *slog.Logger
}

// Pool compiles modules on demand and runs invocations. It is safe for
// concurrent use.
type Pool struct {
	rt        *wasm.Runtime
	artifacts Artifacts
	secrets   Secrets
	log       *slog.Logger

	mu      sync.Mutex
	modules map[string]*module // by digest
}

// module is one compiled artifact, shared by every version that runs it.
type module struct {
	ready    chan struct{} // closed once mod or err is set
	mod      *wasm.Module
	err      error
	inflight int
	dropped  bool // no longer in the map; close when inflight reaches 0
}

// New returns a Pool.
func New(deps Deps) *Pool {
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Pool{rt: deps.Runtime, artifacts: deps.Artifacts, secrets: deps.Secrets, log: log, modules: map[string]*module{}}
}

// Check compiles artifact and checks it fits spec's limits; the compiled
// module is kept for the version's invocations. It implements
// registry.Checker.
func (p *Pool) Check(ctx context.Context, spec registry.Spec, digest string, artifact []byte) error {
	m, err := p.acquire(ctx, digest, func(context.Context) ([]byte, error) { return artifact, nil })
	if err != nil {
		return err
	}
	defer p.release(digest, m)
	return m.mod.CheckMemory(memoryBytes(spec))
}

// Prepare fetches and compiles digest ahead of its first request.
func (p *Pool) Prepare(ctx context.Context, digest string) error {
	m, err := p.acquire(ctx, digest, p.fetch(digest))
	if err != nil {
		return err
	}
	p.release(digest, m)
	return nil
}

// Retain closes the compiled modules whose digest is not in keep, once
// their invocations have returned.
func (p *Pool) Retain(keep map[string]bool) {
	p.mu.Lock()
	var idle []*module
	for d, m := range p.modules {
		if keep[d] {
			continue
		}
		delete(p.modules, d)
		m.dropped = true
		if m.inflight == 0 {
			idle = append(idle, m)
		}
	}
	p.mu.Unlock()
	for _, m := range idle {
		closeModule(m)
	}
}

// Digests returns the digests of the compiled modules the pool holds.
func (p *Pool) Digests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Sorted(maps.Keys(p.modules))
}

// Close closes every compiled module. In-flight invocations must have
// returned. Calling it twice is harmless.
func (p *Pool) Close() {
	p.Retain(nil)
}

// Invoke runs req on version v under v's timeout and memory limit. The
// guest's stderr goes to log. Failures are *runtime.Error, or an error
// fetching or compiling the artifact.
func (p *Pool) Invoke(ctx context.Context, v registry.Version, req *runtime.Request, log *slog.Logger) (*runtime.Response, error) {
	var secrets map[string]string
	if len(v.Spec.Secrets) > 0 {
		if p.secrets == nil {
			return nil, fmt.Errorf("pool: function %s uses secrets, and this node has no secret store", req.Function)
		}
		var err error
		if secrets, err = p.secrets.Resolve(req.Tenant, v.Spec.Secrets); err != nil {
			return nil, err
		}
	}
	m, err := p.acquire(ctx, v.Digest, p.fetch(v.Digest))
	if err != nil {
		return nil, err
	}
	defer p.release(v.Digest, m)
	ctx, cancel := context.WithTimeout(ctx, time.Duration(v.Spec.Timeout))
	defer cancel()
	return m.mod.Invoke(ctx, req, wasm.Invocation{
		Env: env(v, req, secrets),
		Limits: runtime.Limits{
			MemoryBytes:    memoryBytes(v.Spec),
			MaxOutputBytes: MaxResponseBytes,
		},
		Stderr: runtime.NewStderrLog(log, maxStderrLines),
	})
}

func memoryBytes(s registry.Spec) uint64 { return uint64(s.MemoryMB) << 20 }

// env is the spec's environment, the function's secrets and Gust's own
// variables.
func env(v registry.Version, req *runtime.Request, secrets map[string]string) []string {
	out := make([]string, 0, len(v.Spec.Env)+len(secrets)+5)
	for _, k := range slices.Sorted(maps.Keys(v.Spec.Env)) {
		out = append(out, k+"="+v.Spec.Env[k])
	}
	for _, k := range slices.Sorted(maps.Keys(secrets)) {
		out = append(out, k+"="+secrets[k])
	}
	return append(out,
		"GUST_TENANT="+req.Tenant,
		"GUST_FUNCTION="+req.Function,
		"GUST_FUNCTION_VERSION="+strconv.Itoa(v.Number),
		"GUST_INVOCATION_ID="+req.InvocationID,
		"GUST_MEMORY_MB="+strconv.Itoa(v.Spec.MemoryMB),
	)
}

func (p *Pool) fetch(digest string) func(context.Context) ([]byte, error) {
	return func(ctx context.Context) ([]byte, error) { return p.artifacts.Get(ctx, digest) }
}

// acquire returns the compiled module for digest, compiling what load
// returns if no other call has; one compile runs per digest at a time. The
// caller must release it.
func (p *Pool) acquire(ctx context.Context, digest string, load func(context.Context) ([]byte, error)) (*module, error) {
	p.mu.Lock()
	m, ok := p.modules[digest]
	if !ok {
		m = &module{ready: make(chan struct{})}
		p.modules[digest] = m
	}
	m.inflight++
	p.mu.Unlock()
	if !ok {
		m.mod, m.err = p.compile(ctx, digest, load)
		if m.err != nil {
			p.mu.Lock()
			if p.modules[digest] == m {
				delete(p.modules, digest) // let a later call try again
			}
			p.mu.Unlock()
		}
		close(m.ready)
	}
	select {
	case <-m.ready:
	case <-ctx.Done():
		p.release(digest, m)
		return nil, ctx.Err()
	}
	if m.err != nil {
		p.release(digest, m)
		return nil, m.err
	}
	return m, nil
}

func (p *Pool) compile(ctx context.Context, digest string, load func(context.Context) ([]byte, error)) (*wasm.Module, error) {
	start := time.Now()
	artifact, err := load(ctx)
	if err != nil {
		return nil, fmt.Errorf("pool: fetch artifact %s: %w", digest, err)
	}
	mod, err := p.rt.Compile(ctx, artifact)
	if err != nil {
		return nil, err
	}
	p.log.Debug("module compiled", "digest", digest, "took", time.Since(start))
	return mod, nil
}

func (p *Pool) release(digest string, m *module) {
	p.mu.Lock()
	m.inflight--
	last := m.dropped && m.inflight == 0
	p.mu.Unlock()
	if last {
		closeModule(m)
	}
}

func closeModule(m *module) {
	<-m.ready
	if m.mod != nil {
		m.mod.Close(context.Background())
	}
}

var _ registry.Checker = (*Pool)(nil)
