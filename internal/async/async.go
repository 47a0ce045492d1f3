// Package async runs the invocations nobody waits for. It writes them to a
// durable work queue, runs them on workers on every node through the same
// pools as synchronous requests, retries failures with backoff, sends what
// keeps failing to a dead-letter stream, and keeps each invocation's state
// and result for a day. A worker that dies mid-invocation loses nothing: the
// queue delivers the message again.
package async

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gust-faas/gust/internal/pool"
	"github.com/gust-faas/gust/internal/registry"
	"github.com/gust-faas/gust/internal/runtime"
	"github.com/gust-faas/gust/internal/store"
	"github.com/gust-faas/gust/internal/tenant"
)

// Limits and defaults.
const (
	// MaxPayloadBytes bounds an asynchronous request body.
	MaxPayloadBytes = 1 << 20
	// ResultTTL is how long an invocation's record is kept.
	ResultTTL = 24 * time.Hour
	// maxResultBody bounds the response body kept in a record.
	maxResultBody = 256 << 10
	// Workers is how many invocations one node runs at once.
	Workers = 32
	// ackWait is how long a running invocation may go without its node
	// checking in before another worker takes it over; the queue checks
	// in for the messages its node holds.
	ackWait = 10 * time.Second
	// shareWait is how long a worker waits for a slot of its function's
	// async share; then the message goes back to the queue for
	// shareRetryDelay, doubled for each delivery.
	shareWait       = 100 * time.Millisecond
	shareRetryDelay = 250 * time.Millisecond
	// runningAfter is how long an attempt runs before its record says
	// running: shorter ones go from queued to their outcome with one write
	// fewer, which at thousands a second is a fifth of the queue's work. A
	// worker that dies sooner than this is not counted as an attempt.
	runningAfter = 50 * time.Millisecond
)

// Names in the store.
const (
	queueName     = "gust_work"
	workPrefix    = "gust.work."
	deadStream    = "gust_dead"
	deadPrefix    = "gust.dead."
	resultsBucket = "gust_invocations"
)

// State is where an invocation is.
type State string

// States of an invocation.
const (
	Queued    State = "queued"
	Running   State = "running"
	Succeeded State = "succeeded"
	// Failed: an attempt failed and a retry is scheduled.
	Failed State = "failed"
	// Dead: every attempt failed; the invocation is in the dead-letter stream.
	Dead State = "dead"
)

// Attempt is one run of an invocation.
type Attempt struct {
	Started time.Time `json:"started"`
	Ended   time.Time `json:"ended,omitzero"`
	Status  int       `json:"status,omitempty"`
	Error   string    `json:"error,omitempty"`
}

// Response is what a succeeded invocation answered, bounded.
type Response struct {
	Status    int         `json:"status"`
	Header    http.Header `json:"header,omitempty"`
	Body      []byte      `json:"body,omitempty"`
	Truncated bool        `json:"truncated,omitempty"`
}

// Record is an invocation's state, kept for ResultTTL.
type Record struct {
	ID       string    `json:"id"`
	Tenant   string    `json:"tenant"`
	Function string    `json:"function"`
	Version  int       `json:"version"`
	State    State     `json:"state"`
	Attempts []Attempt `json:"attempts"`
	Created  time.Time `json:"created"`
	Updated  time.Time `json:"updated"`
	Response *Response `json:"response,omitempty"`
}

// Job is an invocation to queue.
type Job struct {
	ID       string          `json:"id"`
	Tenant   string          `json:"tenant"`
	Function string          `json:"function"`
	Version  int             `json:"version"`
	Request  runtime.Request `json:"request"`
	Queued   time.Time       `json:"queued"`
	Errors   []string        `json:"errors,omitempty"` // of a dead letter's attempts
	// Failed counts the attempts that failed before this message was
	// queued again to retry, no earlier than NotBefore. The message, not
	// the record (which the bucket's bound or TTL may drop first), keeps
	// the count that ends the retries.
	Failed    int       `json:"failed,omitempty"`
	NotBefore time.Time `json:"not_before,omitzero"`
	// CallbackURL, if set, is posted the record once the invocation is done.
	CallbackURL string `json:"callback_url,omitempty"`
	// Run counts the replays of the invocation from the dead-letter
	// stream: each run's destinations are invocations of their own.
	Run int `json:"run,omitempty"`
}

// Invoker runs one invocation, as the pool does.
type Invoker interface {
	Invoke(ctx context.Context, t pool.Target, req *runtime.Request, log *slog.Logger) (*runtime.Response, pool.Outcome, error)
}

