package tenant

import (
	"fmt"
	"math"
	"sync"
	"time"
)

// QuotaError is a request refused because its tenant is over a quota.
type QuotaError struct {
	// Quota names the quota: "concurrency", "memory" or "rate".
	Quota      string
	Limit      string
	RetryAfter time.Duration
	// Never is set for an invocation that needs more memory than the whole
	// quota: waiting will not help.
	Never bool
}

func (e *QuotaError) Error() string {
	if e.Never {
		return fmt.Sprintf("the function needs more than its tenant's memory quota (%s): waiting will not help", e.Limit)
	}
	return fmt.Sprintf("tenant is over its %s quota (%s)", e.Quota, e.Limit)
}

// Limiter enforces tenants' concurrency, memory and request-rate quotas on
// this node. It is safe for concurrent use.
type Limiter struct {
	now   func() time.Time
	mu    sync.Mutex
	usage map[string]*usage
}

type usage struct {
	inflight int
	memoryMB int
	tokens   float64
	last     time.Time
}

// NewLimiter returns a Limiter reading time from now (time.Now if nil).
func NewLimiter(now func() time.Time) *Limiter {
	if now == nil {
		now = time.Now
	}
	return &Limiter{now: now, usage: map[string]*usage{}}
}

// Admit admits one request of tenant under q, an invocation of memoryMB
// that runs until release is called, or returns a *QuotaError. The caller
// must call release when the invocation ends.
func (l *Limiter) Admit(tenant string, q Quotas, memoryMB int) (release func(), err error) {
	return l.admit(tenant, q, memoryMB, true, true)
}

// Hold is Admit for an invocation whose request was admitted before (a
// queued one, when a worker runs it): it counts towards the concurrency
// and memory quotas, and not again towards the request rate.
func (l *Limiter) Hold(tenant string, q Quotas, memoryMB int) (release func(), err error) {
	return l.admit(tenant, q, memoryMB, true, false)
}

// Accept admits a request that runs nothing now (one that queues an
// invocation): it counts towards the request rate only.
func (l *Limiter) Accept(tenant string, q Quotas) error {
	_, err := l.admit(tenant, q, 0, false, true)
	return err
}

// admit checks and counts the concurrency and memory quotas if hold, the
// request rate if request.
func (l *Limiter) admit(tenant string, q Quotas, memoryMB int, hold, request bool) (release func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	u := l.usage[tenant]
	if u == nil {
		u = &usage{tokens: float64(burst(q)), last: l.now()}
		l.usage[tenant] = u
	}
	if hold && q.MaxConcurrency > 0 && u.inflight+1 > q.MaxConcurrency {
		return nil, &QuotaError{Quota: "concurrency", Limit: fmt.Sprintf("%d invocations at once", q.MaxConcurrency), RetryAfter: time.Second}
	}
	if hold && q.MaxMemoryMB > 0 && u.memoryMB+memoryMB > q.MaxMemoryMB {
		return nil, &QuotaError{Quota: "memory", Limit: fmt.Sprintf("%d MiB of instances at once", q.MaxMemoryMB), RetryAfter: time.Second, Never: memoryMB > q.MaxMemoryMB}
	}
	if request && q.RatePerSecond > 0 {
		now := l.now()
		u.tokens = math.Min(float64(burst(q)), u.tokens+now.Sub(u.last).Seconds()*q.RatePerSecond)
		u.last = now
		if u.tokens < 1 {
			wait := time.Duration(math.Ceil((1 - u.tokens) / q.RatePerSecond * float64(time.Second)))
			return nil, &QuotaError{Quota: "rate", Limit: fmt.Sprintf("%g requests per second, burst %d", q.RatePerSecond, burst(q)), RetryAfter: wait}
		}
		u.tokens--
	}
	if !hold {
		return func() {}, nil
	}
	u.inflight++
	u.memoryMB += memoryMB
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			u.inflight--
			u.memoryMB -= memoryMB
			l.mu.Unlock()
		})
	}, nil
}

// burst is the token bucket's size: the quota's burst, or one second's worth.
func burst(q Quotas) int {
	if q.Burst > 0 {
		return q.Burst
	}
	return max(1, int(math.Ceil(q.RatePerSecond)))
}
