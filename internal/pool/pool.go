// Package pool keeps, on each node, the instances of every function version:
// a warm instance serves request after request; a request that finds none
// starts one (a cold start) up to the version's max_instances, then waits
// in a bounded queue; idle instances stop after idle_ttl, down to
// min_instances; a faulted instance is thrown away. It also prepares each
// artifact once (compiles a module, unpacks a bundle), in the sandbox its
// spec's runtime names. It knows nothing of HTTP, tenants' rights, or what
// a sandbox is made of.
package pool

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/gust-faas/gust/internal/deadline"
	"github.com/gust-faas/gust/internal/registry"
	"github.com/gust-faas/gust/internal/runtime"
)

// MaxResponseBytes bounds a function's response body, as Lambda's 6 MB does.
const MaxResponseBytes = 6 << 20

// scaleEvery is how often the scaling loop looks at every version.
const scaleEvery = time.Second

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
	// Sandboxes run the functions, by the spec's runtime name.
	Sandboxes map[string]runtime.Sandbox
	// Unavailable says, by runtime name, why this node cannot run a
	// runtime it knows of.
	Unavailable map[string]string
	Artifacts   Artifacts
	// Secrets may be nil if no function uses secrets.
	Secrets Secrets
	Logger  *slog.Logger
}

// Target is one version of one function.
type Target struct {
	Tenant   string
	Function string
	Version  registry.Version
}

// targetKey names a Target's pool. A version number alone does not name a
// version: a function deleted and deployed again, or a tenant deleted and
// created again, starts over at version 1, with other code and settings,
// while the old version's pool may still be draining. The digest and the
// time the version was recorded tell them apart. A struct, not a string
// built from them, so that finding a pool allocates nothing.
type targetKey struct {
	tenant, function, digest string
	number                   int
	created                  int64
}

// String names the version as runtime.Config.Owner does.
func (k targetKey) String() string {
	return fmt.Sprintf("%s/%s@%d/%s/%d", k.tenant, k.function, k.number, k.digest, k.created)
}

func (t Target) key() targetKey {
	return targetKey{tenant: t.Tenant, function: t.Function, digest: t.Version.Digest, number: t.Version.Number, created: t.Version.Created.UnixNano()}
}

// Pool holds the instances of every version on this node. It is safe for
// concurrent use.
type Pool struct {
	sandboxes   map[string]runtime.Sandbox
	unavailable map[string]string
	artifacts   Artifacts
	secrets     Secrets
	log         *slog.Logger
	now         func() time.Time

	mu       sync.Mutex
	modules  map[moduleKey]*module
	versions map[targetKey]*versionPool
	active   map[targetKey]bool // keys of the last Sync
	closed   bool
	synced   bool           // Sync was called: what it makes active later is deployed
	syncs    sync.WaitGroup // Sync's goroutines, which Close cancels and waits for
	closing  sync.WaitGroup // closes of discarded instances, which Close waits for
	// preparing counts the preparations of modules, which Close cancels
	// and waits for: a compile that went on would use the runtime after
	// its owner closed it.
	preparing sync.WaitGroup

	background context.Context // Sync's work; Close cancels it
	cancel     context.CancelFunc
}

// New returns a Pool. Run its scaling loop with Run.
func New(deps Deps) *Pool {
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	background, cancel := context.WithCancel(context.Background())
	return &Pool{
		sandboxes: deps.Sandboxes, unavailable: deps.Unavailable, artifacts: deps.Artifacts, secrets: deps.Secrets, log: log, now: time.Now,
		modules: map[moduleKey]*module{}, versions: map[targetKey]*versionPool{},
		background: background, cancel: cancel,
	}
}

// Outcome says how an invocation was served.
type Outcome struct {
	// Cold is set when the invocation started its instance.
	Cold bool
	// Init is how long starting the instance took.
	Init time.Duration
	// Queued is how long the invocation waited for a free instance.
	Queued time.Duration
}

// BusyError is a request turned away because every instance is busy and the
// queue is full, or the wait for an instance outlasted the request's deadline.
type BusyError struct {
	MaxInstances, MaxQueue int
	Waited                 bool
}

func (e *BusyError) Error() string {
	if e.Waited {
		return fmt.Sprintf("no instance became free before the request's deadline (max_instances %d)", e.MaxInstances)
	}
	return fmt.Sprintf("all %d instances are busy and %d requests are queued", e.MaxInstances, e.MaxQueue)
}

