// Package gateway is the data path: it turns an HTTP request to
// /fn/{tenant}/{function}[@version][/path] into an invocation, and the
// function's response, or the reason it failed, into the HTTP response.
package gateway

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gust-faas/gust/internal/async"
	"github.com/gust-faas/gust/internal/httperror"
	"github.com/gust-faas/gust/internal/pool"
	"github.com/gust-faas/gust/internal/registry"
	"github.com/gust-faas/gust/internal/runtime"
	"github.com/gust-faas/gust/internal/tenant"
)

// Invoker runs one invocation of a function version.
type Invoker interface {
	Invoke(ctx context.Context, t pool.Target, req *runtime.Request, log *slog.Logger) (*runtime.Response, pool.Outcome, error)
}

// Functions finds functions in the registry's in-memory view. What Lookup
// returns is shared with the view and must not be modified.
type Functions interface {
	Lookup(tenant, name string) (registry.Function, bool)
}

// Authenticator tells who a bearer token stands for.
type Authenticator interface {
	Authenticate(token string) (tenant.Principal, error)
}

// Tenants finds a tenant's quotas.
type Tenants interface {
	Tenant(name string) (tenant.Tenant, bool)
}

// Enqueuer queues asynchronous invocations.
type Enqueuer interface {
	Enqueue(ctx context.Context, job async.Job, idempotencyKey string) (async.Record, bool, error)
	// CheckCallbackURL reports what is wrong with an X-Callback-Url.
	CheckCallbackURL(raw string) error
}

// Deps are what a Gateway needs. All are required.
type Deps struct {
	Async     Enqueuer
	Functions Functions
	Invoker   Invoker
	Auth      Authenticator
	Tenants   Tenants
	Limiter   *tenant.Limiter
	Logger    *slog.Logger
}

// Gateway serves function invocations over HTTP.
type Gateway struct {
	Deps
	log *slog.Logger
}

// New returns a Gateway.
func New(deps Deps) *Gateway {
	return &Gateway{Deps: deps, log: deps.Logger}
}

// Register adds the gateway's routes to mux.
func (g *Gateway) Register(mux *http.ServeMux) {
	mux.Handle("/fn/{tenant}/{function}", g)
	mux.Handle("/fn/{tenant}/{function}/{path...}", g)
}

// Response headers.
const (
	HeaderInvocationID = "X-Gust-Invocation-Id"
	HeaderVersion      = "X-Gust-Function-Version"
	HeaderColdStart    = "X-Gust-Cold-Start"
)

// serverTiming is the Server-Timing header of an invocation: the function's
// own time, and the cold start's if it paid one.
func serverTiming(took time.Duration, out pool.Outcome) string {
	b := make([]byte, 0, 40)
	if out.Queued > 0 {
		b = append(appendMs(append(b, "wait;dur="...), out.Queued), ", "...)
	}
	if out.Cold {
		b = append(appendMs(append(b, "init;dur="...), out.Init), ", "...)
	}
	return string(appendMs(append(b, "fn;dur="...), took-out.Init-out.Queued))
}

// appendMs appends d in milliseconds, to the microsecond ("1.234"). By
// hand: every response carries one or more, and formatting a float costs
// several times as much.
func appendMs(b []byte, d time.Duration) []byte {
	us := d.Microseconds()
	if us < 0 {
		b, us = append(b, '-'), -us
	}
	b = append(strconv.AppendInt(b, us/1000, 10), '.')
	frac := us % 1000
	return append(b, byte('0'+frac/100), byte('0'+frac/10%10), byte('0'+frac%10))
}

// logger is the gateway's logger with an invocation's attributes. Made
// from slog.Attrs, it skips the conversion of Logger.With's arguments,
// which the request path pays for every request, mostly to log nothing.
func (g *Gateway) logger(attrs []slog.Attr) *slog.Logger {
	return slog.New(g.log.Handler().WithAttrs(attrs))
}

