package api

import (
	"context"
	"sync"
	"time"
)

// uploadSlots bounds the deploys that hold their artifact in memory: total
// at once on the server, and perTenant of them for any one tenant, so that
// one tenant's slow uploads, which may hold a slot for UploadTimeout,
// cannot keep every other tenant from deploying.
type uploadSlots struct {
	total, perTenant int
	mu               sync.Mutex
	held             map[string]int // by tenant
	free             chan struct{}  // closed and replaced when a slot is released
}

func newUploadSlots(total, perTenant int) *uploadSlots {
	return &uploadSlots{total: total, perTenant: perTenant, held: map[string]int{}, free: make(chan struct{})}
}

// take waits up to wait for a slot for tenant, and returns its release;
// ok is false if none came in time (or ctx ended), with whether the
// tenant's own share was what was full.
func (s *uploadSlots) take(ctx context.Context, tenant string, wait time.Duration) (release func(), ok, tenantFull bool) {
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		s.mu.Lock()
		sum := 0
		for _, n := range s.held {
			sum += n
		}
		tenantFull = s.held[tenant] >= s.perTenant
		if !tenantFull && sum < s.total {
			s.held[tenant]++
			s.mu.Unlock()
			return func() { s.release(tenant) }, true, false
		}
		free := s.free
		s.mu.Unlock()
		select {
		case <-free:
		case <-t.C:
			return nil, false, tenantFull
		case <-ctx.Done():
			return nil, false, tenantFull
		}
	}
}

func (s *uploadSlots) release(tenant string) {
	s.mu.Lock()
	if s.held[tenant]--; s.held[tenant] == 0 {
		delete(s.held, tenant)
	}
	close(s.free)
	s.free = make(chan struct{})
	s.mu.Unlock()
}
