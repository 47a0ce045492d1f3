package tenant

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gust-faas/gust/internal/store"
)

// These tests are internal to the package so that they can inject a clock
// (Service.now) and read the stored records behind the service's back.

// fakeClock is a clock that moves only when a test says so.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// openStore starts a real embedded store in a temporary directory and closes
// it when the test ends.
func openStore(t testing.TB) *store.Store {
	t.Helper()
	return openStoreAt(t, t.TempDir())
}

func openStoreAt(t testing.TB, dir string) *store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	st, err := store.Open(ctx, store.Config{DataDir: dir})
	if err != nil {
		t.Fatalf("store.Open(%q) error = %v, want nil", dir, err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("store Close() = %v, want nil", err)
		}
	})
	return st
}

// testKey is a fixed master key for tests; otherKey is a different one.
var (
	testKey  = bytes.Repeat([]byte{0x42}, 32)
	otherKey = bytes.Repeat([]byte{0x17}, 32)
)

type serviceOpts struct {
	key    []byte
	logger *slog.Logger
	clock  *fakeClock
	// watchCtx bounds the service's watches; the test's context if nil.
	watchCtx context.Context
}

// startService builds a Service on st and starts it; its watches run until
// the test ends.
func startService(t testing.TB, st *store.Store, o serviceOpts) *Service {
	t.Helper()
	if o.key == nil {
		o.key = testKey
	}
	sealer, err := NewSealer(o.key)
	if err != nil {
		t.Fatalf("NewSealer() error = %v, want nil", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	s, err := New(ctx, Deps{Store: st, Sealer: sealer, Logger: o.logger})
	if err != nil {
		t.Fatalf("New() error = %v, want nil", err)
	}
	if o.clock != nil {
		s.now = o.clock.Now
	}
	if o.watchCtx == nil {
		o.watchCtx = t.Context()
	}
	if err := s.Start(ctx, o.watchCtx); err != nil {
		t.Fatalf("Start() error = %v, want nil", err)
	}
	if !s.Ready() {
		t.Fatalf("Ready() after Start = false, want true")
	}
	return s
}

// newService starts a Service on a store of its own.
func newService(t testing.TB) *Service {
	t.Helper()
	return startService(t, openStore(t), serviceOpts{})
}

// ctxT returns a context bounded so that a stuck call fails the test rather
// than hanging it.
func ctxT(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true within %v", what, within)
		}
		<-tick.C
	}
}

func mustCreateTenant(t testing.TB, s *Service, name string, q Quotas) Tenant {
	t.Helper()
	tn, err := s.CreateTenant(ctxT(t), name, q)
	if err != nil {
		t.Fatalf("CreateTenant(%q) error = %v, want nil", name, err)
	}
	return tn
}

func isInvalid(err error) bool {
	var inv *InvalidError
	return errors.As(err, &inv)
}

var allRoles = []Role{Invoker, Developer, Owner, Admin}

func TestRoleValid(t *testing.T) {
	tests := []struct {
		role Role
		want bool
	}{
		{Invoker, true},
		{Developer, true},
		{Owner, true},
		{Admin, true},
		{"", false},
		{"root", false},
		{"Admin", false},
		{"admin ", false},
		{"ADMIN", false},
	}
	for _, tt := range tests {
		if got := tt.role.Valid(); got != tt.want {
			t.Errorf("Role(%q).Valid() = %v, want %v", tt.role, got, tt.want)
		}
	}
}

func TestRoleAllows(t *testing.T) {
	// want[have][need]: each role may do what the roles below it may.
	want := map[Role]map[Role]bool{
		Invoker:   {Invoker: true, Developer: false, Owner: false, Admin: false},
		Developer: {Invoker: true, Developer: true, Owner: false, Admin: false},
		Owner:     {Invoker: true, Developer: true, Owner: true, Admin: false},
		Admin:     {Invoker: true, Developer: true, Owner: true, Admin: true},
	}
	for _, have := range allRoles {
		for _, need := range allRoles {
			t.Run(fmt.Sprintf("%s allows %s", have, need), func(t *testing.T) {
				if got := have.Allows(need); got != want[have][need] {
					t.Errorf("Role(%q).Allows(%q) = %v, want %v", have, need, got, want[have][need])
				}
			})
		}
	}
	invalid := []Role{"", "root", "Admin", "superuser", "owner\x00"}
	for _, have := range invalid {
		for _, need := range append(slices.Clone(allRoles), invalid...) {
			t.Run(fmt.Sprintf("invalid %q allows %q", have, need), func(t *testing.T) {
				if have.Allows(need) {
					t.Errorf("Role(%q).Allows(%q) = true, want false: an invalid role allows nothing", have, need)
				}
			})
		}
	}
}

