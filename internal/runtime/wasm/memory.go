package wasm

import (
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
// ordinary slice that grows by copying.
type limitedMemory struct {
	limit   uint64
	mapping []byte // the reserved mapping, or nil
	buf     []byte
	refused bool // written and read on the guest's goroutine
}

const pageRound = 64 << 10

func (l *limitedMemory) Allocate(capacity, _ uint64) experimental.LinearMemory {
	reserve := (l.limit + pageRound - 1) / pageRound * pageRound
	m, err := syscall.Mmap(-1, 0, int(reserve), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON|syscall.MAP_NORESERVE)
	if err == nil {
		adviseHugePages(m)
		l.mapping = m
		l.buf = m[:0]
		return l
	}
	l.buf = make([]byte, 0, min(capacity, l.limit))
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

// Free unmaps the memory. wazero calls it when the instance is closed.
func (l *limitedMemory) Free() {
	if l.mapping != nil {
		syscall.Munmap(l.mapping)
		l.mapping = nil
	}
	l.buf = nil
}

var (
	_ experimental.MemoryAllocator = (*limitedMemory)(nil)
	_ experimental.LinearMemory    = (*limitedMemory)(nil)
)
