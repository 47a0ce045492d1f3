package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"time"

	"github.com/gust-faas/gust/internal/httperror"
	"github.com/gust-faas/gust/internal/pool"
	"github.com/gust-faas/gust/internal/registry"
	"github.com/gust-faas/gust/internal/runtime"
	"github.com/gust-faas/gust/internal/tenant"
)

// Summary is a function in a list.
type Summary struct {
	Name     string    `json:"name"`
	Tenant   string    `json:"tenant"`
	Latest   int       `json:"latest"`
	Runtime  string    `json:"runtime"`
	MemoryMB int       `json:"memory_mb"`
	Updated  time.Time `json:"updated"`
}

// List is the answer to GET /v1/functions.
type List struct {
	Functions []Summary `json:"functions"`
}

func (a *API) functions(w http.ResponseWriter, r *http.Request, c call) error {
	if r.Method != http.MethodGet {
		return httperror.MethodNotAllowed(w, r, "GET")
	}
	list := List{Functions: []Summary{}}
	for _, f := range a.Registry.List(c.tenant) {
		latest, _ := f.Version(0)
		list.Functions = append(list.Functions, Summary{
			Name: f.Name, Tenant: f.Tenant, Latest: f.Latest,
			Runtime: latest.Spec.Runtime, MemoryMB: latest.Spec.MemoryMB, Updated: f.Updated,
		})
	}
	return httperror.WriteJSON(w, http.StatusOK, list)
}

