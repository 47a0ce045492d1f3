package wasm

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// A reactor's cold start is mostly its own start: the Go runtime and the
// package initializers of a module built with the Go SDK take a few
// milliseconds, the same every time. So the first instance of a function
// version is started in full, and the state it reached (its memory and its
// mutable globals, right after gust_start, before any request) is kept: the
// instances that follow begin from a copy of it, as AWS Lambda's SnapStart
// begins from a snapshot. A snapshot is shared only by instances of one
// owner (a function version of one tenant: what main computed, a key from
// crypto/rand say, stays that tenant's) started with the same environment
// and memory limit. What the guest's start did outside its memory (its
// output, the files it opened) does not repeat, and non-cryptographic
// random streams (math/rand's) begin alike in every instance started from
// one snapshot; crypto/rand asks the host each time.

// maxSnapshots bounds the snapshots a module keeps: one per owner,
// environment and limit that started it lately. snapshotBudget bounds the
// bytes of all the snapshots of a Runtime: past it, instances start in
// full.
const maxSnapshots = 4

var snapshotBudget int64 = 256 << 20 // a variable for tests

// snapshots are a module's: the names of its globals' exports, and the
// snapshots taken lately, the newest last.
type snapshots struct {
	globals []string
	held    *atomic.Int64 // bytes of the Runtime's snapshots
	mu      sync.Mutex
	list    []*snapshot
	// refused keys had no room in the budget: their starts do not copy
	// their memory again only to find none.
	refused map[snapshotKey]bool
	// taking are the keys whose first start is under way, and will take
	// their snapshot: the starts that come meanwhile start in full
	// without taking one too.
	taking map[snapshotKey]bool
	closed bool
}

// snapshot is the state of an instance right after its start.
type snapshot struct {
	key     snapshotKey
	size    uint64    // bytes of memory
	runs    []pageRun // the memory's non-zero pages
	globals []uint64  // in the order of snapshots.globals
	bytes   int64     // of the runs' data
}

type snapshotKey struct {
	owner, env string
	limit      uint64
}

func keyOf(cfg InstanceConfig) snapshotKey {
	return snapshotKey{owner: cfg.Owner, env: strings.Join(cfg.Env, "\x00"), limit: cfg.Limits.MemoryBytes}
}

// pageRun is a run of pages of memory at offset.
type pageRun struct {
	offset uint64
	data   []byte
}

const snapshotPage = 4096

// maxRefused bounds the keys a module remembers it had no room for.
const maxRefused = 64

// find returns the snapshot for key, or nil; wanted reports whether a
// start under key should take one. Of the starts that find none at once
// (the first instances of a burst), one is wanted to, and must call
// settled when its start ends, whether or not it took one.
func (s *snapshots) find(key snapshotKey) (snap *snapshot, wanted bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, snap := range s.list {
		if snap.key == key {
			return snap, false
		}
	}
	if s.refused[key] || s.closed || s.taking[key] {
		return nil, false
	}
	if s.taking == nil {
		s.taking = map[snapshotKey]bool{}
	}
	s.taking[key] = true
	return nil, true
}

// settled ends the start that find wanted to take key's snapshot: a later
// start may take one, if it found none.
func (s *snapshots) settled(key snapshotKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.taking, key)
}

