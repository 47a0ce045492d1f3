package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"

	"github.com/gust-faas/gust/internal/store"
)

// Alias is a name for one version of a function, or for a split of its
// traffic between two versions (a canary).
type Alias struct {
	Routes []Route `json:"routes"`
}

// Route sends Weight percent of an alias's requests to Version.
type Route struct {
	Version int `json:"version"`
	Weight  int `json:"weight"`
}

// Pick returns the version a request through a goes to.
func (a Alias) Pick() int {
	n := rand.IntN(100)
	for _, r := range a.Routes {
		if n < r.Weight {
			return r.Version
		}
		n -= r.Weight
	}
	return a.Routes[len(a.Routes)-1].Version
}

// validateAlias checks an alias of f named name.
func validateAlias(f Function, name string, a Alias) error {
	var errs []error
	if _, err := strconv.Atoi(name); err == nil || !ValidName(name) || name == "latest" {
		errs = append(errs, fmt.Errorf("alias name %q is invalid: use 1 to 63 lowercase letters, digits and dashes, starting with a letter, and not \"latest\", so that it cannot be taken for a version", name))
	}
	if len(a.Routes) < 1 || len(a.Routes) > 2 {
		errs = append(errs, fmt.Errorf("an alias routes to one version, or splits traffic between two; this one has %d routes", len(a.Routes)))
	}
	sum := 0
	seen := map[int]bool{}
	for _, r := range a.Routes {
		if _, ok := f.Version(r.Version); !ok || r.Version < 1 {
			errs = append(errs, fmt.Errorf("version %d of %s does not exist (latest is %d)", r.Version, f.Name, f.Latest))
		}
		if seen[r.Version] {
			errs = append(errs, fmt.Errorf("version %d is routed to twice", r.Version))
		}
		seen[r.Version] = true
		if r.Weight < 1 || r.Weight > 100 {
			errs = append(errs, fmt.Errorf("weight %d of version %d is out of range 1 to 100", r.Weight, r.Version))
		}
		sum += r.Weight
	}
	if len(a.Routes) > 0 && sum != 100 {
		errs = append(errs, fmt.Errorf("weights add up to %d, not 100", sum))
	}
	return errors.Join(errs...)
}

// SetAlias points alias name of a function at its routes.
func (r *Registry) SetAlias(ctx context.Context, tenant, fn, name string, a Alias) (Function, error) {
	if len(a.Routes) == 1 && a.Routes[0].Weight == 0 {
		a.Routes[0].Weight = 100
	}
	return r.update(ctx, tenant, fn, func(f *Function) error {
		if err := validateAlias(*f, name, a); err != nil {
			return &InvalidError{err}
		}
		if f.Aliases == nil {
			f.Aliases = map[string]Alias{}
		}
		f.Aliases[name] = a
		return nil
	})
}

// DeleteAlias removes alias name of a function.
func (r *Registry) DeleteAlias(ctx context.Context, tenant, fn, name string) (Function, error) {
	return r.update(ctx, tenant, fn, func(f *Function) error {
		if _, ok := f.Aliases[name]; !ok {
			return fmt.Errorf("alias %q of %s: %w", name, fn, ErrNotFound)
		}
		delete(f.Aliases, name)
		return nil
	})
}

// Rollback adds a version that runs what the version before the latest ran
// (its artifact and spec), so that the latest is the previous code again
// and the history goes on (within the versions a function keeps).
func (r *Registry) Rollback(ctx context.Context, tenant, fn string) (DeployResult, error) {
	var res DeployResult
	_, err := r.update(ctx, tenant, fn, func(f *Function) error {
		if len(f.Versions) < 2 {
			return &InvalidError{fmt.Errorf("%s has no version before %d to roll back to", fn, f.Latest)}
		}
		prev := f.Versions[len(f.Versions)-2]
		v := Version{Number: f.Latest + 1, Digest: prev.Digest, Size: prev.Size, Spec: prev.Spec, Created: r.now().UTC()}
		f.Versions = append(f.Versions, v)
		f.Latest, f.Updated = v.Number, v.Created
		if err := f.trim(); err != nil {
			return err
		}
		res = DeployResult{Function: *f, Version: v, Created: true}
		return nil
	})
	return res, err
}

// update changes a function's record with compare-and-set, retrying on
// conflict, and waits until this node's view has the change.
func (r *Registry) update(ctx context.Context, tenant, fn string, change func(*Function) error) (Function, error) {
	if !ValidName(tenant) || !ValidName(fn) {
		return Function{}, fmt.Errorf("function %s: %w", fn, ErrNotFound)
	}
	k := key(tenant, fn)
	for {
		cur, err := r.functions.Get(ctx, k)
		if errors.Is(err, store.ErrNotFound) {
			return Function{}, fmt.Errorf("function %s: %w", fn, ErrNotFound)
		}
		if err != nil {
			return Function{}, err
		}
		var f Function
		if err := json.Unmarshal(cur.Value, &f); err != nil {
			return Function{}, fmt.Errorf("registry: record %s: %w", k, err)
		}
		if err := change(&f); err != nil {
			return Function{}, err
		}
		data, err := json.Marshal(f)
		if err != nil {
			return Function{}, err
		}
		rev, err := r.functions.Update(ctx, k, data, cur.Revision)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return Function{}, err
		}
		return f, r.view.WaitApplied(ctx, k, rev)
	}
}
