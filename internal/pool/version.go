package pool

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/gust-faas/gust/internal/registry"
	"github.com/gust-faas/gust/internal/runtime"
)

// versionPool holds the instances of one function version.
type versionPool struct {
	p      *Pool
	target Target
	mod    *module

	mu        sync.Mutex
	policy    Policy
	idle      []*instance // most recently used last
	busy      int
	starting  int
	closing   int          // discarded instances still closing: they count against Max and keep the module
	waiters   []chan grant // FIFO
	secretsFP string       // fingerprint of the secrets new instances get
	closed    bool
	released  bool // the module reference is given back
}

// instance is one sandbox instance of a version.
type instance struct {
	sandbox   runtime.Instance
	served    int
	lastUsed  time.Time
	secretsFP string
}

// grant hands a waiting request an instance, or the right to start one.
type grant struct {
	inst  *instance
	start bool
}

func newVersionPool(p *Pool, t Target, m *module, active bool) *versionPool {
	return &versionPool{p: p, target: t, mod: m, policy: policyOf(t.Version.Spec, active)}
}

func (vp *versionPool) setActive(active bool) {
	vp.mu.Lock()
	vp.policy.Active = active
	vp.mu.Unlock()
	if !active {
		vp.apply(Decision{StopIdle: -1})
	}
}

// snapshot returns the policy and state for the scaling decision.
func (vp *versionPool) snapshot() (Policy, State) {
	vp.mu.Lock()
	defer vp.mu.Unlock()
	s := State{Busy: vp.busy, Starting: vp.starting, Waiting: len(vp.waiters)}
	for _, in := range vp.idle {
		s.Idle = append(s.Idle, in.lastUsed)
	}
	slices.SortFunc(s.Idle, func(a, b time.Time) int { return a.Compare(b) })
	return vp.policy, s
}

// apply carries out a scaling decision. StopIdle -1 stops every idle instance.
func (vp *versionPool) apply(d Decision) {
	vp.mu.Lock()
	n := d.StopIdle
	if n < 0 || n > len(vp.idle) {
		n = len(vp.idle)
	}
	if n > 0 {
		// idle is ordered by last use, oldest first. Until they have
		// closed, they count against Max.
		for _, in := range vp.idle[:n] {
			vp.discard(in)
		}
		vp.idle = append(vp.idle[:0], vp.idle[n:]...)
	}
	start := 0
	if !vp.closed && vp.p.background.Err() == nil { // not once the pool closes
		// The decision was made on a snapshot: requests may have started
		// instances since.
		start = max(0, min(d.Start, vp.policy.Max-(len(vp.idle)+vp.busy+vp.starting+vp.closing)))
		vp.starting += start
	}
	vp.mu.Unlock()
	for range start {
		go vp.prewarm()
	}
}

// prewarm starts an instance ahead of traffic and parks it idle.
func (vp *versionPool) prewarm() {
	in, fp, err := vp.startAhead(context.Background())
	vp.mu.Lock()
	if err == nil {
		vp.adoptSecrets(fp) // or put would take it for a stale one
	}
	vp.starting--
	if err == nil {
		vp.busy++
	}
	vp.mu.Unlock()
	if err != nil {
		vp.p.log.Warn("could not start a warm instance", "function", vp.target.Function, "version", vp.target.Version.Number, "err", err)
		vp.wakeOne() // the slot it held is free for a waiting request
		vp.releaseModuleIfDone()
		return
	}
	vp.put(in, false, false)
}

// startAhead starts an instance ahead of any request, within the
// version's timeout from parent, with the version's secrets; it returns
// their fingerprint too.
func (vp *versionPool) startAhead(parent context.Context) (*instance, string, error) {
	ctx, cancel := context.WithTimeout(parent, time.Duration(vp.target.Version.Spec.Timeout))
	defer cancel()
	secrets, fp, err := vp.p.resolveSecrets(vp.target)
	if err != nil {
		return nil, fp, err
	}
	in, err := vp.start(ctx, secrets, fp)
	return in, fp, err
}