// Functions finds functions.
type Functions interface {
	// Lookup returns a function without copying it: every invocation
	// looks one up, and a function keeps all its versions. The caller
	// must not modify it.
	Lookup(tenant, name string) (registry.Function, bool)
}

// Tenants finds tenants, for their quotas.
type Tenants interface {
	Tenant(name string) (tenant.Tenant, bool)
}

// Deps are what a Service needs. All are required.
type Deps struct {
	Store     *store.Store
	Functions Functions
	Invoker   Invoker
	// Tenants and Limiter hold running invocations to their tenant's
	// concurrency and memory quotas, as synchronous requests are.
	Tenants Tenants
	Limiter *tenant.Limiter
	Logger  *slog.Logger
	// CallbackAllow are the loopback, private and link-local networks
	// that callbacks may reach nonetheless. Optional.
	CallbackAllow []netip.Prefix
	// MaxRecords bounds how many invocation records and idempotency keys
	// are kept, and how many dead letters: past it the oldest go first,
	// before ResultTTL (14 days for dead letters). The store
	// indexes every key in memory, and at thousands of invocations a
	// second a day of them would not fit. Zero keeps all for ResultTTL.
	MaxRecords int64
}

// DefaultMaxRecords is the bound that gust server sets unless told
// otherwise: about 130 MB of the store's index in memory (126 bytes a
// key, measured), and a gigabyte or so of disk.
const DefaultMaxRecords = 1_000_000

// Service queues, runs and reports asynchronous invocations.
type Service struct {
	store     *store.Store
	queue     *store.Queue
	dead      *store.Stream
	results   *store.KV
	functions Functions
	invoker   Invoker
	tenants   Tenants
	limiter   *tenant.Limiter
	log       *slog.Logger

	callbackNet    callbackNet
	callbackClient *http.Client
	now            func() time.Time

	callbacks callbackSlots
	running   runningInvocations
	mu        sync.Mutex
	shares    map[string]*share // per tenant/function/version
}

// New opens the queue, the dead-letter stream and the results bucket.
func New(ctx context.Context, deps Deps) (*Service, error) {
	q, err := deps.Store.Queue(ctx, store.QueueConfig{
		Name: queueName, Subjects: []string{workPrefix + ">"}, AckWait: ackWait,
	})
	if err != nil {
		return nil, err
	}
	// Each dead letter has a subject, which the store indexes in memory:
	// the stream keeps as many letters as there are records.
	dead, err := deps.Store.Stream(ctx, deadStream, []string{deadPrefix + ">"}, 14*24*time.Hour, deps.MaxRecords)
	if err != nil {
		return nil, err
	}
	results, err := deps.Store.KVWithTTL(ctx, resultsBucket, ResultTTL, deps.MaxRecords)
	if err != nil {
		return nil, err
	}
	cbNet := callbackNet{allow: deps.CallbackAllow}
	s := &Service{
		callbackNet: cbNet, callbackClient: cbNet.client(),
		store: deps.Store, queue: q, dead: dead, results: results, functions: deps.Functions, invoker: deps.Invoker, tenants: deps.Tenants, limiter: deps.Limiter,
		log: deps.Logger, now: time.Now, shares: map[string]*share{},
	}
	s.running.ctx, s.running.cut = context.WithCancel(context.Background())
	return s, nil
}

// Enqueue writes job to the queue and records it as queued. With an
// idempotency key, a job enqueued before under the same key (within
// ResultTTL) is not enqueued again: its record is returned, with
// duplicate set.
func (s *Service) Enqueue(ctx context.Context, job Job, idempotencyKey string) (rec Record, duplicate bool, err error) {
	if !registry.ValidName(job.Tenant) || !validID(job.ID) {
		return Record{}, false, fmt.Errorf("async: cannot queue invocation %q of tenant %q: not a valid id", job.ID, job.Tenant)
	}
	// The writes go on if the client goes away: a key forgotten because the
	// caller left while its message was stored would let the caller's
	// retry queue the work a second time. (The store bounds each call.)
	ctx = context.WithoutCancel(ctx)
	forget := func() {}
	if idempotencyKey != "" {
		k := idempotencyEntry(job, idempotencyKey)
		rev, prior, err := s.claimKey(ctx, k, job)
		if err != nil {
			return Record{}, false, err
		}
		if prior.ID != "" {
			return prior, true, nil
		}
		// If the invocation is not queued, the key must not keep naming it.
		forget = func() { s.results.Delete(ctx, k, rev) }
	}
	job.Queued = s.now().UTC()
	// The caller's credentials, Gust's own headers and the connection's
	// stay out of the store: the function would not see them anyway.
	job.Request.Header = runtime.VisibleHeader(job.Request.Header)
	data := encodeJob(job)
	// The message is the only write: until a worker records the
	// invocation's progress, Get reads its queued state from the queue.
	if err := s.queue.Publish(ctx, workSubject(job.Tenant, job.ID), data); err != nil {
		// A publish that timed out may have been stored all the same.
		if _, perr := s.queue.Pending(ctx, workSubject(job.Tenant, job.ID)); perr == nil {
			return queuedRecord(job), false, nil
		}
		forget()
		return Record{}, false, err
	}
	return queuedRecord(job), false, nil
}