// TestRoleAllowsInvalidNeed asks for fail-closed behaviour when the required
// role itself is not a role.
func TestRoleAllowsInvalidNeed(t *testing.T) {
	for _, have := range allRoles {
		for _, need := range []Role{"", "root", "Admin"} {
			if have.Allows(need) {
				t.Errorf("Role(%q).Allows(%q) = true, want false", have, need)
			}
		}
	}
}

func TestCanActIn(t *testing.T) {
	tests := []struct {
		name   string
		p      Principal
		tenant string
		need   Role
		want   bool
	}{
		{"admin in default", Principal{Tenant: Default, Role: Admin}, Default, Admin, true},
		{"admin in another tenant", Principal{Tenant: Default, Role: Admin}, "acme", Owner, true},
		{"admin needing admin elsewhere", Principal{Tenant: Default, Role: Admin}, "acme", Admin, true},
		{"owner in own tenant as owner", Principal{Tenant: "acme", Role: Owner}, "acme", Owner, true},
		{"owner in own tenant as invoker", Principal{Tenant: "acme", Role: Owner}, "acme", Invoker, true},
		{"owner in own tenant as admin", Principal{Tenant: "acme", Role: Owner}, "acme", Admin, false},
		{"owner in another tenant", Principal{Tenant: "acme", Role: Owner}, "globex", Invoker, false},
		{"owner of default in another tenant", Principal{Tenant: Default, Role: Owner}, "acme", Invoker, false},
		{"developer as developer", Principal{Tenant: "acme", Role: Developer}, "acme", Developer, true},
		{"developer as owner", Principal{Tenant: "acme", Role: Developer}, "acme", Owner, false},
		{"invoker as invoker", Principal{Tenant: "acme", Role: Invoker}, "acme", Invoker, true},
		{"invoker as developer", Principal{Tenant: "acme", Role: Invoker}, "acme", Developer, false},
		{"invoker in another tenant", Principal{Tenant: "acme", Role: Invoker}, "globex", Invoker, false},
		{"tenant name differs in case", Principal{Tenant: "acme", Role: Owner}, "ACME", Invoker, false},
		{"empty principal", Principal{}, "", Invoker, false},
		{"invalid role in own tenant", Principal{Tenant: "acme", Role: "root"}, "acme", Invoker, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.CanActIn(tt.tenant, tt.need); got != tt.want {
				t.Errorf("%+v.CanActIn(%q, %q) = %v, want %v", tt.p, tt.tenant, tt.need, got, tt.want)
			}
		})
	}
}

func TestQuotasValidate(t *testing.T) {
	tests := []struct {
		name string
		q    Quotas
		ok   bool
	}{
		{"zero is unlimited", Quotas{}, true},
		{"all set", Quotas{MaxFunctions: 10, MaxMemoryMB: 512, MaxConcurrency: 4, RatePerSecond: 2.5, Burst: 5}, true},
		{"rate without burst", Quotas{RatePerSecond: 1}, true},
		{"negative functions", Quotas{MaxFunctions: -1}, false},
		{"negative memory", Quotas{MaxMemoryMB: -1}, false},
		{"negative concurrency", Quotas{MaxConcurrency: -1}, false},
		{"negative rate", Quotas{RatePerSecond: -0.5}, false},
		{"negative burst", Quotas{Burst: -1, RatePerSecond: 1}, false},
		{"burst without rate", Quotas{Burst: 3}, false},
		{"the slowest rate", Quotas{RatePerSecond: MinRatePerSecond}, true},
		// Its Retry-After overflowed: one second, for a tenant blocked for ever.
		{"a rate too slow to wait for", Quotas{RatePerSecond: 1e-300}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.q.Validate()
			if (err == nil) != tt.ok {
				t.Errorf("%+v.Validate() = %v, want ok %v", tt.q, err, tt.ok)
			}
		})
	}
}

func TestNewRequiresStoreAndSealer(t *testing.T) {
	sealer, err := NewSealer(testKey)
	if err != nil {
		t.Fatal(err)
	}
	st := openStore(t)
	tests := []struct {
		name string
		deps Deps
	}{
		{"nothing", Deps{}},
		{"no store", Deps{Sealer: sealer}},
		{"no sealer", Deps{Store: st}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if s, err := New(t.Context(), tt.deps); err == nil {
				t.Errorf("New(%+v) = %v, nil, want an error", tt.deps, s)
			}
		})
	}
}