// Invoke runs req on an instance of t under t's timeout and memory limit.
// Failures are *runtime.Error, *BusyError, *PreparingError, or an error fetching,
// compiling or configuring the function.
func (p *Pool) Invoke(ctx context.Context, t Target, req *runtime.Request, log *slog.Logger) (*runtime.Response, Outcome, error) {
	// Its timer is made only if something waits for it: a warm wasm
	// instance checks the clock instead.
	dl := deadline.New(ctx, time.Duration(t.Version.Spec.Timeout))
	defer dl.Release()
	ctx = dl
	secrets, fp, err := p.resolveSecrets(t)
	if err != nil {
		return nil, Outcome{}, err
	}
	var (
		vp   *versionPool
		inst *instance
		out  Outcome
	)
	for {
		if vp, err = p.version(ctx, t); err != nil {
			return nil, Outcome{}, err
		}
		inst, out, err = vp.acquire(ctx, secrets, fp)
		if !errors.Is(err, errRetired) {
			break
		}
		// The scaling loop retired this version's pool just now; the next
		// lookup makes a new one.
	}
	if err != nil {
		return nil, out, err
	}
	resp, err := inst.sandbox.Invoke(ctx, req, log)
	// Any failure throws the instance away: a guest that wrote a bad
	// response may be in a bad state too.
	vp.release(inst, err != nil)
	return resp, out, err
}

// resolveSecrets returns the values of t's secrets and a fingerprint of
// them, so that instances started with older values can be replaced.
func (p *Pool) resolveSecrets(t Target) (map[string]string, string, error) {
	names := t.Version.Spec.Secrets
	if len(names) == 0 {
		return nil, "", nil
	}
	if p.secrets == nil {
		return nil, "", fmt.Errorf("pool: function %s uses secrets, and this node has no secret store", t.Function)
	}
	values, err := p.secrets.Resolve(t.Tenant, names)
	if err != nil {
		return nil, "", err
	}
	h := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(values)) {
		fmt.Fprintf(h, "%d:%s%d:%s", len(k), k, len(values[k]), values[k])
	}
	return values, string(h.Sum(nil)), nil
}

// errClosed is returned by a Pool that was closed.
var errClosed = errors.New("pool: closed")

// version returns the pool of t, creating it if needed (active if the last
// Sync named t). It holds a reference to t's prepared artifact.
func (p *Pool) version(ctx context.Context, t Target) (*versionPool, error) {
	k := t.key()
	p.mu.Lock()
	vp, closed := p.versions[k], p.closed
	p.mu.Unlock()
	if closed {
		return nil, errClosed
	}
	if vp != nil {
		return vp, nil
	}
	m, err := p.acquire(ctx, t.Version.Spec.Runtime, t.Version.Digest, p.fetch(t.Version.Digest))
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		go p.release(t.Version.Digest, m)
		return nil, errClosed
	}
	if vp := p.versions[k]; vp != nil {
		go p.release(t.Version.Digest, m)
		return vp, nil
	}
	vp = newVersionPool(p, t, m, p.active[k])
	p.versions[k] = vp
	return vp, nil
}

// Sync makes active exactly the given versions: their pools keep
// min_instances warm and their idle instances live for idle_ttl. Every other
// version is drained: its idle instances stop now, its busy ones when they
// finish, and a later request to it starts an instance that stops right
// after. Sync returns at once; instances start in the background.
func (p *Pool) Sync(active []Target) {
	want := map[targetKey]Target{}
	keys := map[targetKey]bool{}
	for _, t := range active {
		want[t.key()] = t
		keys[t.key()] = true
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	// What a deploy makes active starts once ahead of its first request
	// (see warmStart); not what a node finds active at its start.
	deployed := map[targetKey]bool{}
	if p.synced {
		for k := range keys {
			deployed[k] = !p.active[k]
		}
	}
	p.synced = true
	p.active = keys
	existing := maps.Clone(p.versions)
	p.syncs.Add(len(want))
	p.mu.Unlock()
	for k, vp := range existing {
		if !keys[k] {
			vp.setActive(false)
		}
	}
	for k, t := range want {
		go func() {
			defer p.syncs.Done()
			vp, err := p.version(p.background, t)
			if errors.Is(err, errClosed) || p.background.Err() != nil {
				return
			}
			if err != nil {
				p.log.Warn("could not prepare function", "tenant", t.Tenant, "function", t.Function, "version", t.Version.Number, "err", err)
				return
			}
			// A later Sync may have drained t while this one prepared it.
			p.mu.Lock()
			still := p.active[k] && !p.closed
			p.mu.Unlock()
			if still {
				vp.setActive(true)
				p.scaleOne(vp)
				if deployed[k] {
					vp.warmStart()
				}
			}
		}()
	}
}

// Run scales every version every second, until ctx is done.
func (p *Pool) Run(ctx context.Context) {
	tick := time.NewTicker(scaleEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			p.scaleAll()
		}
	}
}