// idempotencyEntry is the store's key for an Idempotency-Key of job's
// function. Its value is the invocation's id and the time it was claimed.
func idempotencyEntry(job Job, key string) string {
	sum := sha256.Sum256([]byte(key))
	return "idem." + job.Tenant + "." + job.Function + "." + hex.EncodeToString(sum[:16])
}

// keyTakeover is how old an idempotency key must be before a request may
// take it over from one whose invocation never reached the queue (its
// server stopped between the two writes): longer than the store lets
// either write take.
const keyTakeover = 30 * time.Second

// claimKey makes idempotency key k name job's invocation, and returns the
// key's revision. If k names another invocation, claimKey returns that
// invocation's record as prior, or ErrPending while it is being queued.
func (s *Service) claimKey(ctx context.Context, k string, job Job) (rev uint64, prior Record, err error) {
	value := []byte(job.ID + " " + strconv.FormatInt(s.now().UnixNano(), 10))
	rev, err = s.results.Create(ctx, k, value)
	if !errors.Is(err, store.ErrConflict) {
		return rev, Record{}, err
	}
	e, err := s.results.Get(ctx, k)
	if errors.Is(err, store.ErrNotFound) {
		return 0, Record{}, ErrPending // forgotten just now: the next try creates it
	}
	if err != nil {
		return 0, Record{}, err
	}
	id, claimed, _ := strings.Cut(string(e.Value), " ")
	rec, err := s.Get(ctx, job.Tenant, id)
	switch {
	case err == nil && !s.ofCurrentFunction(job.Tenant, job.Function, rec.Created):
		// The key of a function deleted since, whose name a new one took:
		// taken over at once.
	case !errors.Is(err, ErrNotFound):
		return 0, rec, err
	case !s.claimedBefore(claimed, keyTakeover):
		return 0, Record{}, ErrPending // the first request with the key is queueing it right now
	}
	rev, err = s.results.Update(ctx, k, value, e.Revision)
	if errors.Is(err, store.ErrConflict) {
		return 0, Record{}, ErrPending // another request took it over
	}
	return rev, Record{}, err
}

// claimedBefore reports whether a key claimed at claimed (Unix
// nanoseconds; a key from before keys had the time is not) was claimed at
// least d ago.
func (s *Service) claimedBefore(claimed string, d time.Duration) bool {
	at, err := strconv.ParseInt(claimed, 10, 64)
	return err == nil && s.now().Sub(time.Unix(0, at)) >= d
}

// ForgetTenant removes what the async service keeps of a deleted tenant:
// its queued invocations, dead letters and idempotency keys, which a new
// tenant of the same name must not inherit. (Records of invocations that
// finished stay until they expire: Get hides those older than the tenant.)
func (s *Service) ForgetTenant(ctx context.Context, tenant string) error {
	if !registry.ValidName(tenant) {
		return nil
	}
	return errors.Join(
		s.queue.Purge(ctx, workPrefix+tenant+".>"),
		s.dead.Purge(ctx, deadPrefix+tenant+".>"),
		s.results.PurgePrefix(ctx, "idem."+tenant+"."),
	)
}

// ForgetFunction removes what the async service keeps of a deleted
// function: its dead letters and idempotency keys, which a new function of
// the same name must not inherit. (Its queued invocations are dropped as
// workers take them.)
func (s *Service) ForgetFunction(ctx context.Context, tenant, function string) error {
	if !registry.ValidName(tenant) || !registry.ValidName(function) {
		return nil
	}
	return errors.Join(
		s.dead.Purge(ctx, legacyDeadSubject(tenant, function)),
		s.dead.Purge(ctx, deadSubject(tenant, function, ">")),
		s.results.PurgePrefix(ctx, "idem."+tenant+"."+function+"."),
	)
}

// ErrPending is returned for a request whose Idempotency-Key names an
// invocation that another request is queueing at this moment.
var ErrPending = errors.New("an invocation with this Idempotency-Key is being queued; retry in a moment")

