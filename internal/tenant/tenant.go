// Package tenant owns who may do what: tenants and their quotas, API keys and
// their roles, and each tenant's sealed secrets. Everything is kept in the
// store and watched into memory on every node, so a revoked key stops
// working everywhere at once.
package tenant

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/gust-faas/gust/internal/registry"
	"github.com/gust-faas/gust/internal/store"
)

// Buckets in the store.
const (
	tenantsBucket = "gust_tenants"
	keysBucket    = "gust_keys"
	secretsBucket = "gust_secrets"
	metaBucket    = "gust_meta"
)

// Default is the tenant that exists from the first start.
const Default = "default"

// Role is what a key may do. Each role may do all that the roles below it may.
type Role string

const (
	// Invoker invokes the tenant's functions.
	Invoker Role = "invoker"
	// Developer deploys and deletes functions and reads logs and usage.
	Developer Role = "developer"
	// Owner manages the tenant's keys and secrets.
	Owner Role = "owner"
	// Admin manages tenants and acts in every tenant.
	Admin Role = "admin"
)

var rank = map[Role]int{Invoker: 1, Developer: 2, Owner: 3, Admin: 4}

// Valid reports whether r is a known role.
func (r Role) Valid() bool { return rank[r] > 0 }

// Allows reports whether r may do what need may. An unknown role allows
// nothing and is allowed nothing.
func (r Role) Allows(need Role) bool { return r.Valid() && need.Valid() && rank[r] >= rank[need] }

// Tenant is one team or customer: a namespace for functions, keys, secrets
// and usage, with its quotas.
type Tenant struct {
	Name string `json:"name"`
	// ID is random and new each time a tenant of this name is created; keys
	// and secrets carry it, so that those of a deleted tenant never belong
	// to a new one of the same name.
	ID      string    `json:"id"`
	Quotas  Quotas    `json:"quotas"`
	Created time.Time `json:"created"`
}

// Quotas bound a tenant's use of the platform on each node. Zero means
// unlimited.
type Quotas struct {
	MaxFunctions   int     `json:"max_functions,omitempty"`
	MaxMemoryMB    int     `json:"max_memory_mb,omitempty"`
	MaxConcurrency int     `json:"max_concurrency,omitempty"`
	RatePerSecond  float64 `json:"rate_per_second,omitempty"`
	Burst          int     `json:"burst,omitempty"`
}

// Validate reports a quota out of range.
func (q Quotas) Validate() error {
	var errs []error
	if q.MaxFunctions < 0 || q.MaxMemoryMB < 0 || q.MaxConcurrency < 0 || q.Burst < 0 || q.RatePerSecond < 0 {
		errs = append(errs, errors.New("quotas cannot be negative"))
	}
	if q.Burst > 0 && q.RatePerSecond == 0 {
		errs = append(errs, errors.New("burst needs a rate_per_second"))
	}
	if q.RatePerSecond > 0 && q.RatePerSecond < MinRatePerSecond {
		errs = append(errs, fmt.Errorf("rate_per_second %g is below %g (one request in %v); 0 is no limit", q.RatePerSecond, MinRatePerSecond, time.Duration(float64(time.Second)/MinRatePerSecond)))
	}
	return errors.Join(errs...)
}

// MinRatePerSecond is the lowest rate_per_second: the wait a slower rate
// gives a refused request to try again once overflowed Retry-After.
const MinRatePerSecond = 0.001

// Errors the tenant package returns.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
)

// InvalidError is a request refused for what it asked.
type InvalidError struct{ Err error }

func (e *InvalidError) Error() string { return e.Err.Error() }
func (e *InvalidError) Unwrap() error { return e.Err }

func invalidf(format string, args ...any) error {
	return &InvalidError{fmt.Errorf(format, args...)}
}

// Deps are what a Service needs.
type Deps struct {
	Store  *store.Store
	Sealer *Sealer
	Logger *slog.Logger
}

// Service manages tenants, keys and secrets.
type Service struct {
	tenantsKV *store.KV
	keysKV    *store.KV
	secretsKV *store.KV
	metaKV    *store.KV
	tenants   *store.View[Tenant]
	keys      *store.View[Key]
	secrets   *store.View[sealedSecret]
	sealer    *Sealer
	log       *slog.Logger
	now       func() time.Time
}