// ServeHTTP implements http.Handler.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := NewInvocationID()
	// Gust's own headers are set by key, which is canonical already:
	// Header.Set would check it again on every response.
	w.Header()[HeaderInvocationID] = []string{id}
	// The invocation's log attributes, gathered as they are learnt: a
	// logger is made of them once, for the invocation, or for its error.
	attrs := make([]slog.Attr, 0, 6)
	attrs = append(attrs, slog.String("invocation_id", id))
	if err := g.serve(w, r, id, &attrs); err != nil {
		httperror.Write(w, r, g.logger(attrs), err)
	}
}

func (g *Gateway) serve(w http.ResponseWriter, r *http.Request, id string, attrs *[]slog.Attr) error {
	tenantName := r.PathValue("tenant")
	name, version, alias, err := parseTarget(r.PathValue("function"))
	if err != nil {
		return err
	}
	*attrs = append(*attrs, slog.String("tenant", tenantName), slog.String("function", name))
	fn, found := g.Functions.Lookup(tenantName, name)
	t, tenantFound := g.Tenants.Tenant(tenantName)
	if fn.TenantID != "" && fn.TenantID != t.ID || !tenantFound {
		// Another tenant's of this name, deleted since: not this one's,
		// whatever a node's view still holds.
		found = false
	}
	a, hasAlias := fn.Aliases[alias]
	if hasAlias {
		version = a.Pick()
	}
	v, hasVersion := fn.Version(version)
	if alias != "" && !hasAlias {
		hasVersion = false
	}
	public := found && hasVersion && v.Spec.Auth == registry.AuthNone && fn.Public()
	// member: the caller has a key of the tenant, which a function's stderr
	// in an error answer is for: anyone may call a public function.
	member := false
	if !public || r.Header.Get("Authorization") != "" {
		// Authenticate before saying whether anything exists, so that a
		// caller without a key learns nothing.
		p, err := g.Auth.Authenticate(tenant.BearerToken(r.Header.Get("Authorization")))
		switch {
		case err != nil && !public:
			return httperror.Unauthorized(w)
		case err != nil:
		case p.CanActIn(tenantName, tenant.Invoker):
			*attrs = append(*attrs, slog.String("key_id", p.KeyID))
			member = true
		case !public:
			found = false
		}
	}
	if !found {
		return httperror.NotFound("function %q not found in tenant %q", name, tenantName)
	}
	if alias != "" && !hasAlias {
		return httperror.NotFound("function %q has no alias %q", name, alias)
	}
	if !hasVersion {
		return httperror.NotFound("function %q has no version %d (latest is %d)", name, version, fn.Latest)
	}
	// A queued invocation counts towards the request rate now, and towards
	// concurrency and memory when a worker runs it.
	wantAsync := preferAsync(r.Header)
	limit := v.Spec.MaxBodyBytes
	if wantAsync {
		limit = min(limit, async.MaxPayloadBytes)
	}
	// The body first: a slow upload must not hold the tenant's quota.
	body, err := readBody(w, r, limit)
	if err != nil {
		return err
	}
	if wantAsync {
		if err := g.Limiter.Accept(tenantName, t.Quotas); err != nil {
			return quotaError(w, err)
		}
	} else {
		release, err := g.Limiter.Admit(tenantName, t.Quotas, v.Spec.MemoryMB)
		if err != nil {
			return quotaError(w, err)
		}
		defer release()
	}
	req := &runtime.Request{
		Method:       r.Method,
		Path:         "/" + r.PathValue("path"),
		RawPath:      rawFunctionPath(r),
		RawQuery:     r.URL.RawQuery,
		Header:       r.Header,
		Body:         body,
		RemoteAddr:   r.RemoteAddr,
		Host:         r.Host,
		InvocationID: id,
		Tenant:       tenantName,
		Function:     name,
		Version:      v.Number,
	}
	*attrs = append(*attrs, slog.Int("version", v.Number))
	log := g.logger(*attrs)
	if wantAsync {
		return g.enqueue(w, r, req, v, log)
	}
	// The log's arguments are gathered only for a level that logs: they
	// cost allocations on every request otherwise.
	ctx := r.Context()
	if log.Enabled(ctx, slog.LevelDebug) {
		log.Debug("invocation started", "path", req.Path)
	}
	start := time.Now()
	resp, out, err := g.Invoker.Invoke(ctx, pool.Target{Tenant: tenantName, Function: name, Version: v}, req, log)
	took := time.Since(start)
	h := w.Header()
	if out.Cold {
		h[HeaderColdStart] = []string{"1"}
	}
	own := make([]string, 3) // the values of Gust's headers, in one array
	own[0] = strconv.Itoa(v.Number)
	h[HeaderVersion] = own[0:1:1]
	if err != nil {
		own[1] = serverTiming(took, out)
		h["Server-Timing"] = own[1:2:2]
		return invocationError(w, name, v, out, member, err)
	}
	if log.Enabled(ctx, slog.LevelInfo) {
		log.Info("invoked", "status", resp.Status, "duration_ms", took.Milliseconds(), "cold", out.Cold, "request_bytes", len(body), "response_bytes", len(resp.Body))
	}
	for k, vs := range resp.Header {
		h[k] = vs
	}
	// Gust's timings join the function's own, if it sent any.
	if fn := h["Server-Timing"]; fn != nil {
		h["Server-Timing"] = append(fn, serverTiming(took, out))
	} else {
		own[1] = serverTiming(took, out)
		h["Server-Timing"] = own[1:2:2]
	}
	length := int64(len(resp.Body))
	if r.Method == http.MethodHead && length == 0 {
		length = resp.HeadLength // a HEAD answers the length of the GET's body
	}
	own[2] = strconv.FormatInt(length, 10)
	h["Content-Length"] = own[2:3:3]
	w.WriteHeader(resp.Status)
	_, err = w.Write(resp.Body)
	if err != nil {
		log.Debug("client went away while the response was written", "err", err)
	}
	return nil
}

