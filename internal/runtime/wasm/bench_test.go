package wasm

import (
	"context"
	"log/slog"
	"net/http"
	"testing"

	"github.com/gust-faas/gust/internal/runtime"
	"github.com/gust-faas/gust/internal/runtime/wasm/wasmtest"
)

// BenchmarkReactorInvoke measures one warm call of the SDK hello function:
// the host ABI, the SDK and the handler, without HTTP or the pool.
func BenchmarkReactorInvoke(b *testing.B) {
	ctx := context.Background()
	m := compileHello(b)
	log := slog.New(slog.DiscardHandler)
	inst, err := m.Start(ctx, InstanceConfig{Limits: testLimits, Stderr: runtime.NewStderrLog(log, 10)})
	if err != nil {
		b.Fatal(err)
	}
	defer inst.Close(ctx)
	req := &runtime.Request{Method: "GET", Path: "/", Host: "h", Header: http.Header{"User-Agent": {"bench"}, "Accept": {"*/*"}}}
	b.ReportAllocs()
	for b.Loop() {
		resp, err := inst.Invoke(ctx, req, log)
		if err != nil || resp.Status != 200 {
			b.Fatal(resp, err)
		}
	}
}

// BenchmarkReactorStart measures a cold start of the SDK hello function:
// in full (instantiate, _initialize and gust_start), and from the snapshot
// of the first instance of its owner.
func BenchmarkReactorStart(b *testing.B) {
	for _, bc := range []struct{ name, owner string }{{"full", ""}, {"snapshot", "t/hello@1"}} {
		b.Run(bc.name, func(b *testing.B) {
			ctx := context.Background()
			m := compileHello(b)
			log := slog.New(slog.DiscardHandler)
			b.ReportAllocs()
			for b.Loop() {
				inst, err := m.Start(ctx, InstanceConfig{Limits: testLimits, Stderr: runtime.NewStderrLog(log, 10), Owner: bc.owner})
				if err != nil {
					b.Fatal(err)
				}
				inst.Close(ctx)
			}
		})
	}
}

// compileHello compiles the SDK hello function in a runtime of its own.
func compileHello(b *testing.B) *Module {
	m, err := newRuntime(b).Compile(context.Background(), "", wasmtest.MustRead(wasmtest.Hello))
	if err != nil {
		b.Fatal(err)
	}
	return m
}