func (p *Pool) scaleAll() {
	p.mu.Lock()
	vps := slices.Collect(maps.Values(p.versions))
	p.mu.Unlock()
	for _, vp := range vps {
		if !p.scaleOne(vp) {
			continue
		}
		// Retire the pool only if it is still inactive and empty, and in the
		// same step as taking it out of the map: a request or a Sync may
		// have reached it since.
		p.mu.Lock()
		retired := p.versions[vp.target.key()] == vp && !p.active[vp.target.key()] && vp.retire()
		if retired {
			delete(p.versions, vp.target.key())
		}
		p.mu.Unlock()
		if retired {
			vp.close()
		}
	}
}

// scaleOne applies the scaling decision to vp and reports whether vp is an
// empty, inactive pool that can go.
func (p *Pool) scaleOne(vp *versionPool) bool {
	policy, state := vp.snapshot()
	d := Decide(policy, state, p.now())
	vp.apply(d)
	return !policy.Active && state.total() == 0 && state.Waiting == 0
}

// Stats describes a version's instances on this node.
type Stats struct {
	Idle     int `json:"idle"`
	Busy     int `json:"busy"`
	Starting int `json:"starting"`
	Queued   int `json:"queued"`
}

// Stats returns the instances of each version of a function on this node.
func (p *Pool) Stats(tenant, function string) map[int]Stats {
	p.mu.Lock()
	vps := slices.Collect(maps.Values(p.versions))
	p.mu.Unlock()
	out := map[int]Stats{}
	for _, vp := range vps {
		if vp.target.Tenant == tenant && vp.target.Function == function {
			// A version deleted and recorded again under its number may
			// have its old pool still draining: both count.
			_, s := vp.snapshot()
			sum := out[vp.target.Version.Number]
			out[vp.target.Version.Number] = Stats{Idle: sum.Idle + len(s.Idle), Busy: sum.Busy + s.Busy, Starting: sum.Starting + s.Starting, Queued: sum.Queued + s.Waiting}
		}
	}
	return out
}

// Retain closes the prepared artifacts whose digest is not in keep, once
// nothing uses them.
func (p *Pool) Retain(keep map[string]bool) {
	p.mu.Lock()
	var idle []*module
	for k, m := range p.modules {
		if keep[k.digest] {
			continue
		}
		delete(p.modules, k)
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

// Close stops every instance and closes every prepared artifact. Invocations
// must have returned. Calling it twice is harmless.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	p.syncs.Wait()
	p.mu.Lock()
	vps := p.versions
	p.versions = map[targetKey]*versionPool{}
	p.mu.Unlock()
	for _, vp := range vps {
		vp.close()
	}
	p.closing.Wait()
	p.preparing.Wait()
	p.Retain(nil)
}

// Check prepares artifact and checks it can run under spec; the prepared
// module is kept for the version's invocations. It implements
// registry.Checker.
func (p *Pool) Check(ctx context.Context, spec registry.Spec, digest string, artifact []byte) error {
	m, err := p.acquire(ctx, spec.Runtime, digest, func(context.Context) ([]byte, error) { return artifact, nil })
	if err != nil {
		return err
	}
	err = m.prep.Check(config(spec, nil, nil))
	if err != nil {
		// Refused: unless a version runs it, let it go now rather than
		// when a function is removed.
		p.mu.Lock()
		if k := (moduleKey{kind: spec.Runtime, digest: digest}); m.inflight == 1 && p.modules[k] == m {
			delete(p.modules, k)
			m.dropped = true
		}
		p.mu.Unlock()
	}
	p.release(digest, m)
	return err
}

// config is what the instances of a version with spec share.
func config(spec registry.Spec, env []string, stderr *runtime.StderrLog) runtime.Config {
	return runtime.Config{
		Env:    env,
		Limits: runtime.Limits{MemoryBytes: uint64(spec.MemoryMB) << 20, MaxOutputBytes: MaxResponseBytes},
		Stderr: stderr,
		Process: runtime.Process{
			Command:     spec.Command,
			Protocol:    spec.Protocol,
			Network:     spec.Network == registry.NetworkHost,
			ContentType: spec.ContentType,
			InitTimeout: time.Duration(spec.InitTimeout),
			Concurrency: spec.Concurrency,
		},
	}
}

// env is the spec's environment, the function's secrets and Gust's own
// variables.
func env(t Target, secrets map[string]string) []string {
	spec := t.Version.Spec
	out := make([]string, 0, len(spec.Env)+len(secrets)+4)
	for _, k := range slices.Sorted(maps.Keys(spec.Env)) {
		out = append(out, k+"="+spec.Env[k])
	}
	for _, k := range slices.Sorted(maps.Keys(secrets)) {
		out = append(out, k+"="+secrets[k])
	}
	return append(out,
		"GUST_TENANT="+t.Tenant,
		"GUST_FUNCTION="+t.Function,
		"GUST_FUNCTION_VERSION="+strconv.Itoa(t.Version.Number),
		"GUST_MEMORY_MB="+strconv.Itoa(spec.MemoryMB),
	)
}

var _ registry.Checker = (*Pool)(nil)
