// Package registry owns functions and their versions: the spec and its
// validation, the records in the store, the artifacts they point at, and a
// watched in-memory view so the request path never reads the store.
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/gust-faas/gust/internal/store"
)

// Buckets in the store.
const (
	functionsBucket = "gust_functions"
	artifactsBucket = "gust_artifacts"
)

// Function is a deployed function and its immutable versions.
type Function struct {
	Tenant string `json:"tenant"`
	// TenantID is the ID of the tenant of that name the function belongs
	// to: a new tenant of the same name never inherits it.
	TenantID string           `json:"tenant_id,omitempty"`
	Name     string           `json:"name"`
	Latest   int              `json:"latest"`
	Versions []Version        `json:"versions"`
	Aliases  map[string]Alias `json:"aliases,omitempty"`
	Created  time.Time        `json:"created"`
	Updated  time.Time        `json:"updated"`
}

// Version is one immutable deployment of a function.
type Version struct {
	Number int `json:"version"`
	// Digest is "sha256:" and the hex SHA-256 of the artifact.
	Digest  string    `json:"digest"`
	Size    int64     `json:"size"`
	Spec    Spec      `json:"spec"`
	Created time.Time `json:"created"`
}

// Version returns version n of f (0 means the latest), or false.
func (f *Function) Version(n int) (Version, bool) {
	if n == 0 {
		n = f.Latest
	}
	i := sort.Search(len(f.Versions), func(i int) bool { return f.Versions[i].Number >= n })
	if i < len(f.Versions) && f.Versions[i].Number == n {
		return f.Versions[i], true
	}
	return Version{}, false
}

// Public reports whether f's latest version is public (auth: none). A
// function deployed again with auth: key closes its older versions and
// aliases too: one public only while the latest is.
func (f *Function) Public() bool {
	latest, ok := f.Version(0)
	return ok && latest.Spec.Auth == AuthNone
}

// Checker makes sure an artifact can run under a spec before its version is
// recorded: for WebAssembly, it compiles the module.
type Checker interface {
	Check(ctx context.Context, spec Spec, digest string, artifact []byte) error
}

// ErrNotFound is returned for a function or version that does not exist.
var ErrNotFound = errors.New("not found")

// ErrTenantChanged is returned for a deploy to a function of a tenant that
// was deleted, and created again under its name, since the deploy began.
var ErrTenantChanged = errors.New("its tenant was deleted and created again")

// InvalidError is a deploy refused for what it asked: a bad spec or artifact.
type InvalidError struct{ Err error }

func (e *InvalidError) Error() string { return e.Err.Error() }
func (e *InvalidError) Unwrap() error { return e.Err }

// Deps are what a Registry needs.
type Deps struct {
	Store     *store.Store
	Artifacts *Artifacts
	Checker   Checker
	Logger    *slog.Logger
	// MaxFunctions returns how many functions a tenant may have (0: no
	// bound); nil bounds none.
	MaxFunctions func(tenant string) int
}

// QuotaError is a deploy of a new function refused for the tenant's
// function quota.
type QuotaError struct{ Max int }

func (e *QuotaError) Error() string {
	return fmt.Sprintf("tenant is over its functions quota (%d functions); delete one first", e.Max)
}

// Registry reads and writes functions. Writes go to the store; reads come
// from the in-memory view, which a watch on the store keeps current on every
// node.
type Registry struct {
	functions *store.KV
	artifacts *Artifacts
	checker   Checker
	log       *slog.Logger
	now       func() time.Time

	view *store.View[Function]

	// checking holds one slot per tenant (a chan struct{} of capacity 1):
	// a tenant's artifacts are checked one at a time, so that one tenant's
	// deploys cannot take every compile of the node.
	checking sync.Map

	maxFunctions func(tenant string) int
	// creating holds a *sync.Mutex per tenant: a new function is counted
	// against the quota and created under it, so that deploys of new
	// names at once cannot all pass the count.
	creating sync.Map
}

