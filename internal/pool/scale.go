package pool

import (
	"time"

	"github.com/gust-faas/gust/internal/registry"
)

// Policy is a version's scaling spec, as the pool applies it.
type Policy struct {
	Min, Max    int
	MaxQueue    int
	MaxRequests int
	IdleTTL     time.Duration
	// Active is false for a version no route leads to any more: it keeps
	// no instance idle.
	Active bool
}

func policyOf(s registry.Spec, active bool) Policy {
	// An instance that serves n requests at once is n slots to the pool.
	n := max(1, s.Concurrency)
	return Policy{
		Min: s.MinInstances * n, Max: s.MaxInstances * n, MaxQueue: s.MaxQueue,
		MaxRequests: s.MaxRequests, IdleTTL: time.Duration(s.IdleTTL), Active: active,
	}
}

// State is what a version's pool holds at one moment.
type State struct {
	// Idle holds when each idle instance was last used, oldest first.
	Idle     []time.Time
	Busy     int
	Starting int
	Waiting  int
}

func (s State) total() int { return len(s.Idle) + s.Busy + s.Starting }

// Decision is what the scaling loop does to a version's pool.
type Decision struct {
	// Start this many instances ahead of traffic.
	Start int
	// StopIdle stops this many of the longest-idle instances.
	StopIdle int
}

// Decide is the scaling policy, a pure function. An active version keeps at
// least Min instances (started ahead of traffic, never above Max) and stops
// instances idle for IdleTTL while more than Min remain; an inactive one
// stops every idle instance and starts none. Demand above that is met when
// requests arrive: a request that finds no idle instance starts one.
func Decide(p Policy, s State, now time.Time) Decision {
	if !p.Active {
		return Decision{StopIdle: len(s.Idle)}
	}
	var d Decision
	floor := min(p.Min, p.Max)
	if short := floor - s.total(); short > 0 {
		d.Start = short
	}
	expired := 0
	for _, last := range s.Idle {
		if now.Sub(last) >= p.IdleTTL {
			expired++
		}
	}
	d.StopIdle = max(0, min(expired, s.total()-floor))
	return d
}
