// Package api is Gust's control plane: the JSON REST API under /v1 to manage
// functions, tenants, API keys and secrets and to read the audit log, with
// the middleware that authenticates every call, checks its role, and
// records every change in the audit log.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gust-faas/gust/internal/async"
	"github.com/gust-faas/gust/internal/audit"
	"github.com/gust-faas/gust/internal/httperror"
	"github.com/gust-faas/gust/internal/pool"
	"github.com/gust-faas/gust/internal/registry"
	"github.com/gust-faas/gust/internal/tenant"
)

// MaxArtifactBytes bounds a deployed artifact.
const MaxArtifactBytes = 64 << 20

const (
	maxSpecPartBytes = 256 << 10
	// JSON escapes a byte in up to 6 ("\u00e9", as Go writes <, > and &,
	// and Python every non-ASCII character): room for the largest secret
	// however its client escapes it.
	maxJSONBodyBytes = tenant.MaxSecretBytes*6 + 4<<10
)

// Registry is what the API needs of the registry.
type Registry interface {
	Deploy(ctx context.Context, tenant, tenantID string, spec registry.Spec, artifact []byte) (registry.DeployResult, error)
	Get(tenant, name string) (registry.Function, bool)
	List(tenant string) []registry.Function
	Delete(ctx context.Context, tenant, name string) error
	DeleteOf(ctx context.Context, tenant, tenantID, name string) error
	SetAlias(ctx context.Context, tenant, fn, alias string, a registry.Alias) (registry.Function, error)
	DeleteAlias(ctx context.Context, tenant, fn, alias string) (registry.Function, error)
	Rollback(ctx context.Context, tenant, fn string) (registry.DeployResult, error)
}

// Instances reports the instances of a function's versions on this node.
type Instances interface {
	Stats(tenant, function string) map[int]pool.Stats
}

// Deps are what the API needs. All are required.
type Deps struct {
	Async     *async.Service
	Registry  Registry
	Instances Instances
	Tenants   *tenant.Service
	Audit     *audit.Log
	Logger    *slog.Logger
	Version   string
	// Runtimes are the runtimes this node runs; Unavailable says why it
	// cannot run the others.
	Runtimes    []string
	Unavailable map[string]string
}

// API serves /v1.
type API struct {
	Deps
	log     *slog.Logger
	uploads *uploadSlots // a slot for each deploy being read into memory
}

// New returns an API.
func New(deps Deps) *API {
	return &API{Deps: deps, log: deps.Logger, uploads: newUploadSlots(maxUploads, maxTenantUploads)}
}

// maxUploads bounds the deploys that hold their artifact in memory at once
// (up to MaxArtifactBytes each, and the compile's own): twenty at once
// took the server to 4.5 GB. One tenant may hold maxTenantUploads of them.
// Others wait up to UploadWait for a slot.
const (
	maxUploads       = 4
	maxTenantUploads = 2
)

// UploadWait is how long a deploy waits for an upload slot before it is
// answered 503.
var UploadWait = 30 * time.Second

// call is an authenticated request: who makes it, and the tenant it acts in.
type call struct {
	who    tenant.Principal
	tenant string
}

type handlerFunc func(w http.ResponseWriter, r *http.Request, c call) error

// Register adds the API's routes to mux. Every path answers every method:
// the handlers refuse the wrong ones with a JSON 405.
func (a *API) Register(mux *http.ServeMux) {
	mux.Handle("/v1/", httperror.Handler(a.log, func(w http.ResponseWriter, r *http.Request) error {
		return httperror.NotFound("no API endpoint at %s", r.URL.Path)
	}))
	mux.Handle("/v1/info", httperror.Handler(a.log, a.info))
	a.route(mux, "/v1/whoami", tenant.Invoker, a.whoami)
	a.route(mux, "/v1/functions", tenant.Developer, a.functions)
	a.route(mux, "/v1/functions/{name}", tenant.Developer, a.function)
	a.route(mux, "/v1/functions/{name}/aliases/{alias}", tenant.Developer, a.aliasEndpoint)
	a.route(mux, "/v1/functions/{name}/rollback", tenant.Developer, a.rollback)
	a.route(mux, "/v1/functions/{name}/dlq", tenant.Developer, a.deadLetters)
	a.route(mux, "/v1/functions/{name}/dlq/replay", tenant.Developer, a.replay)
	a.route(mux, "/v1/invocations/{id}", tenant.Invoker, a.invocation)
	a.route(mux, "/v1/tenants", tenant.Admin, a.tenantsEndpoint)
	a.route(mux, "/v1/tenants/{name}", tenant.Admin, a.tenantEndpoint)
	a.route(mux, "/v1/keys", tenant.Owner, a.keysEndpoint)
	// Whether a key id exists in another tenant is not for any role to learn:
	// the handler answers 404 before it checks the role.
	a.route(mux, "/v1/keys/{id}", tenant.Invoker, a.keyEndpoint)
	a.route(mux, "/v1/secrets", tenant.Owner, a.secretsEndpoint)
	a.route(mux, "/v1/secrets/{name}", tenant.Owner, a.secretEndpoint)
	a.route(mux, "/v1/audit", tenant.Owner, a.auditEndpoint)
}

