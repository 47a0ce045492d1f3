package gateway

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gust-faas/gust/internal/registry"
	"github.com/gust-faas/gust/internal/tenant"
)

type tenantIDs map[string]string

func (ts tenantIDs) Tenant(name string) (tenant.Tenant, bool) {
	id, ok := ts[name]
	return tenant.Tenant{Name: name, ID: id}, ok
}

// TestFunctionOfAnotherTenantIsNotServed: a public function that a node's
// view still holds for a tenant deleted since (its TenantID is the old
// tenant's), or for no tenant at all, is not served: an anonymous caller
// gets 401, as for any function that is not there. Nothing reaches an
// invoker (this gateway has none).
func TestFunctionOfAnotherTenantIsNotServed(t *testing.T) {
	spec := registry.Spec{Name: "app", Auth: registry.AuthNone}.WithDefaults()
	fn := func(tenantName, id string) registry.Function {
		return registry.Function{Tenant: tenantName, TenantID: id, Name: "app", Latest: 1, Versions: []registry.Version{{Number: 1, Spec: spec}}}
	}
	fns := fixedFunctions{"shop/app": fn("shop", "old-id"), "gone/app": fn("gone", "gone-id")}
	g := New(Deps{Functions: fns, Auth: noAuth{}, Tenants: tenantIDs{"shop": "new-id"}, Limiter: tenant.NewLimiter(nil), Logger: slog.New(slog.DiscardHandler)})
	mux := http.NewServeMux()
	g.Register(mux)
	for _, path := range []string{"/fn/shop/app", "/fn/gone/app"} {
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
		if w.Code != http.StatusUnauthorized {
			t.Errorf("%s: %d %s, want 401, as for no function", path, w.Code, w.Body)
		}
	}
}