func (a *API) function(w http.ResponseWriter, r *http.Request, c call) error {
	name := r.PathValue("name")
	switch r.Method {
	case http.MethodGet:
		f, ok := a.Registry.Get(c.tenant, name)
		if !ok {
			return httperror.NotFound("function %q not found", name)
		}
		return httperror.WriteJSON(w, http.StatusOK, FunctionDetail{Function: f, Instances: a.Instances.Stats(c.tenant, name)})
	case http.MethodPut, http.MethodPost:
		return a.deploy(w, r, c, name)
	case http.MethodDelete:
		err := a.Registry.Delete(r.Context(), c.tenant, name)
		if errors.Is(err, registry.ErrNotFound) {
			return httperror.NotFound("function %q not found", name)
		}
		if err != nil {
			return err
		}
		// A new function of the same name inherits none of it.
		if err := a.Async.ForgetFunction(context.WithoutCancel(r.Context()), c.tenant, name); err != nil {
			a.log.Error("could not remove a deleted function's dead letters and idempotency keys", "tenant", c.tenant, "function", name, "err", err)
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	default:
		return httperror.MethodNotAllowed(w, r, "GET, PUT, POST, DELETE")
	}
}

// FunctionDetail is the answer to GET /v1/functions/{name}: the function,
// and the instances of its versions on the node that answered.
type FunctionDetail struct {
	registry.Function
	Instances map[int]pool.Stats `json:"instances"`
}

// AliasSpec is the body of PUT /v1/functions/{name}/aliases/{alias}: a
// version, or routes that split the traffic between two versions.
type AliasSpec struct {
	Version int              `json:"version,omitempty"`
	Routes  []registry.Route `json:"routes,omitempty"`
}

func (a *API) aliasEndpoint(w http.ResponseWriter, r *http.Request, c call) error {
	name, alias := r.PathValue("name"), r.PathValue("alias")
	var (
		f   registry.Function
		err error
	)
	switch r.Method {
	case http.MethodPut:
		var spec AliasSpec
		if err := decodeJSON(w, r, &spec); err != nil {
			return err
		}
		if (spec.Version == 0) == (len(spec.Routes) == 0) {
			return httperror.BadRequest("an alias names a \"version\", or \"routes\" that split the traffic between two versions")
		}
		routes := spec.Routes
		if spec.Version != 0 {
			routes = []registry.Route{{Version: spec.Version, Weight: 100}}
		}
		f, err = a.Registry.SetAlias(r.Context(), c.tenant, name, alias, registry.Alias{Routes: routes})
	case http.MethodDelete:
		f, err = a.Registry.DeleteAlias(r.Context(), c.tenant, name, alias)
	default:
		return httperror.MethodNotAllowed(w, r, "PUT, DELETE")
	}
	if err != nil {
		return registryError(name, err)
	}
	return httperror.WriteJSON(w, http.StatusOK, f)
}

func (a *API) rollback(w http.ResponseWriter, r *http.Request, c call) error {
	if r.Method != http.MethodPost {
		return httperror.MethodNotAllowed(w, r, "POST")
	}
	name := r.PathValue("name")
	res, err := a.Registry.Rollback(r.Context(), c.tenant, name)
	if err != nil {
		return registryError(name, err)
	}
	return httperror.WriteJSON(w, http.StatusCreated, Deployed{Function: res.Function, Version: res.Version, Created: true})
}

// registryError maps the registry's errors to answers.
func registryError(name string, err error) error {
	var invalid *registry.InvalidError
	switch {
	case errors.As(err, &invalid):
		return httperror.BadRequest("%v", invalid.Err)
	case errors.Is(err, registry.ErrNotFound):
		return httperror.NotFound("%v", err)
	}
	return err
}

// Deployed is the answer to a deploy.
type Deployed struct {
	Function registry.Function `json:"function"`
	Version  registry.Version  `json:"version"`
	// Created is false when the latest version already ran this artifact
	// with this spec, so no version was added.
	Created bool `json:"created"`
}

// deploy takes a multipart/form-data body with a "spec" part (JSON) and an
// "artifact" part (the module).
func (a *API) deploy(w http.ResponseWriter, r *http.Request, c call, name string) error {
	tenantName := c.tenant
	before, _ := a.Tenants.Tenant(tenantName)
	if !registry.ValidName(name) {
		return httperror.BadRequest("function name %q is invalid: use 1 to 63 lowercase letters, digits and dashes, starting with a letter", name)
	}
	mediaType, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mediaType != "multipart/form-data" {
		return httperror.New(http.StatusUnsupportedMediaType, "unsupported_media_type",
			"a deploy is multipart/form-data with a \"spec\" part (JSON) and an \"artifact\" part")
	}
	release, err := a.uploadSlot(w, r, tenantName)
	if err != nil {
		return err
	}
	defer release()
	// A slow upload must not hold its slot for ever.
	if err := http.NewResponseController(w).SetReadDeadline(time.Now().Add(UploadTimeout)); err != nil {
		a.log.Warn("a deploy's upload has no deadline", "err", err)
	}
	r.Body = http.MaxBytesReader(w, r.Body, MaxArtifactBytes+maxSpecPartBytes+64<<10)
	spec, artifact, err := readDeploy(r)
	if err != nil {
		return err
	}
	if spec.Name == "" {
		spec.Name = name
	}
	if spec.Name != name {
		return httperror.BadRequest("spec names function %q but the URL names %q", spec.Name, name)
	}
	// The upload may have taken minutes: the key must still be valid now,
	// and its tenant still the one it was (a revoked key, or a deleted
	// tenant, must not deploy). A key revoked during the compile that
	// follows came too late to stop it.
	if err := a.stillAuthorized(r, c, tenant.Developer, before); err != nil {
		return err
	}
	if err := a.checkDeploy(tenantName, spec); err != nil {
		return err
	}
	res, err := a.Registry.Deploy(r.Context(), tenantName, before.ID, spec, artifact)
	if errors.Is(err, registry.ErrTenantChanged) {
		return httperror.NotFound("tenant %q was deleted during the deploy", tenantName)
	}
	if err != nil {
		return deployError(err)
	}
	if now, ok := a.Tenants.Tenant(tenantName); !ok || now.ID != before.ID {
		// The tenant was deleted while the artifact compiled: a function
		// must not outlive it (a new tenant of the name has its own).
		a.removeLeftover(r.Context(), tenantName, before.ID, name)
		return httperror.NotFound("tenant %q was deleted during the deploy", tenantName)
	}
	status := http.StatusCreated
	if !res.Created {
		status = http.StatusOK
	}
	return httperror.WriteJSON(w, status, Deployed{Function: res.Function, Version: res.Version, Created: res.Created})
}

// removeLeftover deletes function name of the tenant whose ID is
// tenantID, deleted since: a deploy that raced the delete wrote it.
func (a *API) removeLeftover(ctx context.Context, tenantName, tenantID, name string) {
	if err := a.Registry.DeleteOf(context.WithoutCancel(ctx), tenantName, tenantID, name); err != nil && !errors.Is(err, registry.ErrNotFound) {
		a.log.Error("could not remove a function deployed as its tenant was deleted", "tenant", tenantName, "function", name, "err", err)
	}
}

// uploadSlot waits for a slot of a deploy in memory, at most UploadWait,
// and returns its release.
func (a *API) uploadSlot(w http.ResponseWriter, r *http.Request, tenantName string) (release func(), err error) {
	release, ok, tenantFull := a.uploads.take(r.Context(), tenantName, UploadWait)
	switch {
	case ok:
		return release, nil
	case r.Context().Err() != nil:
		return nil, r.Context().Err()
	}
	w.Header().Set("Retry-After", "5")
	if tenantFull {
		return nil, httperror.New(http.StatusServiceUnavailable, "busy", "tenant %q has %d deploys being uploaded or compiled; try again once one ends", tenantName, maxTenantUploads)
	}
	return nil, httperror.New(http.StatusServiceUnavailable, "busy", "%d deploys are being uploaded or compiled on this server; try again in a moment", maxUploads)
}

// stillAuthorized checks again, at the end of a long call, that its key is
// valid and may still do what it did, in the same tenant it began in.
func (a *API) stillAuthorized(r *http.Request, c call, need tenant.Role, began tenant.Tenant) error {
	who, err := a.Tenants.Authenticate(tenant.BearerToken(r.Header.Get("Authorization")))
	if err != nil || who.KeyID != c.who.KeyID {
		return httperror.New(http.StatusUnauthorized, "unauthorized", "the API key was revoked during the call")
	}
	if now, ok := a.Tenants.Tenant(c.tenant); !ok || now.ID != began.ID {
		return httperror.NotFound("tenant %q was deleted during the call", c.tenant)
	}
	if !who.CanActIn(c.tenant, need) {
		return httperror.New(http.StatusForbidden, "forbidden", "this key's role (%s) cannot do this; it needs %s", who.Role, need)
	}
	return nil
}

// checkDeploy refuses a deploy that would put the tenant over its function
// quota, or that uses secrets the tenant has not set.
func (a *API) checkDeploy(tenantName string, spec registry.Spec) error {
	t, _ := a.Tenants.Tenant(tenantName)
	// Before the compile, as a courtesy; the registry counts again as it
	// creates the function.
	if _, exists := a.Registry.Get(tenantName, spec.Name); !exists && t.Quotas.MaxFunctions > 0 {
		if n := len(a.Registry.List(tenantName)); n >= t.Quotas.MaxFunctions {
			return deployError(&registry.QuotaError{Max: t.Quotas.MaxFunctions})
		}
	}
	for _, name := range spec.Secrets {
		if !a.Tenants.HasSecret(tenantName, name) {
			return httperror.BadRequest("the spec uses secret %q, which is not set in this tenant: set it with 'gust secret set %s'", name, name)
		}
	}
	return nil
}

func readDeploy(r *http.Request) (registry.Spec, []byte, error) {
	mr, err := r.MultipartReader()
	if err != nil {
		return registry.Spec{}, nil, httperror.BadRequest("reading the multipart body: %v", err)
	}
	var (
		spec     registry.Spec
		artifact []byte
		gotSpec  bool
		gotArt   bool
	)
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return registry.Spec{}, nil, partError("the multipart body", err)
		}
		switch name := part.FormName(); {
		case name == "spec" && gotSpec || name == "artifact" && gotArt:
			return registry.Spec{}, nil, httperror.BadRequest("the multipart body has more than one %q part", name)
		case name == "spec":
			data, err := readPart(part, maxSpecPartBytes)
			if err != nil {
				return registry.Spec{}, nil, partError("the spec", err)
			}
			// The registry validates the spec once its name is settled.
			spec, err = registry.DecodeSpecJSON(data)
			if err != nil {
				return registry.Spec{}, nil, httperror.BadRequest("%v", err)
			}
			gotSpec = true
		case name == "artifact":
			artifact, err = readPart(part, MaxArtifactBytes)
			if err != nil {
				return registry.Spec{}, nil, partError("the artifact", err)
			}
			gotArt = true
		default:
			return registry.Spec{}, nil, httperror.BadRequest("unexpected part %q: a deploy has a \"spec\" and an \"artifact\" part", part.FormName())
		}
	}
	if !gotSpec || !gotArt {
		return registry.Spec{}, nil, httperror.BadRequest("a deploy needs a \"spec\" part and an \"artifact\" part")
	}
	if len(artifact) == 0 {
		return registry.Spec{}, nil, httperror.BadRequest("artifact is empty")
	}
	return spec, artifact, nil
}