// route registers fn behind authentication: the caller needs a key whose
// role is at least need in the tenant it acts in. Every call that may change
// something is recorded in the audit log.
func (a *API) route(mux *http.ServeMux, pattern string, need tenant.Role, fn handlerFunc) {
	mux.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who, err := a.Tenants.Authenticate(tenant.BearerToken(r.Header.Get("Authorization")))
		if err != nil {
			httperror.Write(w, r, a.log, httperror.Unauthorized(w))
			return
		}
		log := a.log.With("key_id", who.KeyID)
		sw := &statusWriter{ResponseWriter: w}
		c, err := a.authorize(r, who, need)
		if err == nil {
			err = fn(sw, r, c)
		}
		if err != nil {
			httperror.Write(sw, r, log, err)
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			a.Audit.Record(r.Context(), audit.Entry{
				Time: time.Now().UTC(), Tenant: c.tenant, KeyID: who.KeyID, Role: string(who.Role),
				Action: r.Method + " " + pattern, Target: r.URL.Path, Remote: r.RemoteAddr, Status: sw.status,
			})
		}
	}))
}

// authorize settles the tenant a call acts in — the key's own, or for an
// admin the one named by ?tenant= — and checks the key's role there. Naming
// another tenant without being admin gets 404, as if it did not exist.
func (a *API) authorize(r *http.Request, who tenant.Principal, need tenant.Role) (call, error) {
	c := call{who: who, tenant: who.Tenant}
	if t := r.URL.Query().Get("tenant"); t != "" && t != who.Tenant {
		if who.Role != tenant.Admin {
			return call{who: who, tenant: who.Tenant}, httperror.NotFound("tenant %q not found", t)
		}
		if _, ok := a.Tenants.Tenant(t); !ok {
			return c, httperror.NotFound("tenant %q not found", t)
		}
		c.tenant = t
	}
	if !who.CanActIn(c.tenant, need) {
		return c, httperror.New(http.StatusForbidden, "forbidden", "this key's role (%s) cannot do this; it needs %s", who.Role, need)
	}
	return c, nil
}

// statusWriter remembers the status a handler wrote, for the audit log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection (a deploy's
// read deadline).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Info describes this server.
type Info struct {
	Version  string   `json:"version"`
	Runtimes []string `json:"runtimes"`
	// UnavailableRuntimes says why this node cannot run a runtime.
	UnavailableRuntimes map[string]string `json:"unavailable_runtimes,omitempty"`
}

func (a *API) info(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return httperror.MethodNotAllowed(w, r, "GET")
	}
	return httperror.WriteJSON(w, http.StatusOK, Info{Version: a.Version, Runtimes: a.Runtimes, UnavailableRuntimes: a.Unavailable})
}

// Whoami is the answer to GET /v1/whoami.
type Whoami struct {
	KeyID  string      `json:"key_id"`
	Tenant string      `json:"tenant"`
	Role   tenant.Role `json:"role"`
}

func (a *API) whoami(w http.ResponseWriter, r *http.Request, c call) error {
	if r.Method != http.MethodGet {
		return httperror.MethodNotAllowed(w, r, "GET")
	}
	return httperror.WriteJSON(w, http.StatusOK, Whoami{KeyID: c.who.KeyID, Tenant: c.who.Tenant, Role: c.who.Role})
}

// decodeJSON reads a JSON object from the request body into v, refusing
// bodies over maxJSONBodyBytes, invalid UTF-8 (which the decoder would
// quietly replace), anything but an object (null would leave v as it
// was), unknown fields and trailing data.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxJSONBodyBytes))
	var maxErr *http.MaxBytesError
	switch {
	case errors.As(err, &maxErr):
		return httperror.New(http.StatusRequestEntityTooLarge, "payload_too_large", "request body is larger than %d bytes", maxJSONBodyBytes)
	case err != nil:
		return httperror.BadRequest("could not read the request body: %v", err)
	case !utf8.Valid(body):
		return httperror.BadRequest("request body is not valid UTF-8")
	case !bytes.HasPrefix(bytes.TrimLeft(body, " \t\r\n"), []byte("{")):
		return httperror.BadRequest("request body is not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return httperror.BadRequest("request body is not valid JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if _, err := dec.Token(); err != io.EOF {
		return httperror.BadRequest("request body is not valid JSON: data after the object")
	}
	return nil
}
