package process

import (
	"sync"
	"time"
)

// spareInits is how many init processes a node keeps started ahead of its
// cold starts, once it has a process function (deployed, or found at
// start), so that the first request after a deploy finds one: in their
// namespaces and cgroup, with
// the Go runtime up and the common part of the root built, waiting for a
// sandbox. Starting one is most of a cold start's time on a slow host, and
// a spare takes that off the request's path. Each holds a few megabytes of
// memory while it waits.
const spareInits = 2

// spareRetry is how long the spares wait to start again after a start failed.
const spareRetry = time.Second

// spareDelay is how long the spares wait, after a cold start took one,
// before they start another, and wait again while cold starts run: those
// need the CPU now (a program's start and first request), the spares
// later. Under a steady stream of cold starts no spare is started, and
// each starts its own init, as it would without spares.
const spareDelay = 50 * time.Millisecond

// spares keeps spareInits init processes, each with a network namespace of
// its own, ready for the next cold starts.
type spares struct {
	spawn func() (*initProc, error)
	busy  func() bool   // whether a cold start is running
	wake  chan struct{} // replenish's
	stop  chan struct{}

	mu      sync.Mutex
	ready   []*initProc
	stopped bool

	start    sync.Once
	stopOnce sync.Once
	filling  sync.WaitGroup
}

func newSpares(spawn func() (*initProc, error), busy func() bool) *spares {
	return &spares{spawn: spawn, busy: busy, wake: make(chan struct{}, 1), stop: make(chan struct{})}
}

// begin starts the spares, the first time.
func (s *spares) begin() {
	s.start.Do(func() {
		s.filling.Add(1)
		go s.fill()
	})
}

// take returns a spare, or nil if none is ready. It starts the spares if
// nothing did.
func (s *spares) take() *initProc {
	s.begin()
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.ready) > 0 {
		p := s.ready[0]
		s.ready = s.ready[1:]
		if !p.exited() {
			return p
		}
		go p.discard()
	}
	return nil
}

// replenish has the spares started again for those taken (see
// spareDelay). A cold start calls it once its program runs.
func (s *spares) replenish() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// count returns how many spares are ready.
func (s *spares) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ready)
}

// fill starts spares until spareInits are ready, then waits for
// replenish, until close. After a failed start it waits spareRetry and
// the next replenish: a cold start meanwhile starts its own init, and
// reports why that fails.
func (s *spares) fill() {
	defer s.filling.Done()
	for {
		for s.count() < spareInits {
			if !s.quiet() {
				return
			}
			p, err := s.spawn()
			if err != nil {
				select {
				case <-time.After(spareRetry):
				case <-s.stop:
					return
				}
				break
			}
			s.mu.Lock()
			if s.stopped {
				s.mu.Unlock()
				p.discard()
				return
			}
			s.ready = append(s.ready, p)
			s.mu.Unlock()
		}
		select {
		case <-s.wake:
		case <-s.stop:
			return
		}
	}
}

// quiet waits spareDelay, and again while a cold start runs. It returns
// false once the spares are stopped.
func (s *spares) quiet() bool {
	for {
		select {
		case <-time.After(spareDelay):
		case <-s.stop:
			return false
		}
		if !s.busy() {
			return true
		}
	}
}

// close stops the spares.
func (s *spares) close() {
	s.stopOnce.Do(func() {
		s.mu.Lock()
		s.stopped = true
		ready := s.ready
		s.ready = nil
		s.mu.Unlock()
		close(s.stop)
		s.filling.Wait()
		for _, p := range ready {
			p.discard()
		}
	})
}