var errPartTooLarge = errors.New("part too large")

func readPart(r io.Reader, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w: larger than %d bytes", errPartTooLarge, limit)
	}
	return data, nil
}

// UploadTimeout is how long a deploy's body may take to arrive: 64 MiB at
// about 220 KB/s (a variable for tests).
var UploadTimeout = 5 * time.Minute

func partError(what string, err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return httperror.New(http.StatusRequestTimeout, "request_timeout", "the deploy's body did not arrive within %s", UploadTimeout)
	}
	var maxErr *http.MaxBytesError
	if errors.Is(err, errPartTooLarge) || errors.As(err, &maxErr) {
		return httperror.New(http.StatusRequestEntityTooLarge, "payload_too_large", "%s is too large: an artifact may be at most %d MiB, a spec %d KiB", what, MaxArtifactBytes>>20, maxSpecPartBytes>>10)
	}
	return httperror.BadRequest("reading %s: %v", what, err)
}

func deployError(err error) error {
	var invalid *registry.InvalidError
	if errors.As(err, &invalid) {
		return httperror.BadRequest("%v", invalid.Err)
	}
	var quota *registry.QuotaError
	if errors.As(err, &quota) {
		return httperror.New(http.StatusTooManyRequests, "quota_exceeded", "%v", quota)
	}
	var rerr *runtime.Error
	if errors.As(err, &rerr) {
		switch rerr.Kind {
		case runtime.BadArtifact:
			return &httperror.Error{Status: http.StatusUnprocessableEntity, Code: "bad_artifact", Message: rerr.Message, Cause: err}
		case runtime.OutOfMemory:
			return &httperror.Error{Status: http.StatusUnprocessableEntity, Code: "bad_spec", Message: rerr.Message, Cause: err}
		}
	}
	return err
}