// preferAsync reports whether the request asks to be answered at once,
// with "Prefer: respond-async" (RFC 7240).
func preferAsync(h http.Header) bool {
	for _, v := range h.Values("Prefer") {
		for _, p := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(p), "respond-async") {
				return true
			}
		}
	}
	return false
}

// Accepted is the answer to an asynchronous invocation.
type Accepted struct {
	InvocationID string      `json:"invocation_id"`
	State        async.State `json:"state"`
	Location     string      `json:"location"`
	// Duplicate is set when the Idempotency-Key was used before: the
	// invocation is the earlier one.
	Duplicate bool `json:"duplicate,omitempty"`
}

// enqueue queues req and answers 202 Accepted.
func (g *Gateway) enqueue(w http.ResponseWriter, r *http.Request, req *runtime.Request, v registry.Version, log *slog.Logger) error {
	key := r.Header.Get("Idempotency-Key")
	if len(key) > 256 {
		return httperror.BadRequest("Idempotency-Key is longer than 256 bytes")
	}
	callback := r.Header.Get("X-Callback-Url")
	if callback != "" {
		if err := g.Async.CheckCallbackURL(callback); err != nil {
			return httperror.BadRequest("%v", err)
		}
	}
	start := time.Now()
	rec, dup, err := g.Async.Enqueue(r.Context(), async.Job{
		ID: req.InvocationID, Tenant: req.Tenant, Function: req.Function, Version: v.Number, Request: *req,
		CallbackURL: callback,
	}, key)
	if errors.Is(err, async.ErrPending) {
		w.Header().Set("Retry-After", "1")
		return httperror.New(http.StatusConflict, "conflict", "%v", err)
	}
	if err != nil {
		return err
	}
	location := "/v1/invocations/" + rec.ID
	// How long the durable write took: most of a 202's time.
	w.Header().Set("Server-Timing", string(appendMs([]byte("queue;dur="), time.Since(start))))
	w.Header().Set("Location", location)
	w.Header().Set(HeaderInvocationID, rec.ID)
	log.Info("queued", "duplicate", dup, "request_bytes", len(req.Body))
	return httperror.WriteJSON(w, http.StatusAccepted, Accepted{InvocationID: rec.ID, State: rec.State, Location: location, Duplicate: dup})
}

