package async

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gust-faas/gust/internal/registry"
	"github.com/gust-faas/gust/internal/runtime"
)

// Callbacks are posted with this many attempts, the first retry after
// callbackDelay, doubled each time.
const (
	callbackAttempts = 4
	callbackDelay    = 250 * time.Millisecond
	callbackTimeout  = 10 * time.Second
)

// maxCallbacks bounds the callbacks being posted at once on a node, and
// maxTenantCallbacks those of one tenant. A callback past either is given
// up at once, with a log line: a worker that waited for room would hold
// its share of instances, and callbacks to an address that never answers
// (42 s each) would have held every worker, every tenant's invocations
// queued behind them.
const (
	maxCallbacks       = 256
	maxTenantCallbacks = 64
)

// callbackSlots counts the callbacks being posted.
type callbackSlots struct {
	mu       sync.Mutex
	total    int
	byTenant map[string]int
}

// take takes a slot for a callback of tenant, or reports that there is
// none.
func (c *callbackSlots) take(tenant string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.total >= maxCallbacks || c.byTenant[tenant] >= maxTenantCallbacks {
		return false
	}
	if c.byTenant == nil {
		c.byTenant = map[string]int{}
	}
	c.total++
	c.byTenant[tenant]++
	return true
}

func (c *callbackSlots) release(tenant string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total--
	if c.byTenant[tenant]--; c.byTenant[tenant] == 0 {
		delete(c.byTenant, tenant)
	}
}

// EventsPrefix is where destinations that are subjects are published:
// gust.events.<tenant>.<subject>. A tenant never reaches Gust's own subjects.
const EventsPrefix = "gust.events."

// CheckCallbackURL reports what is wrong with a callback URL: one that is
// not http(s), or that names an address callbacks may not reach.
func (s *Service) CheckCallbackURL(raw string) error { return s.callbackNet.checkURL(raw) }

// deliver sends the record of a finished invocation where it should go: its
// callback URL and its function's destination. What fails is logged; the
// invocation's own state does not change.
func (s *Service) deliver(job Job, rec Record, spec registry.Spec, log *slog.Logger) {
	dest := spec.OnSuccess
	if rec.State != Succeeded {
		dest = spec.OnFailure
	}
	if job.CallbackURL == "" && dest == nil {
		return
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return
	}
	switch {
	case job.CallbackURL == "":
	case !s.callbacks.take(rec.Tenant):
		log.Warn("too many callbacks are being posted; this one is given up", "url", job.CallbackURL, "tenant_limit", maxTenantCallbacks, "node_limit", maxCallbacks)
	default:
		go func() {
			defer s.callbacks.release(rec.Tenant)
			s.callback(job.CallbackURL, data, log)
		}()
	}
	switch {
	case dest == nil:
	case dest.Subject != "":
		if err := s.store.Publish(EventsPrefix+rec.Tenant+"."+dest.Subject, data); err != nil {
			log.Warn("could not publish to the destination subject", "subject", dest.Subject, "err", err)
		}
	case dest.Function != "":
		fn, ok := s.functions.Lookup(rec.Tenant, dest.Function)
		if !ok {
			log.Warn("the destination function does not exist", "destination", dest.Function)
			return
		}
		id := destinationID(rec, job.Run)
		if !validID(id) {
			log.Warn("a chain of destinations went too deep; the destination is not queued", "destination", dest.Function, "depth", strings.Count(id, "-"))
			return
		}
		_, _, err := s.Enqueue(context.Background(), Job{
			ID: id, Tenant: rec.Tenant, Function: dest.Function, Version: fn.Latest,
			Request: runtime.Request{
				Method: http.MethodPost, Path: "/", Body: data, Tenant: rec.Tenant, Function: dest.Function,
				Header:       http.Header{"Content-Type": {"application/json"}},
				InvocationID: id, Source: rec.ID,
			},
		}, destinationKey(rec))
		if err != nil {
			log.Warn("could not queue the destination function", "destination", dest.Function, "err", err)
		}
	}
}

// destinationID is the invocation id of the destination of rec's outcome in
// the source's run: the source's and a letter for the outcome ("-s", "-d"),
// and the run's number after a replay ("-d1"). Readable, it grows along a
// chain of destinations, which ends when it no longer fits, as Lambda stops
// a recursive loop.
func destinationID(rec Record, run int) string {
	id := rec.ID + "-" + string(rec.State)[:1]
	if run > 0 {
		id += strconv.Itoa(run)
	}
	return id
}

// destinationKey is the idempotency key of the destination invocation of
// rec's outcome: one per outcome of each run, so that a replay, which runs
// the invocation again from a new creation time, reaches its destination
// again too.
func destinationKey(rec Record) string {
	return "destination:" + rec.ID + ":" + string(rec.State) + ":" + strconv.FormatInt(rec.Created.UnixNano(), 10)
}

// callback posts data to url, retrying with backoff, and logs if it never
// gets through.
func (s *Service) callback(u string, data []byte, log *slog.Logger) {
	client := s.callbackClient
	delay := callbackDelay
	var last string
	for attempt := 1; attempt <= callbackAttempts; attempt++ {
		resp, err := client.Post(u, "application/json", bytes.NewReader(data))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode < 300 {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		if attempt < callbackAttempts {
			time.Sleep(delay)
			delay *= 2
		}
	}
	log.Warn("gave up posting the invocation's callback", "url", u, "attempts", callbackAttempts, "err", last)
}