// warmStart starts an instance of a WebAssembly version and closes it at
// once, for a version that a deploy made active: the first instance of a
// module pays for the guest's full start and for memory the process
// touches for the first time (18 to 27 ms for the SDK hello function,
// against about 1 ms for the next, started from its snapshot). Started
// here, off the first request's path, it leaves that request the snapshot
// and the memory. It counts as starting against max_instances meanwhile.
// A version with min_instances has its own started ahead anyway, and a
// process function's instance is a program, which only a request starts.
func (vp *versionPool) warmStart() {
	spec := vp.target.Version.Spec
	if spec.Runtime != registry.RuntimeWasm || !spec.Snapshots() || spec.MinInstances > 0 {
		return
	}
	vp.mu.Lock()
	if vp.closed || vp.p.background.Err() != nil || len(vp.idle)+vp.busy+vp.starting+vp.closing > 0 {
		vp.mu.Unlock()
		return // it has, or had, an instance: its start is paid
	}
	vp.starting++
	vp.mu.Unlock()
	if in, _, err := vp.startAhead(vp.p.background); err == nil {
		in.close()
	}
	vp.mu.Lock()
	vp.starting--
	vp.mu.Unlock()
	vp.wakeOne() // the slot it held is free for a waiting request
	vp.releaseModuleIfDone()
}

// adoptSecrets makes fp, just resolved, the fingerprint of the secrets new
// instances get; if the secrets changed, the idle instances started with
// the old values go. The caller holds vp.mu.
func (vp *versionPool) adoptSecrets(fp string) {
	if fp == vp.secretsFP {
		return
	}
	vp.mod.prep.Forget(vp.owner())
	for _, in := range vp.idle {
		vp.discard(in)
	}
	vp.idle, vp.secretsFP = nil, fp
}

// errRetired is returned by acquire on a pool the scaling loop retired.
var errRetired = errors.New("pool: version pool retired")

// retire marks an inactive pool with no instance and no waiting request as
// closed, and reports whether it did. The caller holds p.mu.
func (vp *versionPool) retire() bool {
	vp.mu.Lock()
	defer vp.mu.Unlock()
	if vp.closed || vp.policy.Active || len(vp.idle)+vp.busy+vp.starting+vp.closing+len(vp.waiters) > 0 {
		return false
	}
	vp.closed = true
	return true
}

// acquire returns an instance for one request: an idle one, a new one (a
// cold start) below Max, or one freed while the request waited in the queue.
func (vp *versionPool) acquire(ctx context.Context, secrets map[string]string, fp string) (*instance, Outcome, error) {
	vp.mu.Lock()
	if vp.closed {
		vp.mu.Unlock()
		return nil, Outcome{}, errRetired
	}
	vp.adoptSecrets(fp)
	for n := len(vp.idle); n > 0; n = len(vp.idle) {
		in := vp.idle[n-1]
		vp.idle = vp.idle[:n-1]
		if !in.sandbox.Reusable() {
			// Its program died while it waited: a slot of a program that
			// another request crashed, or one the kernel killed.
			vp.discard(in)
			continue
		}
		vp.busy++
		vp.mu.Unlock()
		return in, Outcome{}, nil
	}
	if vp.busy+vp.starting+vp.closing < vp.policy.Max {
		vp.starting++
		vp.mu.Unlock()
		return vp.startForRequest(ctx, secrets, fp)
	}
	if len(vp.waiters) >= vp.policy.MaxQueue {
		vp.mu.Unlock()
		return nil, Outcome{}, &BusyError{MaxInstances: vp.policy.Max, MaxQueue: vp.policy.MaxQueue}
	}
	ch := make(chan grant, 1)
	vp.waiters = append(vp.waiters, ch)
	vp.mu.Unlock()
	queued := time.Now()
	select {
	case g := <-ch:
		waited := time.Since(queued)
		if g.start {
			in, out, err := vp.startForRequest(ctx, secrets, fp)
			out.Queued = waited
			return in, out, err
		}
		return g.inst, Outcome{Queued: waited}, nil
	case <-ctx.Done():
		vp.mu.Lock()
		if i := slices.Index(vp.waiters, ch); i >= 0 {
			vp.waiters = slices.Delete(vp.waiters, i, i+1)
			vp.mu.Unlock()
		} else {
			// A grant raced the deadline: pass it on.
			vp.mu.Unlock()
			g := <-ch
			if g.start {
				vp.mu.Lock()
				vp.starting--
				vp.mu.Unlock()
				vp.wakeOne()
			} else {
				vp.put(g.inst, false, false) // it served nothing
			}
		}
		return nil, Outcome{}, &BusyError{MaxInstances: vp.policy.Max, MaxQueue: vp.policy.MaxQueue, Waited: true}
	}
}

// startForRequest starts an instance whose slot (starting++) is taken.
func (vp *versionPool) startForRequest(ctx context.Context, secrets map[string]string, fp string) (*instance, Outcome, error) {
	began := time.Now()
	in, err := vp.start(ctx, secrets, fp)
	out := Outcome{Cold: true, Init: time.Since(began)}
	vp.mu.Lock()
	vp.starting--
	if err == nil {
		vp.busy++
	}
	vp.mu.Unlock()
	if err != nil {
		vp.wakeOne()
		return nil, out, err
	}
	return in, out, nil
}

