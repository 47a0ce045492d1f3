package wasm

import (
	"context"
	"log/slog"

	"github.com/gust-faas/gust/internal/runtime"
)

// Prepare compiles artifact. It implements runtime.Sandbox.
func (r *Runtime) Prepare(ctx context.Context, digest string, artifact []byte) (runtime.Prepared, error) {
	m, err := r.Compile(ctx, digest, artifact)
	if err != nil {
		return nil, err
	}
	return prepared{m}, nil
}

// prepared adapts a Module to runtime.Prepared: a reactor starts warm
// instances, a command module a slot that runs a fresh instance per request.
type prepared struct{ m *Module }

func (p prepared) Check(cfg runtime.Config) error  { return p.m.CheckMemory(cfg.Limits.MemoryBytes) }
func (p prepared) Close(ctx context.Context) error { return p.m.Close(ctx) }

func (p prepared) Forget(owner string) {
	if p.m.snapshots != nil {
		p.m.snapshots.forget(owner)
	}
}

func (p prepared) Start(ctx context.Context, cfg runtime.Config) (runtime.Instance, error) {
	if p.m.kind == Command {
		return &commandInstance{m: p.m, cfg: cfg}, nil
	}
	return p.m.Start(ctx, InstanceConfig{Env: cfg.Env, Limits: cfg.Limits, Stderr: cfg.Stderr, Owner: cfg.Owner})
}

// Reusable implements runtime.Instance: a warm instance serves request
// after request, until it exits.
func (i *Instance) Reusable() bool { return !i.mod.IsClosed() }

// commandInstance runs one fresh instance of a command module for its one
// request.
type commandInstance struct {
	m    *Module
	cfg  runtime.Config
	used bool
}

func (c *commandInstance) Invoke(ctx context.Context, req *runtime.Request, log *slog.Logger) (*runtime.Response, error) {
	c.used = true
	return c.m.Invoke(ctx, req, Invocation{Env: c.cfg.Env, Limits: c.cfg.Limits, Stderr: runtime.NewStderrLog(log, runtime.MaxLogLines)})
}

func (c *commandInstance) Reusable() bool              { return !c.used }
func (c *commandInstance) Close(context.Context) error { return nil }

var _ runtime.Sandbox = (*Runtime)(nil)
