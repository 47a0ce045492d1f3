package process

import (
	"sync"
	"time"
)

// spareInits is how many init processes a node keeps started ahead of its
// cold starts, once it has had one: in their namespaces, with the Go
// runtime up, waiting for a sandbox. Starting one is most of a cold start's
// time on a slow host (the namespaces, and the Gust binary's own start),
// and a spare takes that off the request's path. Each holds a few
// megabytes of memory while it waits.
const spareInits = 2

// spareRetry is how long the spares wait to start again after a start failed.
const spareRetry = time.Second

// spares keeps spareInits init processes, without a network of the host's,
// ready for the next cold starts.
type spares struct {
	spawn func() (*initProc, error)
	ready chan *initProc // nil: a start failed, the taker starts its own
	wake  chan struct{}
	stop  chan struct{}

	start   sync.Once
	stopped sync.Once
	filling sync.WaitGroup
}

func newSpares(spawn func() (*initProc, error)) *spares {
	return &spares{spawn: spawn, ready: make(chan *initProc, spareInits), wake: make(chan struct{}, 1), stop: make(chan struct{})}
}

// take returns a spare, or nil if none is ready. The first call starts
// the spares.
func (s *spares) take() *initProc {
	s.start.Do(func() {
		s.filling.Add(1)
		go s.fill()
	})
	for {
		select {
		case p := <-s.ready:
			if p != nil && p.exited() {
				p.discard()
				continue
			}
			return p
		default:
			return nil
		}
	}
}

// replenish starts spares again for those taken. A cold start calls it
// once its program runs: starting a spare takes CPU that the program's own
// start needs more.
func (s *spares) replenish() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// fill keeps ready full until stop.
func (s *spares) fill() {
	defer s.filling.Done()
	for {
		for len(s.ready) < cap(s.ready) {
			select {
			case <-s.stop:
				return
			default:
			}
			p, err := s.spawn()
			if err != nil {
				p = nil
			}
			select {
			case s.ready <- p:
			case <-s.stop:
				if p != nil {
					p.discard()
				}
				return
			}
			if err != nil {
				select {
				case <-time.After(spareRetry):
				case <-s.stop:
					return
				}
			}
		}
		select {
		case <-s.wake:
		case <-s.stop:
			return
		}
	}
}

// close stops the spares.
func (s *spares) close() {
	s.stopped.Do(func() {
		close(s.stop)
		s.filling.Wait()
		for {
			select {
			case p := <-s.ready:
				if p != nil {
					p.discard()
				}
			default:
				return
			}
		}
	})
}