// start makes a new instance.
func (vp *versionPool) start(ctx context.Context, secrets map[string]string, fp string) (*instance, error) {
	cfg := config(vp.target.Version.Spec, env(vp.target, secrets), runtime.NewStderrLog(vp.p.log, runtime.MaxLogLines))
	if vp.target.Version.Spec.Snapshots() {
		cfg.Owner = vp.owner()
	}
	sb, err := vp.mod.prep.Start(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &instance{sandbox: sb, secretsFP: fp}, nil
}

// release returns in after a request. A faulted instance, one that served
// its MaxRequests, one started with old secrets, and a command module's
// slot are discarded, and a waiting request may start a new one; otherwise
// in goes to the next waiting request, or idle (or, in an inactive pool,
// away).
func (vp *versionPool) release(in *instance, faulted bool) { vp.put(in, faulted, true) }

// put returns a busy instance to the pool; served says whether it served a
// request (a prewarmed instance has not).
func (vp *versionPool) put(in *instance, faulted, served bool) {
	vp.mu.Lock()
	vp.busy--
	if served {
		in.served++
	}
	in.lastUsed = vp.p.now()
	// A one-shot instance is spent once it served; started ahead of a
	// request, it waits for one.
	spent := served && !in.sandbox.Reusable()
	discard := faulted || spent || vp.closed || in.secretsFP != vp.secretsFP ||
		(vp.policy.MaxRequests > 0 && in.served >= vp.policy.MaxRequests)
	if !discard && len(vp.waiters) > 0 {
		ch := vp.waiters[0]
		vp.waiters = vp.waiters[1:]
		vp.busy++
		vp.mu.Unlock()
		ch <- grant{inst: in}
		return
	}
	if !discard && vp.policy.Active {
		vp.idle = append(vp.idle, in)
		vp.mu.Unlock()
		return
	}
	if vp.closed {
		vp.mu.Unlock()
		in.close()
		vp.releaseModuleIfDone()
		return
	}
	vp.discard(in)
	vp.mu.Unlock()
}

// discard closes in, which is no longer idle or busy, in the background:
// closing a sandbox can take milliseconds (a process tree to end, a cgroup
// to remove), which the request that released it need not wait for. Until
// it is closed it counts against Max, and the module stays; then a waiting
// request may start an instance. On a closed pool it closes in the
// background as well, untracked. The caller holds vp.mu.
func (vp *versionPool) discard(in *instance) {
	if vp.closed {
		go in.close()
		return
	}
	// Pool.Close waits for these: the Add is made under the lock that
	// vp.close takes before Close waits.
	vp.closing++
	vp.p.closing.Add(1)
	go func() {
		defer vp.p.closing.Done()
		in.close()
		vp.mu.Lock()
		vp.closing--
		vp.mu.Unlock()
		vp.wakeOne()
		vp.releaseModuleIfDone()
		// A minimum that closing instances held back (they count against
		// Max) is made up now, not at the scaling loop's next tick.
		vp.p.scaleOne(vp)
	}()
}

// releaseModuleIfDone gives back the module once a closed pool has no
// instance left running.
func (vp *versionPool) releaseModuleIfDone() {
	vp.mu.Lock()
	done := vp.closed && !vp.released && vp.busy == 0 && vp.starting == 0 && vp.closing == 0
	if done {
		vp.released = true
	}
	vp.mu.Unlock()
	if done {
		vp.mod.prep.Forget(vp.owner())
		vp.p.release(vp.target.Version.Digest, vp.mod)
	}
}

// owner names the version's instances as runtime.Config.Owner does.
func (vp *versionPool) owner() string { return vp.target.key().String() }

// wakeOne lets the first waiting request start an instance, if there is room.
func (vp *versionPool) wakeOne() {
	vp.mu.Lock()
	if len(vp.waiters) == 0 || vp.closed || vp.busy+vp.starting+vp.closing >= vp.policy.Max {
		vp.mu.Unlock()
		return
	}
	ch := vp.waiters[0]
	vp.waiters = vp.waiters[1:]
	vp.starting++
	vp.mu.Unlock()
	ch <- grant{start: true}
}

func (in *instance) close() { in.sandbox.Close(context.Background()) }

// close stops the idle instances and releases the module; busy instances
// are closed when they are released.
func (vp *versionPool) close() {
	vp.mu.Lock()
	vp.closed = true
	idle := vp.idle
	vp.idle = nil
	vp.mu.Unlock()
	for _, in := range idle {
		in.close()
	}
	vp.releaseModuleIfDone()
}