// parseTarget splits "name", "name@version" or "name:alias".
func parseTarget(s string) (name string, version int, alias string, err error) {
	if n, a, ok := strings.Cut(s, ":"); ok {
		if !registry.ValidName(n) || a == "" {
			return "", 0, "", httperror.NotFound("function %q not found: use name, name@version or name:alias", s)
		}
		return n, 0, a, nil
	}
	name, ver, hasVersion := strings.Cut(s, "@")
	if !registry.ValidName(name) {
		return "", 0, "", httperror.NotFound("function %q not found: function names are 1 to 63 lowercase letters, digits and dashes", name)
	}
	if !hasVersion || ver == "latest" {
		return name, 0, "", nil
	}
	n, err := strconv.Atoi(ver)
	if err != nil || n < 1 || ver != strconv.Itoa(n) {
		return "", 0, "", httperror.NotFound("version %q of function %q not found: a version is a number such as @3, or @latest", ver, name)
	}
	return name, n, "", nil
}

// BodyTimeout is how long a request body may take to arrive (a variable
// for tests).
var BodyTimeout = 30 * time.Second

// preallocateMax is the largest body whose declared length is allocated
// before it arrives; a larger one grows as it comes, so that connections
// that declare large bodies and send nothing hold little memory.
const preallocateMax = 64 << 10

func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	tooLarge := func() error {
		return httperror.New(http.StatusRequestEntityTooLarge, "payload_too_large", "request body is larger than this function's limit of %d bytes", limit)
	}
	if r.ContentLength > limit {
		return nil, tooLarge()
	}
	if r.ContentLength == 0 {
		return nil, nil
	}
	// The deadline stays on a body that failed to arrive: the server would
	// otherwise wait for the rest of it before answering.
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Now().Add(BodyTimeout))
	failed := func(err error) error {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return httperror.New(http.StatusRequestTimeout, "request_timeout", "the request body did not arrive within %s", BodyTimeout)
		}
		return httperror.BadRequest("reading the request body: %v", err)
	}
	var body []byte
	var err error
	if r.ContentLength > 0 && r.ContentLength <= preallocateMax {
		// The length is known: one allocation of the right size.
		body = make([]byte, r.ContentLength)
		_, err = io.ReadFull(r.Body, body)
	} else {
		body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	}
	var maxErr *http.MaxBytesError
	switch {
	case errors.As(err, &maxErr):
		return nil, tooLarge()
	case err != nil:
		return nil, failed(err)
	}
	rc.SetReadDeadline(time.Time{})
	return body, nil
}

// quotaError answers 429 with Retry-After for a tenant over quota.
func quotaError(w http.ResponseWriter, err error) error {
	var qerr *tenant.QuotaError
	if !errors.As(err, &qerr) {
		return err
	}
	if qerr.Never {
		return httperror.New(http.StatusForbidden, "quota_exceeded", "%v", qerr)
	}
	w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(qerr.RetryAfter.Seconds())))))
	return httperror.New(http.StatusTooManyRequests, "quota_exceeded", "%v", qerr)
}

