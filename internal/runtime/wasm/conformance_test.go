package wasm

import (
	"context"
	"testing"

	"github.com/gust-faas/gust/internal/runtime"
	"github.com/gust-faas/gust/internal/runtime/runtimetest"
)

// TestConformance runs the sandbox conformance cases on the reactor
// fixture, started through the runtime.Sandbox contract.
func TestConformance(t *testing.T) {
	ctx := context.Background()
	rt := newRuntime(t)
	prep, err := rt.Prepare(ctx, "", reactorWasm)
	if err != nil {
		t.Fatal(err)
	}
	runtimetest.Run(t, func(t *testing.T, ctx context.Context, cfg runtime.Config) (runtime.Instance, error) {
		return prep.Start(ctx, cfg)
	})
}
