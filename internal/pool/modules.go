package pool

import (
	"context"
	"fmt"
	"time"

	"github.com/gust-faas/gust/internal/runtime"
)

// module is one prepared artifact, shared by every version that runs it.
type module struct {
	ready    chan struct{} // closed once prep or err is set
	prep     runtime.Prepared
	err      error
	inflight int
	dropped  bool // no longer in the map; close when inflight reaches 0
}

// moduleKey names a prepared module: the same artifact may be deployed to
// two runtimes (by mistake, or by two tenants), and each prepares its own.
type moduleKey struct{ kind, digest string }

func (p *Pool) fetch(digest string) func(context.Context) ([]byte, error) {
	return func(ctx context.Context) ([]byte, error) { return p.artifacts.Get(ctx, digest) }
}

// prepareTimeout bounds one preparation of an artifact: fetching it and
// compiling it (a compile has its own, shorter limits).
const prepareTimeout = 5 * time.Minute

// PreparingError is a request whose deadline passed while its function's
// artifact was still being prepared on this node: a cold start whose
// compile outlasted the function's timeout. The preparation goes on, for
// the requests that follow.
type PreparingError struct {
	Waited time.Duration
	Err    error // the context's
}

func (e *PreparingError) Error() string {
	return fmt.Sprintf("its code was still being compiled on this node after %s (a cold start); a later request finds it ready", e.Waited.Round(time.Millisecond))
}

func (e *PreparingError) Unwrap() error { return e.Err }

// acquire returns the prepared module for digest, preparing what load
// returns in the sandbox of kind if no other call has; one preparation runs
// per digest at a time, and goes on if the call that began it gives up
// (until the pool closes). The caller must release it.
func (p *Pool) acquire(ctx context.Context, kind, digest string, load func(context.Context) ([]byte, error)) (*module, error) {
	start := time.Now()
	key := moduleKey{kind: kind, digest: digest}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errClosed
	}
	m, ok := p.modules[key]
	if !ok {
		m = &module{ready: make(chan struct{})}
		p.modules[key] = m
		p.preparing.Add(1)
	}
	m.inflight++
	p.mu.Unlock()
	if !ok {
		go func() {
			defer p.preparing.Done()
			// Not the caller's context: the pool's, which Close ends.
			pctx, cancel := context.WithTimeout(p.background, prepareTimeout)
			defer cancel()
			m.prep, m.err = p.prepare(pctx, kind, digest, load)
			if m.err != nil {
				p.mu.Lock()
				if p.modules[key] == m {
					delete(p.modules, key) // let a later call try again
				}
				p.mu.Unlock()
			}
			close(m.ready)
		}()
	}
	select {
	case <-m.ready:
	case <-ctx.Done():
		p.release(digest, m)
		return nil, &PreparingError{Waited: time.Since(start), Err: ctx.Err()}
	}
	if m.err != nil {
		p.release(digest, m)
		return nil, m.err
	}
	return m, nil
}

func (p *Pool) prepare(ctx context.Context, kind, digest string, load func(context.Context) ([]byte, error)) (runtime.Prepared, error) {
	sb, err := p.sandbox(kind)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	artifact, err := load(ctx)
	if err != nil {
		return nil, fmt.Errorf("pool: fetch artifact %s: %w", digest, err)
	}
	prep, err := sb.Prepare(ctx, digest, artifact)
	if err != nil {
		return nil, err
	}
	p.log.Debug("artifact prepared", "runtime", kind, "digest", digest, "took", time.Since(start))
	return prep, nil
}

// sandbox returns the sandbox of kind, or why this node has none.
func (p *Pool) sandbox(kind string) (runtime.Sandbox, error) {
	if sb := p.sandboxes[kind]; sb != nil {
		return sb, nil
	}
	if why := p.unavailable[kind]; why != "" {
		return nil, runtime.Errorf(runtime.BadArtifact, "runtime %s is not available on this node: %s", kind, why)
	}
	return nil, runtime.Errorf(runtime.BadArtifact, "runtime %q is unknown", kind)
}

func (p *Pool) release(digest string, m *module) {
	p.mu.Lock()
	m.inflight--
	last := m.dropped && m.inflight == 0
	p.mu.Unlock()
	if last {
		select {
		case <-m.ready:
			closeModule(m)
		default:
			go closeModule(m) // once its preparation, which goes on, ends
		}
	}
}

func closeModule(m *module) {
	<-m.ready
	if m.prep != nil {
		m.prep.Close(context.Background())
	}
}
