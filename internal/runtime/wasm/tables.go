package wasm

import (
	"fmt"

	"github.com/gust-faas/gust/internal/runtime"
)

// maxTableEntries bounds the entries of a module's tables, all together.
// The runtime keeps tables in the host's memory, not in the guest's (8
// bytes an entry), where memory_mb does not count them: a table that may
// grow to its format's limit of 2^32 entries could take 32 GiB. A Go
// module's function table has some tens of thousands of entries.
const maxTableEntries = 1 << 20

// boundTables returns module with a maximum size on each of its tables:
// the tables share maxTableEntries equally, and a table.grow past its
// share fails, as one past a declared maximum does. Go declares no
// maximum, and grows no table. A module whose tables start larger than
// their share, or that imports a table (Gust provides none), is refused.
func boundTables(module []byte) ([]byte, error) {
	sections, err := splitSections(module)
	if err != nil {
		return module, nil // for wazero's decoder to refuse, saying more
	}
	changed := false
	for i, s := range sections {
		r := &reader{b: s.body}
		switch s.id {
		case 2:
			imp, err := scanImports(s.body)
			if err != nil {
				return nil, runtime.Errorf(runtime.BadArtifact, "invalid WebAssembly module: imports: %v", err)
			}
			if imp.tables > 0 {
				return nil, runtime.Errorf(runtime.BadArtifact, "module imports a table, which Gust does not provide")
			}
		case 4:
			n := r.count()
			share := uint64(maxTableEntries / max(n, 1))
			body := leb(uint32(n))
			for t := range n {
				elem := r.byte()
				initial, hasMax, limit, err := r.tableLimits()
				if err != nil {
					return nil, runtime.Errorf(runtime.BadArtifact, "invalid WebAssembly module: table %d: %v", t, err)
				}
				if initial > share {
					return nil, runtime.Errorf(runtime.BadArtifact, "table %d starts with %d entries, past the %d that Gust allows it (%d for a module's tables in all)", t, initial, share, maxTableEntries)
				}
				if !hasMax || limit > share {
					limit = share
				}
				body = append(body, elem, 0x01)
				body = append(body, leb(uint32(initial))...)
				body = append(body, leb(uint32(limit))...)
			}
			if r.err != nil {
				return nil, runtime.Errorf(runtime.BadArtifact, "invalid WebAssembly module: %v", r.err)
			}
			sections[i].body, changed = body, true
		}
	}
	if !changed {
		return module, nil
	}
	return assemble(module[:8], sections), nil
}

// tableLimits reads the limits of a 32-bit table (Gust's runtime has no
// other kind).
func (r *reader) tableLimits() (initial uint64, hasMax bool, limit uint64, err error) {
	flags := r.byte()
	if flags&^0x01 != 0 {
		return 0, false, 0, fmt.Errorf("limits flags 0x%02x", flags)
	}
	initial = uint64(r.u32())
	if hasMax = flags&0x01 != 0; hasMax {
		limit = uint64(r.u32())
	}
	return initial, hasMax, limit, r.err
}