// invocationError maps a sandbox failure to what the caller sees; a
// member (a caller with the tenant's key) sees the function's stderr too.
func invocationError(w http.ResponseWriter, name string, v registry.Version, out pool.Outcome, member bool, err error) error {
	var busy *pool.BusyError
	if errors.As(err, &busy) {
		w.Header().Set("Retry-After", "1")
		return &httperror.Error{Status: http.StatusTooManyRequests, Code: "too_many_requests",
			Message: fmt.Sprintf("function %s is busy: %v", name, busy), Cause: err}
	}
	var preparing *pool.PreparingError
	if errors.As(err, &preparing) {
		w.Header().Set("Retry-After", "1")
		e := &httperror.Error{Status: http.StatusServiceUnavailable, Code: "not_ready",
			Message: fmt.Sprintf("function %s did not start within its timeout of %s: %v", name, time.Duration(v.Spec.Timeout), preparing), Cause: err}
		if !errors.Is(err, context.DeadlineExceeded) {
			e.Message = fmt.Sprintf("invocation of %s was cancelled while its code was compiled", name)
		}
		return e
	}
	var missing *tenant.MissingSecretError
	if errors.As(err, &missing) {
		return &httperror.Error{Status: http.StatusInternalServerError, Code: "function_misconfigured",
			Message: fmt.Sprintf("function %s uses %v; set it with 'gust secret set %s'", name, missing, missing.Name), Cause: err}
	}
	var rerr *runtime.Error
	if !errors.As(err, &rerr) {
		return err
	}
	e := &httperror.Error{Status: http.StatusBadGateway, Cause: err}
	if member {
		// The function's last lines are for the tenant's eyes only (a
		// public function's caller may be anyone); the server's log has
		// them too.
		e.Stderr = rerr.Stderr
	}
	switch rerr.Kind {
	case runtime.Timeout:
		e.Status, e.Code = http.StatusGatewayTimeout, "timeout"
		e.Message = fmt.Sprintf("function %s did not finish within its timeout of %s", name, time.Duration(v.Spec.Timeout))
		// The timeout counts from the request's arrival: say what took
		// part of it before the function ran.
		if out.Queued > 0 {
			e.Message += fmt.Sprintf(", of which it waited %s for a free instance", out.Queued.Round(time.Millisecond))
		}
		if out.Cold {
			e.Message += fmt.Sprintf(", of which its instance took %s to start", out.Init.Round(time.Millisecond))
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			e.Message = fmt.Sprintf("invocation of %s was cancelled", name)
		}
	case runtime.OutOfMemory:
		e.Code = "out_of_memory"
		e.Message = fmt.Sprintf("function %s %s", name, rerr.Message)
	case runtime.BadResponse:
		e.Code = "bad_response"
		e.Message = fmt.Sprintf("function %s answered with an invalid response: %s", name, rerr.Message)
	default:
		e.Code = "function_error"
		e.Message = fmt.Sprintf("function %s %s", name, rerr.Message)
	}
	return e
}

var idEncoding = base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)

// NewInvocationID returns a unique id that sorts by creation time: 48 bits
// of Unix milliseconds and 80 random bits, in 26 characters of Crockford's
// base32 (lowercase).
func NewInvocationID() string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(time.Now().UnixMilli())<<16)
	rand.Read(b[6:])
	var id [26]byte // idEncoding.EncodedLen(16), on the stack
	idEncoding.Encode(id[:], b[:])
	return string(id[:])
}

// rawFunctionPath returns the part of r's path after the function's name
// as the client escaped it ("/fn/t/f/a%2Fb" -> "/a%2Fb"), where the client
// escaped it otherwise than Go would (url.URL keeps a RawPath only then),
// else "": the mux gives the path unescaped, where an escaped slash is a
// slash.
func rawFunctionPath(r *http.Request) string {
	if r.URL.RawPath == "" {
		return "" // most requests: nothing to split
	}
	parts := strings.SplitN(r.URL.RawPath, "/", 5) // "", "fn", tenant, function, the rest
	if len(parts) < 5 {
		return "/"
	}
	return "/" + parts[4]
}