func TestStartCreatesDefaultTenantOnce(t *testing.T) {
	st := openStore(t)
	a := startService(t, st, serviceOpts{})
	if _, ok := a.Tenant(Default); !ok {
		t.Fatalf("Tenant(%q) after Start = _, false, want true", Default)
	}
	// A second node on the same store starts without an error and sees the
	// same, single default tenant.
	b := startService(t, st, serviceOpts{})
	got := b.Tenants()
	if len(got) != 1 || got[0].Name != Default {
		t.Errorf("Tenants() on a second node = %+v, want just %q", got, Default)
	}
	if err := a.DeleteTenant(ctxT(t), Default); !isInvalid(err) {
		t.Errorf("DeleteTenant(%q) = %v, want an *InvalidError", Default, err)
	}
}

func TestTenantLifecycle(t *testing.T) {
	clock := newFakeClock()
	s := startService(t, openStore(t), serviceOpts{clock: clock})
	ctx := ctxT(t)

	q := Quotas{MaxFunctions: 3, MaxConcurrency: 2, RatePerSecond: 5, Burst: 10}
	got := mustCreateTenant(t, s, "acme", q)
	if len(got.ID) != idLen {
		t.Errorf("CreateTenant(acme).ID = %q, want a random id of %d characters", got.ID, idLen)
	}
	want := Tenant{Name: "acme", ID: got.ID, Quotas: q, Created: clock.Now()}
	if got != want {
		t.Errorf("CreateTenant(acme) = %+v, want %+v", got, want)
	}
	if got, ok := s.Tenant("acme"); !ok || got != want {
		t.Errorf("Tenant(acme) = %+v, %v, want %+v, true", got, ok, want)
	}
	if _, err := s.CreateTenant(ctx, "acme", Quotas{}); !errors.Is(err, ErrExists) {
		t.Errorf("CreateTenant(acme) again = %v, want ErrExists", err)
	}
	if _, err := s.CreateTenant(ctx, "bad", Quotas{MaxConcurrency: -1}); !isInvalid(err) {
		t.Errorf("CreateTenant(bad, negative quota) = %v, want an *InvalidError", err)
	}
	if _, ok := s.Tenant("bad"); ok {
		t.Errorf("Tenant(bad) after a refused create = _, true, want false")
	}
	mustCreateTenant(t, s, "beta", Quotas{})

	var names []string
	for _, tn := range s.Tenants() {
		names = append(names, tn.Name)
	}
	if want := []string{"acme", "beta", Default}; !slices.Equal(names, want) {
		t.Errorf("Tenants() names = %v, want %v", names, want)
	}

	q2 := Quotas{MaxMemoryMB: 256}
	updated, err := s.SetQuotas(ctx, "acme", q2)
	if err != nil {
		t.Fatalf("SetQuotas(acme) error = %v, want nil", err)
	}
	if updated.Quotas != q2 || !updated.Created.Equal(want.Created) {
		t.Errorf("SetQuotas(acme) = %+v, want quotas %+v and the original creation time", updated, q2)
	}
	if got, _ := s.Tenant("acme"); got.Quotas != q2 {
		t.Errorf("Tenant(acme).Quotas after SetQuotas = %+v, want %+v", got.Quotas, q2)
	}
	if _, err := s.SetQuotas(ctx, "acme", Quotas{Burst: 1}); !isInvalid(err) {
		t.Errorf("SetQuotas(acme, burst without rate) = %v, want an *InvalidError", err)
	}
	if _, err := s.SetQuotas(ctx, "nobody", q2); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetQuotas(nobody) = %v, want ErrNotFound", err)
	}

	if err := s.DeleteTenant(ctx, "acme"); err != nil {
		t.Fatalf("DeleteTenant(acme) = %v, want nil", err)
	}
	if _, ok := s.Tenant("acme"); ok {
		t.Errorf("Tenant(acme) after DeleteTenant = _, true, want false")
	}
	if err := s.DeleteTenant(ctx, "acme"); !errors.Is(err, ErrNotFound) {
		t.Errorf("DeleteTenant(acme) again = %v, want ErrNotFound", err)
	}
	// A deleted name can be used again.
	mustCreateTenant(t, s, "acme", Quotas{})
}