// New opens the registry's buckets.
func New(ctx context.Context, deps Deps) (*Registry, error) {
	if deps.Store == nil || deps.Artifacts == nil || deps.Checker == nil {
		return nil, errors.New("registry: Store, Artifacts and Checker are required")
	}
	fns, err := deps.Store.KV(ctx, functionsBucket)
	if err != nil {
		return nil, err
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Registry{
		functions:    fns,
		artifacts:    deps.Artifacts,
		checker:      deps.Checker,
		log:          log,
		now:          time.Now,
		view:         store.NewView[Function](fns, log),
		maxFunctions: deps.MaxFunctions,
	}, nil
}

// OnRemove registers fn to be called (on the watch goroutine) with each
// function that leaves the view. Call it before Start.
func (r *Registry) OnRemove(fn func(Function)) {
	r.view.OnDelete(func(_ string, f Function) { fn(f) })
}

// OnChange registers fn to be called (on the watch goroutine) after every
// deploy or delete the view applies. Call it before Start.
func (r *Registry) OnChange(fn func()) { r.view.OnApply(func(string) { fn() }) }

// All returns copies of every function of every tenant.
func (r *Registry) All() []Function {
	fns := r.view.List("")
	for i := range fns {
		fns[i] = fns[i].clone()
	}
	return fns
}

// Start begins watching the store and returns once the view holds every
// function, or ctx is done. The watch runs until watchCtx is done.
func (r *Registry) Start(ctx, watchCtx context.Context) error { return r.view.Start(ctx, watchCtx) }

// Ready reports whether the view has caught up with the store once.
func (r *Registry) Ready() bool { return r.view.Ready() }

func key(tenant, name string) string { return tenant + "." + name }

// Get returns a copy of a function from the view.
func (r *Registry) Get(tenant, name string) (Function, bool) {
	if !ValidName(tenant) || !ValidName(name) {
		return Function{}, false
	}
	f, ok := r.view.Get(key(tenant, name))
	return f.clone(), ok
}

// Routed returns the versions requests reach: the latest and every alias's.
func (f *Function) Routed() []Version {
	nums := []int{f.Latest}
	for _, a := range f.Aliases {
		for _, r := range a.Routes {
			nums = append(nums, r.Version)
		}
	}
	slices.Sort(nums)
	var out []Version
	for _, n := range slices.Compact(nums) {
		if v, ok := f.Version(n); ok {
			out = append(out, v)
		}
	}
	return out
}

// Lookup returns a function from the view without copying it, for the
// request path: the caller must not modify it (or its versions, specs and
// aliases). Get returns a copy that may be modified.
func (r *Registry) Lookup(tenant, name string) (Function, bool) {
	if !ValidName(tenant) || !ValidName(name) {
		return Function{}, false
	}
	return r.view.Get(key(tenant, name))
}

// clone returns f with nothing shared with the view.
func (f Function) clone() Function {
	f.Aliases = maps.Clone(f.Aliases)
	for k, a := range f.Aliases {
		f.Aliases[k] = Alias{Routes: slices.Clone(a.Routes)}
	}
	f.Versions = slices.Clone(f.Versions)
	for i := range f.Versions {
		f.Versions[i].Spec = f.Versions[i].Spec.clone()
	}
	return f
}

// Digests returns the artifact digests of every version in the view.
func (r *Registry) Digests() map[string]bool {
	out := map[string]bool{}
	for _, f := range r.view.List("") {
		for _, v := range f.Versions {
			out[v.Digest] = true
		}
	}
	return out
}

// List returns copies of the tenant's functions from the view, sorted by name.
func (r *Registry) List(tenant string) []Function {
	if !ValidName(tenant) {
		return nil
	}
	fns := r.view.List(tenant + ".")
	for i := range fns {
		fns[i] = fns[i].clone()
	}
	return fns
}

// DeployResult says what a deploy did.
type DeployResult struct {
	Function Function
	Version  Version
	// Created is false when the latest version already had this artifact and
	// spec, so nothing new was recorded.
	Created bool
}

// check checks artifact once the tenant's other checks are done, or fails
// if ctx ends first.
func (r *Registry) check(ctx context.Context, tenant string, spec Spec, digest string, artifact []byte) error {
	slot, _ := r.checking.LoadOrStore(tenant, make(chan struct{}, 1))
	select {
	case slot.(chan struct{}) <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("registry: waiting for this tenant's other deploys: %w", context.Cause(ctx))
	}
	defer func() { <-slot.(chan struct{}) }()
	return r.checker.Check(ctx, spec, digest, artifact)
}

// Deploy records a new version of spec.Name in tenant, running artifact. The
// artifact is checked (compiled) and stored, its digest verified, before the
// version record is written; if any step fails, the function is unchanged.
// tenantID is the ID of the tenant as the deploy began: a function it
// creates carries it, and a function of another tenant of that name (the
// tenant was deleted and created again meanwhile) gets no version but
// ErrTenantChanged. "" skips the check.
func (r *Registry) Deploy(ctx context.Context, tenant, tenantID string, spec Spec, artifact []byte) (DeployResult, error) {
	if !ValidName(tenant) {
		return DeployResult{}, &InvalidError{fmt.Errorf("tenant %q is invalid", tenant)}
	}
	spec = spec.WithDefaults()
	if err := spec.Validate(); err != nil {
		return DeployResult{}, &InvalidError{err}
	}
	if len(artifact) == 0 {
		return DeployResult{}, &InvalidError{errors.New("artifact is empty")}
	}
	digest := Digest(artifact)
	if err := r.check(ctx, tenant, spec, digest, artifact); err != nil {
		return DeployResult{}, err
	}
	if err := r.artifacts.Put(ctx, digest, artifact); err != nil {
		return DeployResult{}, err
	}
	k := key(tenant, spec.Name)
	if _, exists := r.view.Get(k); !exists && r.maxFunctions != nil {
		mu, _ := r.creating.LoadOrStore(tenant, &sync.Mutex{})
		mu.(*sync.Mutex).Lock()
		defer mu.(*sync.Mutex).Unlock()
		if _, exists := r.view.Get(k); !exists {
			if max := r.maxFunctions(tenant); max > 0 && len(r.view.List(tenant+".")) >= max {
				return DeployResult{}, &QuotaError{Max: max}
			}
		}
	}
	for {
		res, rev, err := r.addVersion(ctx, k, tenant, tenantID, spec, digest, int64(len(artifact)))
		if errors.Is(err, store.ErrConflict) {
			continue // another deploy won the race; read again and retry
		}
		if err != nil {
			return DeployResult{}, err
		}
		if rev != 0 {
			if err := r.view.WaitApplied(ctx, k, rev); err != nil {
				return DeployResult{}, err
			}
		}
		// A sweep that ran between Put and the record may have taken the
		// artifact; now that a version uses it, no later sweep will.
		if err := r.artifacts.ensure(ctx, digest, artifact); err != nil {
			return DeployResult{}, err
		}
		r.log.Info("function deployed", "tenant", tenant, "function", spec.Name,
			"version", res.Version.Number, "digest", digest, "created", res.Created)
		return res, nil
	}
}

func (r *Registry) addVersion(ctx context.Context, k, tenant, tenantID string, spec Spec, digest string, size int64) (DeployResult, uint64, error) {
	now := r.now().UTC()
	cur, err := r.functions.Get(ctx, k)
	var f Function
	switch {
	case errors.Is(err, store.ErrNotFound):
		f = Function{Tenant: tenant, TenantID: tenantID, Name: spec.Name, Created: now}
	case err != nil:
		return DeployResult{}, 0, err
	default:
		if err := json.Unmarshal(cur.Value, &f); err != nil {
			return DeployResult{}, 0, fmt.Errorf("registry: record %s: %w", k, err)
		}
		if !f.of(tenantID) {
			return DeployResult{}, 0, fmt.Errorf("function %s: %w", spec.Name, ErrTenantChanged)
		}
		if f.TenantID == "" {
			f.TenantID = tenantID // recorded before functions carried it
		}
		if latest, ok := f.Version(0); ok && latest.Digest == digest && sameSpec(latest.Spec, spec) {
			return DeployResult{Function: f, Version: latest}, cur.Revision, nil
		}
	}
	v := Version{Number: f.Latest + 1, Digest: digest, Size: size, Spec: spec, Created: now}
	f.Versions = append(f.Versions, v)
	f.Latest = v.Number
	f.Updated = now
	if err := f.trim(); err != nil {
		return DeployResult{}, 0, err
	}
	data, err := json.Marshal(f)
	if err != nil {
		return DeployResult{}, 0, err
	}
	var rev uint64
	if cur.Revision == 0 {
		rev, err = r.functions.Create(ctx, k, data)
	} else {
		rev, err = r.functions.Update(ctx, k, data, cur.Revision)
	}
	if err != nil {
		return DeployResult{}, 0, err
	}
	return DeployResult{Function: f, Version: v, Created: true}, rev, nil
}

// Bounds of a function's record, which holds its versions (the store takes
// records of at most 8 MiB).
const (
	// MaxVersions is how many versions a function keeps.
	MaxVersions    = 100
	maxRecordBytes = 4 << 20
)

// trim drops f's oldest versions, but not the latest nor any an alias
// routes to, until f keeps MaxVersions and its record takes at most
// maxRecordBytes, or says why it cannot.
func (f *Function) trim() error {
	routed := map[int]bool{f.Latest: true}
	for _, a := range f.Aliases {
		for _, r := range a.Routes {
			routed[r.Version] = true
		}
	}
	for {
		size := 0
		if len(f.Versions) <= MaxVersions {
			data, err := json.Marshal(f)
			if err != nil {
				return err
			}
			if size = len(data); size <= maxRecordBytes {
				return nil
			}
		}
		i := slices.IndexFunc(f.Versions, func(v Version) bool { return !routed[v.Number] })
		if i < 0 {
			return &InvalidError{fmt.Errorf("%s's record would take %d bytes, more than %d, with only the versions its aliases route to and the latest: point its aliases at fewer versions, or make the spec smaller", f.Name, size, maxRecordBytes)}
		}
		f.Versions = slices.Delete(f.Versions, i, i+1)
	}
}

func sameSpec(a, b Spec) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// of reports whether f belongs to the tenant whose ID is tenantID (""
// stands for any, and a function recorded before functions carried the
// ID belongs to any).
func (f *Function) of(tenantID string) bool {
	return tenantID == "" || f.TenantID == "" || f.TenantID == tenantID
}

// Delete removes a function and all its versions. Nodes stop routing to it
// as soon as their view sees the delete.
func (r *Registry) Delete(ctx context.Context, tenant, name string) error {
	return r.DeleteOf(ctx, tenant, "", name)
}

// DeleteOf removes a function as Delete does if it belongs to the tenant
// whose ID is tenantID (any, for ""); another's is ErrNotFound.
func (r *Registry) DeleteOf(ctx context.Context, tenant, tenantID, name string) error {
	if !ValidName(tenant) || !ValidName(name) {
		return fmt.Errorf("function %s: %w", name, ErrNotFound)
	}
	k := key(tenant, name)
	for {
		cur, err := r.functions.Get(ctx, k)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("function %s: %w", name, ErrNotFound)
		}
		if err != nil {
			return err
		}
		var f Function
		if err := json.Unmarshal(cur.Value, &f); err != nil {
			return fmt.Errorf("registry: record %s: %w", k, err)
		}
		if !f.of(tenantID) {
			return fmt.Errorf("function %s: %w", name, ErrNotFound)
		}
		err = r.functions.Delete(ctx, k, cur.Revision)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return err
		}
		// The delete marker's revision is not returned; wait until the view
		// has seen it (or a deploy of the name since).
		if err := r.view.WaitPast(ctx, k, cur.Revision); err != nil {
			return err
		}
		r.log.Info("function deleted", "tenant", tenant, "function", name)
		return nil
	}
}
