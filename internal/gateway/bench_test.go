package gateway

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gust-faas/gust/internal/pool"
	"github.com/gust-faas/gust/internal/registry"
	"github.com/gust-faas/gust/internal/runtime"
	"github.com/gust-faas/gust/internal/runtime/wasm"
	"github.com/gust-faas/gust/internal/runtime/wasm/wasmtest"
	"github.com/gust-faas/gust/internal/tenant"
)

type fixedFunctions map[string]registry.Function

func (f fixedFunctions) Lookup(tenant, name string) (registry.Function, bool) {
	fn, ok := f[tenant+"/"+name]
	return fn, ok
}

type oneArtifact []byte

func (a oneArtifact) Get(context.Context, string) ([]byte, error) { return a, nil }

type noTenants struct{}

func (noTenants) Tenant(string) (tenant.Tenant, bool) { return tenant.Tenant{}, true }

type noAuth struct{}

func (noAuth) Authenticate(string) (tenant.Principal, error) {
	return tenant.Principal{}, tenant.ErrUnauthenticated
}

// BenchmarkGatewayWarm measures the warm request path of the SDK hello
// function, from the gateway's handler to the response, without the network.
// Compare with BenchmarkBareHandler, the same work as plain Go.
func BenchmarkGatewayWarm(b *testing.B) {
	hello := wasmtest.MustRead(wasmtest.Hello)
	ctx := context.Background()
	rt, err := wasm.New(ctx, wasm.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer rt.Close(ctx)
	spec := registry.Spec{Name: "hello", Auth: registry.AuthNone, Timeout: registry.Duration(5 * time.Second)}.WithDefaults()
	v := registry.Version{Number: 1, Digest: registry.Digest(hello), Spec: spec}
	fns := fixedFunctions{"default/hello": {Tenant: "default", Name: "hello", Latest: 1, Versions: []registry.Version{v}}}
	p := pool.New(pool.Deps{Sandboxes: map[string]runtime.Sandbox{registry.RuntimeWasm: rt}, Artifacts: oneArtifact(hello)})
	defer p.Close()
	// As a deploy does: the module is compiled before it is invoked, and
	// not within the first request's timeout.
	if err := p.Check(ctx, spec, v.Digest, hello); err != nil {
		b.Fatal(err)
	}
	p.Sync([]pool.Target{{Tenant: "default", Function: "hello", Version: v}})
	g := New(Deps{Functions: fns, Invoker: p, Auth: noAuth{}, Tenants: noTenants{}, Limiter: tenant.NewLimiter(nil), Logger: slog.New(slog.DiscardHandler)})
	mux := http.NewServeMux()
	g.Register(mux)
	invoke := func() {
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, httptest.NewRequest("GET", "/fn/default/hello", nil))
		if w.Code != 200 {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
	}
	invoke() // starts an instance: not what is measured
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			invoke()
		}
	})
}

func BenchmarkBareHandler(b *testing.B) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<10))
		_ = body
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "Hello, world!\n")
	})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
		}
	})
}
