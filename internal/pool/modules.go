package pool

import (
	"context"
	"fmt"
	"time"

	"github.com/gust-faas/gust/internal/runtime/wasm"
)

// module is one compiled artifact, shared by every version that runs it.
type module struct {
	ready    chan struct{} // closed once mod or err is set
	mod      *wasm.Module
	err      error
	inflight int
	dropped  bool // no longer in the map; close when inflight reaches 0
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