// workSubject is the subject a tenant's invocation id is queued on: one
// per invocation, so that Get can find it while it waits.
func workSubject(tenant, id string) string { return workPrefix + tenant + "." + id }

// validID reports whether id can be an invocation id: 1 to 64 letters,
// digits, dashes and underscores, which is what store keys and subjects
// allow.
func validID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range []byte(id) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// queuedRecord is the record of an invocation no worker has taken up yet.
func queuedRecord(job Job) Record {
	return Record{ID: job.ID, Tenant: job.Tenant, Function: job.Function, Version: job.Version, State: Queued, Attempts: []Attempt{}, Created: job.Queued, Updated: job.Queued}
}

// ErrNotFound is returned for an unknown or expired invocation.
var ErrNotFound = errors.New("not found")

// Get returns tenant's invocation id.
func (s *Service) Get(ctx context.Context, tenant, id string) (Record, error) {
	// The queue first: a worker records an invocation before it takes the
	// message off the queue, so one of the two has it.
	if !registry.ValidName(tenant) || !validID(id) {
		return Record{}, fmt.Errorf("invocation %q: %w", id, ErrNotFound)
	}
	queued, err := s.queue.Pending(ctx, workSubject(tenant, id))
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return Record{}, err
	}
	e, err := s.results.Get(ctx, recordKey(id))
	if errors.Is(err, store.ErrNotFound) && queued.Data == nil {
		// Unrecorded (its record could not be written), its retry may
		// wait for its time.
		later, lerr := s.queue.Later(ctx, workSubject(tenant, id))
		if lerr != nil && !errors.Is(lerr, store.ErrNotFound) {
			return Record{}, lerr
		}
		queued = later
	}
	if errors.Is(err, store.ErrNotFound) && queued.Data != nil {
		job, err := decodeJob(queued.Data)
		if err != nil {
			return Record{}, err
		}
		return queuedRecord(job), nil
	}
	if errors.Is(err, store.ErrNotFound) {
		return Record{}, fmt.Errorf("invocation %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Record{}, err
	}
	rec, err := decodeRecord(e.Value)
	if err != nil {
		return Record{}, err
	}
	if t, ok := s.tenants.Tenant(tenant); rec.Tenant != tenant || !ok || rec.Created.Before(t.Created) {
		// Another tenant's, or one of a deleted tenant of this name.
		return Record{}, fmt.Errorf("invocation %q: %w", id, ErrNotFound)
	}
	return rec, nil
}

// recordKey is the store's key of invocation id's record.
func recordKey(id string) string { return "inv." + id }

// put writes rec, whatever the record stored.
func (s *Service) put(ctx context.Context, rec Record) error {
	return s.putOver(ctx, rec, anyRevision)
}

// anyRevision makes putOver write whatever the record stored.
const anyRevision = ^uint64(0)

// putOver writes rec only over revision rev of its record (0: only where
// there is none; anyRevision: whatever there is); otherwise it returns
// store.ErrConflict.
func (s *Service) putOver(ctx context.Context, rec Record, rev uint64) error {
	rec.Updated = s.now().UTC()
	data, ctx, key := encodeRecord(rec), context.WithoutCancel(ctx), recordKey(rec.ID)
	var err error
	switch rev {
	case anyRevision:
		_, err = s.results.Put(ctx, key, data)
	case 0:
		_, err = s.results.Create(ctx, key, data)
	default:
		_, err = s.results.Update(ctx, key, data, rev)
	}
	return err
}

// Start runs Workers workers until ctx is done. Wait waits for the
// invocations they were running.
//
// The workers live as long as the service: a goroutine started for each
// message would grow its stack anew while it decodes the message, a few
// percent of the CPU at thousands a second.
func (s *Service) Start(ctx context.Context) error {
	return s.queue.Consume(ctx, Workers, func(m *store.Message) {
		s.running.Add(1)
		defer s.running.Done()
		s.process(ctx, m)
	})
}

// runningInvocations are the invocations workers run, and the context
// they run under, which Cut ends.
type runningInvocations struct {
	sync.WaitGroup
	ctx context.Context
	cut context.CancelFunc
}

// Cut stops the invocations being run: a shutdown's deadline has passed.
// Their attempts do not count, and their messages go back to the queue.
// (A guest left running past it would run on in a runtime closed under it.)
func (s *Service) Cut() { s.running.cut() }

// Wait returns once the invocations being run have finished, or ctx is done.
func (s *Service) Wait(ctx context.Context) {
	done := make(chan struct{})
	go func() { s.running.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}
