package wasm

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gust-faas/gust/internal/runtime"
)

// commandModule is a WASI command that imports sched_yield, has a memory
// of pages pages and the given table section body (none if nil), and whose
// _start runs code (with no locals, and no end).
func commandModule(pages uint32, tables, code []byte) []byte {
	m := []byte("\x00asm\x01\x00\x00\x00")
	m = append(m, encodeSection(1, []byte{2, 0x60, 0, 1, 0x7F, 0x60, 0, 0})...) // () -> i32, () -> ()
	imp := append(append([]byte{1}, wasmString(wasiModule)...), wasmString("sched_yield")...)
	m = append(m, encodeSection(2, append(imp, 0x00, 0))...)
	m = append(m, encodeSection(3, []byte{1, 1})...)
	if tables != nil {
		m = append(m, encodeSection(4, tables)...)
	}
	m = append(m, encodeSection(5, append([]byte{1, 0}, leb(pages)...))...)
	exp := append([]byte{2}, append(wasmString("_start"), 0x00, 1)...)
	exp = append(exp, append(wasmString("memory"), 0x02, 0)...)
	m = append(m, encodeSection(7, exp)...)
	fn := append(append([]byte{0}, code...), 0x0B)
	return append(m, encodeSection(10, append([]byte{1}, append(leb(uint32(len(fn))), fn...)...))...)
}

// forever is code that runs body in a loop for ever.
func forever(body ...byte) []byte {
	return append(append([]byte{0x03, 0x40}, body...), 0x0C, 0, 0x0B) // loop body; br 0; end
}

// TestGuestCannotResetItsBudget: a module that writes a global it does not
// have, which in its instrumented copy would be the budget that brings the
// guest back to the host (reset at every iteration, the guest would never
// stop and would stall the host's garbage collector for good), is refused.
func TestGuestCannotResetItsBudget(t *testing.T) {
	rt := newRuntime(t)
	resetting := commandModule(1, nil, forever(0x41, 5, 0x24, 0)) // global.set 0 (i32.const 5)
	_, err := rt.Compile(context.Background(), "", resetting)
	var rerr *runtime.Error
	if !errors.As(err, &rerr) || rerr.Kind != runtime.BadArtifact || !strings.Contains(err.Error(), "global 0") {
		t.Fatalf("Compile = %v, want the module refused for the global it does not have", err)
	}
}

// TestBulkFillIsInterrupted: a guest that fills its whole memory again and
// again stops at its deadline: each fill counts by its length.
func TestBulkFillIsInterrupted(t *testing.T) {
	const pages = 1024 // 64 MiB, the test's limit
	fill := append([]byte{0x41, 0, 0x41, 7, 0x41}, sleb32(pages<<16-1)...)
	fill = append(fill, 0xFC, 11, 0) // memory.fill(0, 7, 64 MiB - 1)
	stopsAtItsDeadline(t, commandModule(pages, nil, forever(fill...)), "the fills")
}

// TestTablesAreBounded: tables live in the host's memory, beyond memory_mb.
// A table with no maximum, or one past maxTableEntries, gets that maximum:
// growing it past fails, as a guest's table.grow may. A module whose tables
// start past it is refused, saying why.
func TestTablesAreBounded(t *testing.T) {
	ctx := context.Background()
	rt := newRuntime(t)
	// if table.grow(null, 2^21) != -1 { unreachable }
	grow := append([]byte{0xD0, 0x70, 0x41}, sleb32(2*maxTableEntries)...)
	grow = append(grow, 0xFC, 15, 0, 0x41, 0x7F, 0x47, 0x04, 0x40, 0x00, 0x0B)
	table := func(limits ...byte) []byte { return append([]byte{1, 0x70}, limits...) } // one funcref table
	for _, tc := range []struct {
		name   string
		tables []byte
	}{
		{"no maximum", table(0x00, 1)},
		{"a maximum past the bound", table(append([]byte{0x01, 1}, leb(4*maxTableEntries)...)...)},
	} {
		m, err := rt.Compile(ctx, "", commandModule(1, tc.tables, grow))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		_, err, _ = invoke(t, m, 10*time.Second, "/", "")
		var rerr *runtime.Error
		if !errors.As(err, &rerr) || rerr.Kind != runtime.BadResponse {
			t.Errorf("%s: Invoke = %v; want the growth refused, and no response (the guest traps if its table grew)", tc.name, err)
		}
	}
	starts := append([]byte{2, 0x70, 0x00}, append(leb(maxTableEntries/2+1), 0x70, 0x00, 0)...) // two tables, one starting past its half
	_, err := rt.Compile(ctx, "", commandModule(1, starts, []byte{0x01}))
	var rerr *runtime.Error
	if !errors.As(err, &rerr) || rerr.Kind != runtime.BadArtifact || !strings.Contains(err.Error(), "table 0 starts with") {
		t.Errorf("Compile = %v, want the module refused for its table's start", err)
	}
}
