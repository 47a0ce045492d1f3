package wasm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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

// find returns the snapshot for key, or nil.
func (s *snapshots) find(key snapshotKey) *snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, snap := range s.list {
		if snap.key == key {
			return snap
		}
	}
	return nil
}

// take records the state of mod, which has just started, for key.
func (s *snapshots) take(key snapshotKey, mod api.Module) error {
	globals := make([]uint64, len(s.globals))
	for i, name := range s.globals {
		g := mod.ExportedGlobal(name)
		if g == nil {
			return fmt.Errorf("wasm: snapshot: no export %s", name)
		}
		globals[i] = g.Get()
	}
	mem := mod.Memory()
	if mem == nil {
		return errors.New("wasm: snapshot: the module has no memory")
	}
	buf, _ := mem.Read(0, mem.Size())
	snap := &snapshot{key: key, size: uint64(len(buf)), globals: globals}
	// Only the pages that are not zero: a Go guest's memory is mostly
	// zeros, which a new instance's memory holds already.
	var zero [snapshotPage]byte
	var data []byte
	type span struct{ offset, start, end int }
	var spans []span
	for off := 0; off < len(buf); off += snapshotPage {
		page := buf[off:min(off+snapshotPage, len(buf))]
		if bytes.Equal(page, zero[:len(page)]) {
			continue
		}
		if n := len(spans) - 1; n >= 0 && spans[n].offset+(spans[n].end-spans[n].start) == off {
			spans[n].end += len(page)
		} else {
			spans = append(spans, span{offset: off, start: len(data), end: len(data) + len(page)})
		}
		data = append(data, page...)
	}
	for _, sp := range spans {
		snap.runs = append(snap.runs, pageRun{offset: uint64(sp.offset), data: data[sp.start:sp.end:sp.end]})
	}
	snap.bytes = int64(len(data))
	if s.held.Add(snap.bytes) > snapshotBudget {
		s.held.Add(-snap.bytes)
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Two first instances may have started at once: the later one's
	// snapshot replaces the other's.
	s.list = slices.DeleteFunc(s.list, func(old *snapshot) bool {
		if old.key == key {
			s.held.Add(-old.bytes)
		}
		return old.key == key
	})
	if len(s.list) >= maxSnapshots {
		s.held.Add(-s.list[0].bytes)
		s.list = s.list[1:]
	}
	s.list = append(s.list, snap)
	return nil
}

// drop forgets every snapshot: the module is closing.
func (s *snapshots) drop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, snap := range s.list {
		s.held.Add(-snap.bytes)
	}
	s.list = nil
}

// restore instantiates the module and gives it snap's state: its memory
// and its globals, in place of a start.
func (m *Module) restore(ctx context.Context, mem *limitedMemory, mc wazero.ModuleConfig, snap *snapshot) (api.Module, error) {
	mod, err := m.instantiate(ctx, mem, mc)
	if err != nil {
		return nil, err
	}
	if err := m.snapshots.apply(mod, snap); err != nil {
		mod.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return mod, nil
}

func (s *snapshots) apply(mod api.Module, snap *snapshot) error {
	mem := mod.Memory()
	initial := uint64(mem.Size())
	if snap.size > initial {
		if _, ok := mem.Grow(uint32((snap.size - initial) / pageSize)); !ok {
			return fmt.Errorf("wasm: snapshot: memory cannot grow to %d bytes", snap.size)
		}
	}
	buf, ok := mem.Read(0, uint32(snap.size))
	if !ok || uint64(mem.Size()) != snap.size {
		return fmt.Errorf("wasm: snapshot: memory is %d bytes, the snapshot's %d", mem.Size(), snap.size)
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
			return fmt.Errorf("wasm: snapshot: export %s is not a mutable global", name)
		}
		g.Set(snap.globals[i])
	}
	return nil
}
