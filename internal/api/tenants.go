package api

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/gust-faas/gust/internal/audit"
	"github.com/gust-faas/gust/internal/httperror"
	"github.com/gust-faas/gust/internal/registry"
	"github.com/gust-faas/gust/internal/tenant"
)

// TenantList is the answer to GET /v1/tenants.
type TenantList struct {
	Tenants []tenant.Tenant `json:"tenants"`
}

// NewTenant is the body of POST /v1/tenants.
type NewTenant struct {
	Name   string        `json:"name"`
	Quotas tenant.Quotas `json:"quotas"`
}

func (a *API) tenantsEndpoint(w http.ResponseWriter, r *http.Request, c call) error {
	switch r.Method {
	case http.MethodGet:
		return httperror.WriteJSON(w, http.StatusOK, TenantList{Tenants: append([]tenant.Tenant{}, a.Tenants.Tenants()...)})
	case http.MethodPost:
		var nt NewTenant
		if err := decodeJSON(w, r, &nt); err != nil {
			return err
		}
		if !registry.ValidName(nt.Name) {
			return httperror.BadRequest("tenant name %q is invalid: use 1 to 63 lowercase letters, digits and dashes, starting with a letter", nt.Name)
		}
		t, err := a.Tenants.CreateTenant(r.Context(), nt.Name, nt.Quotas)
		if errors.Is(err, tenant.ErrExists) {
			return httperror.New(http.StatusConflict, "conflict", "tenant %q already exists", nt.Name)
		}
		if err != nil {
			return tenantError(err)
		}
		return httperror.WriteJSON(w, http.StatusCreated, t)
	}
	return httperror.MethodNotAllowed(w, r, "GET, POST")
}

// TenantUpdate is the body of PUT /v1/tenants/{name}.
type TenantUpdate struct {
	Quotas *tenant.Quotas `json:"quotas"` // required: {} lifts every quota
}