// take records the state of mod, which has just started, for key, if the
// budget has room for it. A module whose state take cannot read (one with
// no memory, or a memory of 4 GiB, whose size wazero cannot say) is not
// recorded: its instances start in full.
func (s *snapshots) take(key snapshotKey, mod api.Module) {
	globals := make([]uint64, len(s.globals))
	for i, name := range s.globals {
		g := mod.ExportedGlobal(name)
		if g == nil {
			return
		}
		globals[i] = g.Get()
	}
	mem := mod.Memory()
	if mem == nil {
		return
	}
	pages, ok := mem.Grow(0)
	buf, _ := mem.Read(0, mem.Size())
	if !ok || uint64(pages)*pageSize != uint64(len(buf)) {
		return
	}
	// Only the pages that are not zero: a Go guest's memory is mostly
	// zeros, which a new instance's memory holds already. They are found
	// first, so that a snapshot over the budget copies nothing.
	var zero [snapshotPage]byte
	var nonZero []int // offsets of the pages that are not
	var size int64
	for off := 0; off < len(buf); off += snapshotPage {
		page := buf[off:min(off+snapshotPage, len(buf))]
		if !bytes.Equal(page, zero[:len(page)]) {
			nonZero = append(nonZero, off)
			size += int64(len(page))
		}
	}
	if s.held.Add(size) > snapshotBudget {
		s.held.Add(-size)
		s.mu.Lock()
		if len(s.refused) >= maxRefused {
			clear(s.refused)
		}
		if s.refused == nil {
			s.refused = map[snapshotKey]bool{}
		}
		s.refused[key] = true
		s.mu.Unlock()
		return
	}
	snap := &snapshot{key: key, size: uint64(len(buf)), globals: globals, bytes: size}
	data := make([]byte, 0, size)
	for _, off := range nonZero {
		page := buf[off:min(off+snapshotPage, len(buf))]
		if n := len(snap.runs) - 1; n >= 0 && snap.runs[n].offset+uint64(len(snap.runs[n].data)) == uint64(off) {
			snap.runs[n].data = snap.runs[n].data[:len(snap.runs[n].data)+len(page)]
		} else {
			snap.runs = append(snap.runs, pageRun{offset: uint64(off), data: data[len(data) : len(data)+len(page)]})
		}
		data = append(data, page...)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		s.held.Add(-size)
		return
	}
	// None of key is held: find asked this start alone to take one.
	if len(s.list) >= maxSnapshots {
		s.held.Add(-s.list[0].bytes)
		s.list = s.list[1:]
	}
	s.list = append(s.list, snap)
}

// remove drops the snapshots that match.
func (s *snapshots) remove(match func(*snapshot) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removeLocked(match)
}

// removeLocked is remove for a caller that holds s.mu.
func (s *snapshots) removeLocked(match func(*snapshot) bool) {
	s.list = slices.DeleteFunc(s.list, func(snap *snapshot) bool {
		if match(snap) {
			s.held.Add(-snap.bytes)
			return true
		}
		return false
	})
}

// forget drops the snapshots of owner, and what it remembers of owner's
// refused ones.
func (s *snapshots) forget(owner string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removeLocked(func(old *snapshot) bool { return old.key.owner == owner })
	for key := range s.refused {
		if key.owner == owner {
			delete(s.refused, key)
		}
	}
}

// drop forgets every snapshot, and takes none from now: the module is
// closing.
func (s *snapshots) drop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removeLocked(func(*snapshot) bool { return true })
	s.closed = true
}

// restore instantiates the module and gives it snap's state: its memory
// and its globals, in place of a start. It returns nil if snap does not
// fit the new instance (the snapshot is dropped: the caller starts the
// instance in full).
func (m *Module) restore(ctx context.Context, mem *limitedMemory, mc wazero.ModuleConfig, snap *snapshot) (api.Module, error) {
	mod, err := m.instantiate(ctx, mem, mc)
	if err != nil {
		return nil, err
	}
	if !m.snapshots.apply(mod, snap) {
		mod.Close(context.WithoutCancel(ctx))
		m.snapshots.remove(func(old *snapshot) bool { return old == snap })
		return nil, nil
	}
	return mod, nil
}

// apply gives mod snap's memory and globals, and reports whether it could.
func (s *snapshots) apply(mod api.Module, snap *snapshot) bool {
	mem := mod.Memory()
	pages, _ := mem.Grow(0)
	initial := uint64(pages) * pageSize
	if snap.size < initial {
		return false // its start section grew the memory past what it was
	}
	if snap.size > initial {
		if _, ok := mem.Grow(uint32((snap.size - initial) / pageSize)); !ok {
			return false
		}
	}
	buf, ok := mem.Read(0, uint32(snap.size))
	if !ok {
		return false
	}
	// The snapshot's pages over the memory; of the pages between them, the
	// ones the instantiation may have written (its data segments, in the
	// initial memory) are cleared, the others are zero already.
	next := uint64(0)
	for _, run := range snap.runs {
		if next < initial {
			clear(buf[next:min(run.offset, initial)])
		}
		copy(buf[run.offset:], run.data)
		next = run.offset + uint64(len(run.data))
	}
	if next < initial {
		clear(buf[next:initial])
	}
	for i, name := range s.globals {
		g, ok := mod.ExportedGlobal(name).(api.MutableGlobal)
		if !ok {
			return false
		}
		g.Set(snap.globals[i])
	}
	return true
}