// New opens the service's buckets.
func New(ctx context.Context, deps Deps) (*Service, error) {
	if deps.Store == nil || deps.Sealer == nil {
		return nil, errors.New("tenant: Store and Sealer are required")
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Service{sealer: deps.Sealer, log: log, now: time.Now}
	var err error
	if s.tenantsKV, err = deps.Store.KV(ctx, tenantsBucket); err != nil {
		return nil, err
	}
	if s.keysKV, err = deps.Store.KV(ctx, keysBucket); err != nil {
		return nil, err
	}
	if s.secretsKV, err = deps.Store.KV(ctx, secretsBucket); err != nil {
		return nil, err
	}
	if s.metaKV, err = deps.Store.KV(ctx, metaBucket); err != nil {
		return nil, err
	}
	if err := s.checkMasterKey(ctx); err != nil {
		return nil, err
	}
	s.tenants = store.NewView[Tenant](s.tenantsKV, log)
	s.keys = store.NewView[Key](s.keysKV, log)
	s.secrets = store.NewView[sealedSecret](s.secretsKV, log)
	return s, nil
}

// masterKeyCheck is the meta key of a value sealed with the master key the
// store was first used with.
const masterKeyCheck = "master-key-check"

// checkMasterKey makes sure the master key is the one this store's secrets
// are sealed with: a server started without its key (a lost master.key, a
// missing GUST_MASTER_KEY) would make a new one, and every secret would fail
// to unseal, while new ones were sealed with the wrong key.
func (s *Service) checkMasterKey(ctx context.Context) error {
	e, err := s.metaKV.Get(ctx, masterKeyCheck)
	if errors.Is(err, store.ErrNotFound) {
		_, err = s.metaKV.Create(ctx, masterKeyCheck, s.sealer.seal("", masterKeyCheck, []byte("gust")))
		if errors.Is(err, store.ErrConflict) {
			return s.checkMasterKey(ctx) // another node wrote it first
		}
		return err
	}
	if err != nil {
		return err
	}
	if _, err := s.sealer.open("", masterKeyCheck, e.Value); err != nil {
		return errors.New("tenant: the master key is not the one this store's secrets were sealed with: set GUST_MASTER_KEY to that key, or put back the data dir's master.key")
	}
	return nil
}

// Start fills the views and keeps them current until watchCtx is done, and
// makes sure the default tenant exists.
func (s *Service) Start(ctx, watchCtx context.Context) error {
	for _, v := range []interface {
		Start(context.Context, context.Context) error
	}{s.tenants, s.keys, s.secrets} {
		if err := v.Start(ctx, watchCtx); err != nil {
			return err
		}
	}
	if _, err := s.CreateTenant(ctx, Default, Quotas{}); err != nil && !errors.Is(err, ErrExists) {
		return err
	}
	return nil
}

// Ready reports whether every view has caught up with the store.
func (s *Service) Ready() bool { return s.tenants.Ready() && s.keys.Ready() && s.secrets.Ready() }

// CreateTenant creates a tenant, or fails with ErrExists.
func (s *Service) CreateTenant(ctx context.Context, name string, q Quotas) (Tenant, error) {
	if !registry.ValidName(name) {
		return Tenant{}, invalidf("tenant name %q is invalid: use 1 to 63 lowercase letters, digits and dashes, starting with a letter", name)
	}
	if err := q.Validate(); err != nil {
		return Tenant{}, &InvalidError{err}
	}
	t := Tenant{Name: name, ID: randomToken(idLen), Quotas: q, Created: s.now().UTC()}
	rev, err := createJSON(ctx, s.tenantsKV, name, t)
	if errors.Is(err, store.ErrConflict) {
		return Tenant{}, fmt.Errorf("tenant %q: %w", name, ErrExists)
	}
	if err != nil {
		return Tenant{}, err
	}
	return t, s.tenants.WaitApplied(ctx, name, rev)
}

// SetQuotas replaces a tenant's quotas.
func (s *Service) SetQuotas(ctx context.Context, name string, q Quotas) (Tenant, error) {
	if err := q.Validate(); err != nil {
		return Tenant{}, &InvalidError{err}
	}
	var out Tenant
	rev, err := updateJSON(ctx, s.tenantsKV, name, func(t *Tenant) error {
		t.Quotas = q
		out = *t
		return nil
	})
	if err != nil {
		return Tenant{}, err
	}
	return out, s.tenants.WaitApplied(ctx, name, rev)
}

// Tenant returns a tenant from the view.
func (s *Service) Tenant(name string) (Tenant, bool) { return s.tenants.Get(name) }

// Tenants returns every tenant, sorted by name.
func (s *Service) Tenants() []Tenant { return s.tenants.List("") }

// DeleteTenant deletes a tenant with its keys and secrets. The caller makes
// sure it has no functions left.
func (s *Service) DeleteTenant(ctx context.Context, name string) error {
	if name == Default {
		return invalidf("the default tenant cannot be deleted")
	}
	if _, ok := s.tenants.Get(name); !ok {
		return fmt.Errorf("tenant %q: %w", name, ErrNotFound)
	}
	// Keys and secrets written concurrently with this delete may survive it;
	// they carry this incarnation's ID, so they never work again.
	for _, k := range s.keys.List("") {
		if k.Tenant == name {
			if err := deleteSeen(ctx, s.keysKV, s.keys, k.ID); err != nil {
				return err
			}
		}
	}
	for _, sec := range s.secrets.List(name + ".") {
		k := secretKey(name, sec.Name)
		if err := deleteSeen(ctx, s.secretsKV, s.secrets, k); err != nil {
			return err
		}
	}
	return deleteSeen(ctx, s.tenantsKV, s.tenants, name)
}