func (a *API) tenantEndpoint(w http.ResponseWriter, r *http.Request, c call) error {
	name := r.PathValue("name")
	t, ok := a.Tenants.Tenant(name)
	if !ok {
		return httperror.NotFound("tenant %q not found", name)
	}
	switch r.Method {
	case http.MethodGet:
		return httperror.WriteJSON(w, http.StatusOK, t)
	case http.MethodPut:
		var u TenantUpdate
		if err := decodeJSON(w, r, &u); err != nil {
			return err
		}
		if u.Quotas == nil {
			return httperror.BadRequest(`the body must give the tenant's "quotas" ({} for none)`)
		}
		t, err := a.Tenants.SetQuotas(r.Context(), name, *u.Quotas)
		if err != nil {
			return tenantError(err)
		}
		return httperror.WriteJSON(w, http.StatusOK, t)
	case http.MethodDelete:
		if fns := a.Registry.List(name); len(fns) > 0 {
			return httperror.New(http.StatusConflict, "conflict", "tenant %q still has %d functions; delete them first", name, len(fns))
		}
		// A tenant created later under this name must not find its
		// predecessor's queued work, dead letters or idempotency keys:
		// they go first, so that a failure leaves the tenant to delete
		// again. (It has no functions left to queue more.)
		if err := a.Async.ForgetTenant(r.Context(), name); err != nil {
			return err
		}
		if err := a.Tenants.DeleteTenant(r.Context(), name); err != nil {
			return tenantError(err)
		}
		// A deploy that began before the delete may have written its
		// function after the check above, and checked its tenant before
		// the delete: gone now, the tenant takes it along.
		for _, f := range a.Registry.List(name) {
			if f.TenantID == t.ID {
				a.removeLeftover(r.Context(), name, t.ID, f.Name)
			}
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	return httperror.MethodNotAllowed(w, r, "GET, PUT, DELETE")
}

// KeyList is the answer to GET /v1/keys.
type KeyList struct {
	Keys []tenant.KeyInfo `json:"keys"`
}

// NewKey is the body of POST /v1/keys.
type NewKey struct {
	Role tenant.Role `json:"role"`
	Name string      `json:"name,omitempty"`
	// TTL is a duration such as "720h"; empty means the key does not expire.
	TTL string `json:"ttl,omitempty"`
}

// CreatedKey is the answer to POST /v1/keys: the only time the token is shown.
type CreatedKey struct {
	Key   tenant.KeyInfo `json:"key"`
	Token string         `json:"token"`
}

func (a *API) keysEndpoint(w http.ResponseWriter, r *http.Request, c call) error {
	switch r.Method {
	case http.MethodGet:
		return httperror.WriteJSON(w, http.StatusOK, KeyList{Keys: append([]tenant.KeyInfo{}, a.Tenants.Keys(c.tenant)...)})
	case http.MethodPost:
		var nk NewKey
		if err := decodeJSON(w, r, &nk); err != nil {
			return err
		}
		if !nk.Role.Valid() {
			return httperror.BadRequest("role %q is unknown: use invoker, developer, owner or admin", nk.Role)
		}
		if !c.who.Role.Allows(nk.Role) {
			return httperror.New(http.StatusForbidden, "forbidden", "a %s key cannot create %s keys", c.who.Role, nk.Role)
		}
		var ttl time.Duration
		if nk.TTL != "" {
			d, err := time.ParseDuration(nk.TTL)
			if err != nil || d <= 0 {
				return httperror.BadRequest("ttl %q is not a positive duration such as \"720h\"", nk.TTL)
			}
			ttl = d
		}
		info, token, err := a.Tenants.CreateKey(r.Context(), tenant.NewKey{Tenant: c.tenant, Role: nk.Role, Name: nk.Name, TTL: ttl})
		if err != nil {
			return tenantError(err)
		}
		return httperror.WriteJSON(w, http.StatusCreated, CreatedKey{Key: info, Token: token})
	}
	return httperror.MethodNotAllowed(w, r, "GET, POST")
}

func (a *API) keyEndpoint(w http.ResponseWriter, r *http.Request, c call) error {
	id := r.PathValue("id")
	k, ok := a.Tenants.Key(id)
	if !ok || (k.Tenant != c.tenant && c.who.Role != tenant.Admin) {
		return httperror.NotFound("key %q not found", id)
	}
	if !c.who.CanActIn(k.Tenant, tenant.Owner) {
		return httperror.New(http.StatusForbidden, "forbidden", "this key's role (%s) cannot do this; it needs %s", c.who.Role, tenant.Owner)
	}
	if !c.who.Role.Allows(k.Role) {
		// Admin keys live in the default tenant, whose owners must not
		// revoke the operator's keys.
		return httperror.New(http.StatusForbidden, "forbidden", "a %s key cannot manage %s keys", c.who.Role, k.Role)
	}
	switch r.Method {
	case http.MethodGet:
		return httperror.WriteJSON(w, http.StatusOK, k)
	case http.MethodDelete:
		info, err := a.Tenants.RevokeKey(r.Context(), id)
		if err != nil {
			return tenantError(err)
		}
		return httperror.WriteJSON(w, http.StatusOK, info)
	}
	return httperror.MethodNotAllowed(w, r, "GET, DELETE")
}

// SecretList is the answer to GET /v1/secrets: names and times, never values.
type SecretList struct {
	Secrets []tenant.SecretInfo `json:"secrets"`
}

// SecretValue is the body of PUT /v1/secrets/{name}.
type SecretValue struct {
	Value *string `json:"value"` // required: a body without it must not empty the secret
}

func (a *API) secretsEndpoint(w http.ResponseWriter, r *http.Request, c call) error {
	if r.Method != http.MethodGet {
		return httperror.MethodNotAllowed(w, r, "GET")
	}
	return httperror.WriteJSON(w, http.StatusOK, SecretList{Secrets: append([]tenant.SecretInfo{}, a.Tenants.Secrets(c.tenant)...)})
}

func (a *API) secretEndpoint(w http.ResponseWriter, r *http.Request, c call) error {
	name := r.PathValue("name")
	switch r.Method {
	case http.MethodPut:
		var v SecretValue
		if err := decodeJSON(w, r, &v); err != nil {
			return err
		}
		if v.Value == nil {
			return httperror.BadRequest(`the body must give the secret's "value" (a string)`)
		}
		if len(*v.Value) > tenant.MaxSecretBytes {
			return httperror.New(http.StatusRequestEntityTooLarge, "payload_too_large", "a secret's value is at most %d bytes; this one has %d", tenant.MaxSecretBytes, len(*v.Value))
		}
		info, err := a.Tenants.SetSecret(r.Context(), c.tenant, name, []byte(*v.Value))
		if err != nil {
			return tenantError(err)
		}
		return httperror.WriteJSON(w, http.StatusOK, info)
	case http.MethodDelete:
		if err := a.Tenants.DeleteSecret(r.Context(), c.tenant, name); err != nil {
			return tenantError(err)
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	return httperror.MethodNotAllowed(w, r, "PUT, DELETE")
}

// AuditList is the answer to GET /v1/audit.
type AuditList struct {
	Entries []audit.Entry `json:"entries"`
}

const maxAuditEntries = 10000

func (a *API) auditEndpoint(w http.ResponseWriter, r *http.Request, c call) error {
	if r.Method != http.MethodGet {
		return httperror.MethodNotAllowed(w, r, "GET")
	}
	limit := 100
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxAuditEntries {
			return httperror.BadRequest("limit %q is not a number from 1 to %d", s, maxAuditEntries)
		}
		limit = n
	}
	scope := c.tenant
	if r.URL.Query().Get("all") == "true" {
		if c.who.Role != tenant.Admin {
			return httperror.New(http.StatusForbidden, "forbidden", "only an admin key reads every tenant's audit log")
		}
		scope = ""
	}
	entries, err := a.Audit.Read(r.Context(), scope, limit)
	if err != nil {
		return err
	}
	if t, ok := a.Tenants.Tenant(scope); ok && scope != "" {
		// Not the entries of a deleted tenant of the same name.
		entries = slices.DeleteFunc(entries, func(e audit.Entry) bool { return e.Time.Before(t.Created) })
	}
	return httperror.WriteJSON(w, http.StatusOK, AuditList{Entries: append([]audit.Entry{}, entries...)})
}

// tenantError maps the tenant service's errors to answers.
func tenantError(err error) error {
	if errors.Is(err, tenant.ErrNotFound) {
		return httperror.NotFound("%v", err)
	}
	var invalid *tenant.InvalidError
	if errors.As(err, &invalid) {
		return httperror.BadRequest("%v", invalid.Err)
	}
	return err
}
