package wasm

import (
	"sync"
	"syscall"

	"github.com/tetratelabs/wazero/experimental"
)

// limitedMemory backs one instance's linear memory. It refuses to grow past
// limit and remembers that it did: that refusal is what tells an
// out-of-memory guest from one that crashed for another reason.
//
// The memory is an anonymous mapping that reserves limit bytes of address
// space at once: the kernel hands out zeroed pages as the guest touches
// them, growing never copies, and nothing of it is on the Go heap for the
// garbage collector to clear or scan. If the mapping fails, the memory is an
// ordinary slice that grows by copying. A closed instance's mapping is
// cleared and kept for the next instance of the same limit (see
// mappingSpares).
type limitedMemory struct {
	limit   uint64
	spares  *mappingSpares // the runtime's
	mapping []byte         // the reserved mapping, or nil
	buf     []byte
	refused bool // written and read on the guest's goroutine
}

const pageRound = 64 << 10

func (l *limitedMemory) Allocate(capacity, _ uint64) experimental.LinearMemory {
	reserve := (l.limit + pageRound - 1) / pageRound * pageRound
	m := l.spares.take(reserve)
	if m == nil {
		var err error
		m, err = syscall.Mmap(-1, 0, int(reserve), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON|syscall.MAP_NORESERVE)
		if err != nil {
			l.buf = make([]byte, 0, min(capacity, l.limit))
			return l
		}
		adviseHugePages(m)
	}
	l.mapping, l.buf = m, m[:0]
	return l
}

func (l *limitedMemory) Reallocate(size uint64) []byte {
	if size > l.limit {
		l.refused = true
		return nil
	}
	if size <= uint64(cap(l.buf)) {
		l.buf = l.buf[:size]
		return l.buf
	}
	grown := make([]byte, size, min(max(size, 2*uint64(cap(l.buf))), l.limit))
	copy(grown, l.buf)
	l.buf = grown
	return grown
}

// Free gives the mapping back: cleared, to the spares, or unmapped. wazero
// calls it when the instance is closed; calling it again does nothing.
func (l *limitedMemory) Free() {
	if l.mapping != nil && !l.spares.put(l.mapping, len(l.buf)) {
		syscall.Munmap(l.mapping)
	}
	l.mapping, l.buf = nil, nil
}

// mappingSpares are the mappings of closed instances, cleared, for
// instances to come, at most budget bytes of touched pages. A fresh mapping
// costs a page fault, and a page cleared by the kernel, for every page the
// guest touches (a Go guest touches some 5 MiB before its first request),
// and on a virtual machine a fault in the host too when the guest's memory
// was handed back to it meanwhile; a spare's pages are there. Clearing them
// costs less, and for a warm instance it is off the request's path (the
// pool closes instances after their response); a command module's instance
// is closed before its response, so what is cleared is bounded: a memory
// that grew past clearAtMost is unmapped instead.
type mappingSpares struct {
	mu        sync.Mutex
	budget    int
	held      int                 // touched bytes of the mappings held
	byReserve map[uint64][][]byte // each cleared up to its length
	closed    bool
}

const (
	sparesBudget = 64 << 20
	clearAtMost  = 16 << 20
)

func newMappingSpares(budget int) *mappingSpares {
	return &mappingSpares{budget: budget, byReserve: map[uint64][][]byte{}}
}

// close unmaps the spares and keeps no more: the runtime is closing, and a
// guest still running at that point (a stop that did not wait for it)
// must not write into a mapping that another instance is given.
func (s *mappingSpares) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for _, list := range s.byReserve {
		for _, m := range list {
			syscall.Munmap(m[:cap(m)])
		}
	}
	s.byReserve, s.held = nil, 0
}

// take returns a spare mapping of reserve bytes, or nil.
func (s *mappingSpares) take(reserve uint64) []byte {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	list := s.byReserve[reserve]
	if len(list) == 0 {
		return nil
	}
	m := list[len(list)-1]
	s.byReserve[reserve] = list[:len(list)-1]
	s.held -= len(m)
	return m[:cap(m)]
}

// put keeps mapping, of which the guest touched the first used bytes, if
// the budget has room, making room by unmapping spares of other sizes (of
// functions that may no longer run), and reports whether it did.
func (s *mappingSpares) put(mapping []byte, used int) bool {
	if s == nil || used > clearAtMost {
		return false
	}
	reserve := uint64(cap(mapping))
	var evicted [][]byte
	s.mu.Lock()
	same := 0
	for _, m := range s.byReserve[reserve] {
		same += len(m)
	}
	if s.closed || same+used > s.budget {
		s.mu.Unlock()
		return false // evicting the other sizes would not make room
	}
	for size, list := range s.byReserve {
		if s.held+used <= s.budget {
			break
		}
		if size == reserve {
			continue
		}
		for _, m := range list {
			s.held -= len(m)
			evicted = append(evicted, m)
		}
		delete(s.byReserve, size)
	}
	fits := s.held+used <= s.budget
	if fits {
		s.held += used // held while it is cleared, so that the budget holds
	}
	s.mu.Unlock()
	for _, m := range evicted {
		syscall.Munmap(m[:cap(m)])
	}
	if !fits {
		return false
	}
	clear(mapping[:used])
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		s.held -= used
		return false
	}
	s.byReserve[reserve] = append(s.byReserve[reserve], mapping[:used])
	return true
}

var (
	_ experimental.MemoryAllocator = (*limitedMemory)(nil)
	_ experimental.LinearMemory    = (*limitedMemory)(nil)
)
