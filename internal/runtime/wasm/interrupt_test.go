package wasm

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/gust-faas/gust/internal/runtime"
	"github.com/gust-faas/gust/internal/runtime/wasm/wasmtest"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// dataSection encodes active data segments of memory 0, in order.
func dataSection(segs [][2]any) []byte {
	out := leb(uint32(len(segs)))
	for _, s := range segs {
		data := s[1].([]byte)
		out = append(out, 0x00, 0x41)
		out = append(out, sleb32(int32(s[0].(int)))...)
		out = append(out, 0x0B)
		out = append(out, leb(uint32(len(data)))...)
		out = append(out, data...)
	}
	return out
}

// image is memory after instantiation: each segment written in order.
func image(t *testing.T, body []byte, size int) []byte {
	t.Helper()
	mem := make([]byte, size)
	r := &reader{b: body}
	n := r.u32()
	for range n {
		if r.u32() != 0 || r.byte() != 0x41 {
			t.Fatal("not an active segment")
		}
		off := int(r.sleb32())
		r.byte()
		sz := int(r.u32())
		copy(mem[off:], r.b[r.i:r.i+sz])
		r.skip(sz)
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	return mem
}

// TestMergeDataKeepsMemory: merging segments never changes what memory
// holds after instantiation, even when the linker lists segments out of
// order (it does for modules built without -trimpath) and a merged gap
// would cover an earlier segment.
func TestMergeDataKeepsMemory(t *testing.T) {
	// B (listed first) lies in the gap between A and C.
	clobber := dataSection([][2]any{{50, []byte("bb")}, {0, []byte("aaaa")}, {100, []byte("cccc")}})
	if got, want := image(t, mergeData(clobber), 200), image(t, clobber, 200); !bytes.Equal(got, want) {
		t.Fatalf("merged memory differs:\n got %q\nwant %q", got, want)
	}
	sorted := dataSection([][2]any{{0, []byte("aaaa")}, {100, []byte("cccc")}, {5000, []byte("dd")}})
	if r := (&reader{b: mergeData(sorted)}); r.u32() != 2 {
		t.Errorf("sorted segments 96 bytes apart were not merged into one (then one beyond maxDataGap)")
	}

	rng := rand.New(rand.NewPCG(1, 2))
	const size = 1 << 16
	for range 500 {
		var segs [][2]any
		for range 1 + rng.IntN(40) {
			n := 1 + rng.IntN(64)
			data := make([]byte, n)
			for i := range data {
				data[i] = byte(1 + rng.IntN(255))
			}
			segs = append(segs, [2]any{rng.IntN(size - n), data})
		}
		body := dataSection(segs)
		if got, want := image(t, mergeData(body), size), image(t, body, size); !bytes.Equal(got, want) {
			t.Fatalf("merging %d segments changed memory", len(segs))
		}
	}
}

// encodeSection encodes a module's section.
func encodeSection(id byte, body []byte) []byte {
	return append(append([]byte{id}, leb(uint32(len(body)))...), body...)
}

// wasmString encodes a name, as the binary format does.
func wasmString(s string) []byte { return append(leb(uint32(len(s))), s...) }

// tinyModule is a module that imports WASI's sched_yield and has one
// function with a loop, a global and a data section: enough for instrument
// to rewrite every kind of section it touches.
func tinyModule() []byte {
	return tinyModuleWith(nil, [][2]any{{16, []byte("xy")}, {0, []byte("ab")}, {40, []byte("cd")}})
}

// tinyModuleWith is tinyModule with the given sections before the code
// section (the data count goes there) and data segments.
func tinyModuleWith(beforeCode []byte, data [][2]any) []byte {
	m := []byte("\x00asm\x01\x00\x00\x00")
	m = append(m, encodeSection(1, []byte{2, 0x60, 0, 1, 0x7F, 0x60, 0, 0})...) // types: () -> i32, () -> ()
	imp := append(append([]byte{1}, wasmString(wasiModule)...), wasmString("sched_yield")...)
	m = append(m, encodeSection(2, append(imp, 0x00, 0))...)                 // import func type 0
	m = append(m, encodeSection(3, []byte{1, 1})...)                         // one function of type 1
	m = append(m, encodeSection(5, []byte{1, 0, 1})...)                      // memory 1 page
	m = append(m, encodeSection(6, []byte{1, 0x7F, 0x01, 0x41, 0, 0x0B})...) // mut i32 global = 0
	// loop: br_if 0 (i32.eqz (global.get 0))... then end
	body := []byte{0, 0x03, 0x40, 0x23, 0, 0x45, 0x0D, 0, 0x0B, 0x0B}
	m = append(m, beforeCode...)
	m = append(m, encodeSection(10, append([]byte{1}, append(leb(uint32(len(body))), body...)...))...)
	m = append(m, encodeSection(11, dataSection(data))...)
	return m
}

// FuzzInstrument: instrument reads modules that tenants upload, so it must
// not panic on any input, and what it returns must still be a module that
// wazero accepts whenever the input was one.
func FuzzInstrument(f *testing.F) {
	f.Add(tinyModule())
	// Vectors whose forged lengths once had instrument loop for seconds,
	// or allocate for billions of elements.
	forged := tinyModule()
	f.Add(append(forged[:len(forged):len(forged)], 0x0B, 0x05, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F))
	f.Add([]byte("\x00asm\x01\x00\x00\x00\x02\x05\xff\xff\xff\xff\x0f"))
	f.Add([]byte("\x00asm\x01\x00\x00\x00"))
	f.Add([]byte("\x00asm\x01\x00\x00\x00\x0b\x07\x01\x00\x41\x80\x80\x04\x0b\x00"))
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, module []byte) {
		out, err := instrument(module)
		if err != nil {
			return
		}
		// wazero decodes in this process only what the child process
		// could decode: a forged count would end the fuzzer.
		if _, err := decodeCheck(ctx, module, true, ""); err != nil {
			return
		}
		orig, err := rt.CompileModule(ctx, module)
		if err != nil {
			return
		}
		orig.Close(ctx)
		c, err := rt.CompileModule(ctx, out.code)
		if err != nil {
			t.Fatalf("the module compiles, its instrumented copy does not: %v", err)
		}
		c.Close(ctx)
	})
}

func TestInstrumentTinyModule(t *testing.T) {
	out, err := instrument(tinyModule())
	if err != nil {
		t.Fatalf("instrument(tiny module) = %v, want it instrumented", err)
	}
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	if _, err := rt.CompileModule(ctx, out.code); err != nil {
		t.Errorf("the instrumented tiny module does not compile: %v", err)
	}
}

// TestCompileRefusesDecoderBombs: modules of a few bytes that state
// billions of elements once made wazero's decoder allocate until the Go
// runtime ended the server. They are refused with a clear error, and this
// process lives on.
func TestCompileRefusesDecoderBombs(t *testing.T) {
	header := "\x00asm\x01\x00\x00\x00"
	huge := "\xff\xff\xff\xff\x0f"
	bombs := map[string]string{
		"data segments":   header + "\x0b\x05" + huge,
		"imports":         header + "\x02\x05" + huge,
		"exports":         header + "\x07\x05" + huge,
		"custom name":     header + "\x00\x06" + huge + "x",
		"function params": header + "\x01\x07\x01\x60" + huge,
	}
	ctx := context.Background()
	rt := newRuntime(t)
	for name, module := range bombs {
		_, err := rt.Compile(ctx, "", []byte(module))
		var rerr *runtime.Error
		if !errors.As(err, &rerr) || rerr.Kind != runtime.BadArtifact || !strings.Contains(rerr.Message, "invalid WebAssembly module: ") {
			t.Errorf("Compile(%s bomb) = %v, want a bad artifact saying why", name, err)
		}
	}
	// A good module still compiles.
	if _, err := rt.Compile(ctx, "", wasmtest.MustRead(wasmtest.HelloCGI)); err != nil {
		t.Errorf("Compile(hello-cgi) = %v", err)
	}
}

// TestInstrumentKeepsTheDataCount: a module with a data count section
// (bulk memory, which Rust and LLVM emit) keeps its segments as they are.
func TestInstrumentKeepsTheDataCount(t *testing.T) {
	// Three segments close enough to be merged, and their count.
	out := tinyModuleWith([]byte{12, 1, 3}, [][2]any{{0, []byte("ab")}, {8, []byte("cd")}, {40, []byte("ef")}})
	instrumented, err := instrument(out)
	if err != nil {
		t.Fatalf("instrument = %v", err)
	}
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	if _, err := rt.CompileModule(ctx, out); err != nil {
		t.Fatalf("the module with a data count does not compile: %v", err)
	}
	if _, err := rt.CompileModule(ctx, instrumented.code); err != nil {
		t.Errorf("instrumented, it does not compile: %v", err)
	}
}

// TestDecodeCheckWaitsItsTurn: a module checked while both slots are taken
// waits for one, and its time limit counts from its own start, so it is
// not refused as too slow to compile for the others' time; a caller that
// gives up while it waits gets an error that does not blame the module.
func TestDecodeCheckWaitsItsTurn(t *testing.T) {
	defer func(d time.Duration) { decodeCheckTime = d }(decodeCheckTime)
	decodeCheckTime = 2 * time.Second
	hold := func() (release func()) {
		for range cap(decodeCheckSlots) {
			decodeCheckSlots <- struct{}{}
		}
		return func() {
			for range cap(decodeCheckSlots) {
				<-decodeCheckSlots
			}
		}
	}
	release := hold()
	done := make(chan error, 1)
	go func() { _, err := decodeCheck(context.Background(), tinyModule(), true, ""); done <- err }()
	time.Sleep(decodeCheckTime + time.Second) // longer than the check may take
	release()
	if err := <-done; err != nil {
		t.Errorf("a valid module checked after waiting for a slot: %v, want nil", err)
	}

	release = hold()
	defer release()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	go func() { _, err := decodeCheck(ctx, tinyModule(), true, ""); done <- err }()
	var err error
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a check given up while waiting for a slot is still waiting")
	}
	var rerr *runtime.Error
	if err == nil || errors.As(err, &rerr) || !strings.Contains(err.Error(), "waiting for other modules' checks") {
		t.Errorf("a check given up while waiting: %v, want an error about the wait, not about the module", err)
	}
}

// recursiveModule is a WASI command whose _start computes fib(45) by
// recursion, with no loop anywhere: for seconds it only calls itself.
func recursiveModule() []byte {
	fn := func(body ...byte) []byte { return append(leb(uint32(len(body))), body...) }
	m := []byte("\x00asm\x01\x00\x00\x00")
	m = append(m, encodeSection(1, []byte{3, 0x60, 0, 1, 0x7F, 0x60, 1, 0x7F, 1, 0x7F, 0x60, 0, 0})...) // () -> i32, (i32) -> i32, () -> ()
	imp := append(append([]byte{1}, wasmString(wasiModule)...), wasmString("sched_yield")...)
	m = append(m, encodeSection(2, append(imp, 0x00, 0))...) // function 0: sched_yield
	m = append(m, encodeSection(3, []byte{2, 1, 2})...)      // 1: fib, 2: _start
	m = append(m, encodeSection(5, []byte{1, 0, 1})...)
	exp := append([]byte{2}, append(wasmString("_start"), 0x00, 2)...)
	exp = append(exp, append(wasmString("memory"), 0x02, 0)...)
	m = append(m, encodeSection(7, exp)...)
	fib := fn(0, 0x20, 0, 0x41, 2, 0x49, 0x04, 0x7F, 0x20, 0, 0x05, // if n < 2 { n } else {
		0x20, 0, 0x41, 1, 0x6B, 0x10, 1, 0x20, 0, 0x41, 2, 0x6B, 0x10, 1, 0x6A, 0x0B, 0x0B) // fib(n-1) + fib(n-2) }
	start := fn(0, 0x41, 45, 0x10, 1, 0x1A, 0x0B)
	code := append([]byte{2}, fib...)
	m = append(m, encodeSection(10, append(code, start...))...)
	return m
}

// TestRecursionIsInterrupted: a guest that recurses without a loop stops at
// its deadline like one that loops.
func TestRecursionIsInterrupted(t *testing.T) {
	stopsAtItsDeadline(t, recursiveModule(), "the recursion")
}

// stopsAtItsDeadline checks that module, instrumented, stops within a few
// seconds of a 300 ms deadline, with a timeout; what names what it runs.
func stopsAtItsDeadline(t *testing.T, module []byte, what string) {
	t.Helper()
	rt := newRuntime(t)
	m, err := rt.Compile(context.Background(), "", module)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	if m.engine != rt.fast {
		t.Fatalf("the module was not instrumented: the test would not test it")
	}
	start := time.Now()
	_, err, _ = invoke(t, m, 300*time.Millisecond, "/", "")
	var rerr *runtime.Error
	if !errors.As(err, &rerr) || rerr.Kind != runtime.Timeout {
		t.Fatalf("Invoke = %v, want a timeout", err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("%s ran %v past a 300ms deadline", what, elapsed)
	}
}

// exportingModule is a module with a table, a mutable global and a
// function whose body is body, exporting the function as "f" and, if
// extra is set, something named extra too.
func exportingModule(body []byte, extra string) []byte {
	m := []byte("\x00asm\x01\x00\x00\x00")
	m = append(m, encodeSection(1, []byte{2, 0x60, 0, 1, 0x7F, 0x60, 0, 0})...)
	imp := append(append([]byte{1}, wasmString(wasiModule)...), wasmString("sched_yield")...)
	m = append(m, encodeSection(2, append(imp, 0x00, 0))...)
	m = append(m, encodeSection(3, []byte{1, 1})...)
	m = append(m, encodeSection(4, []byte{1, 0x70, 0, 1})...) // a funcref table of 1
	m = append(m, encodeSection(5, []byte{1, 0, 1})...)
	m = append(m, encodeSection(6, []byte{2, 0x7F, 0x00, 0x41, 7, 0x0B, 0x7F, 0x01, 0x41, 0, 0x0B})...) // const i32 = 7, mut i32 = 0
	exports := append(wasmString("f"), 0x00, 1)
	n := byte(1)
	if extra != "" {
		exports = append(append(exports, wasmString(extra)...), 0x00, 1)
		n++
	}
	m = append(m, encodeSection(7, append([]byte{n}, exports...))...)
	return append(m, encodeSection(10, append([]byte{1}, append(leb(uint32(len(body))), body...)...))...)
}

// TestInstrumentExportsGlobalsForSnapshots: instrument exports a module's
// mutable globals, for a snapshot to read and set, unless the module's
// state lies elsewhere too (a table it changes) or it uses the exports'
// names itself.
func TestInstrumentExportsGlobalsForSnapshots(t *testing.T) {
	plain := []byte{0, 0x41, 1, 0x24, 1, 0x0B}                           // global.set 1 (i32.const 1)
	tableSet := []byte{0, 0x41, 0, 0xD0, 0x70, 0x26, 0, 0x0B}            // table.set 0 (i32.const 0) (ref.null func)
	tableGrow := []byte{0, 0xD0, 0x70, 0x41, 1, 0xFC, 15, 0, 0x1A, 0x0B} // drop (table.grow 0 (ref.null func) (i32.const 1))
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
		t.Fatal(err)
	}
	out, err := instrument(exportingModule(plain, ""))
	if err != nil || !out.snapshots || len(out.globals) != 1 || out.globals[0] != snapshotExport+"1" {
		t.Fatalf("instrument = %+v, %v; want snapshots of global 1, the mutable one", out.globals, err)
	}
	mod, err := rt.Instantiate(ctx, out.code)
	if err != nil {
		t.Fatalf("the instrumented module does not instantiate: %v", err)
	}
	if _, err := mod.ExportedFunction("f").Call(ctx); err != nil {
		t.Fatal(err)
	}
	g, ok := mod.ExportedGlobal(out.globals[0]).(api.MutableGlobal)
	if !ok || g.Get() != 1 {
		t.Fatalf("export %s = %v, want the mutable global f set to 1", out.globals[0], mod.ExportedGlobal(out.globals[0]))
	}
	g.Set(5)
	if got := mod.ExportedGlobal(out.globals[0]).Get(); got != 5 {
		t.Errorf("after Set(5) the global is %d", got)
	}
	for name, module := range map[string][]byte{
		"table.set":          exportingModule(tableSet, ""),
		"table.grow":         exportingModule(tableGrow, ""),
		"an export's prefix": exportingModule(plain, snapshotExport+"x"),
	} {
		out, err := instrument(module)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if out.snapshots {
			t.Errorf("%s: instrument allows snapshots", name)
		}
		if _, err := rt.CompileModule(ctx, out.code); err != nil {
			t.Errorf("%s: the instrumented module does not compile: %v", name, err)
		}
	}
}

// TestLoopFirst: a function that opens a loop before it can call or branch
// has its check at the loop, not at its entry too.
func TestLoopFirst(t *testing.T) {
	for _, c := range []struct {
		code []byte
		want bool
	}{
		{[]byte{0x03, 0x40, 0x0B, 0x0B}, true},
		{[]byte{0x23, 0, 0x21, 1, 0x02, 0x40, 0x03, 0x40, 0x0B, 0x0B, 0x0B}, true}, // Go's: global.get, local.set, block, loop
		{[]byte{0x41, 5, 0x1A, 0x03, 0x40, 0x0B, 0x0B}, false},                     // drop: not among the few
		{[]byte{0x10, 0, 0x03, 0x40, 0x0B, 0x0B}, false},                           // a call first
		{[]byte{0x41, 1, 0x04, 0x40, 0x03, 0x40, 0x0B, 0x0B, 0x0B}, false},         // an if first
		{[]byte{0x02, 0x40, 0x0C, 0, 0x0B, 0x03, 0x40, 0x0B, 0x0B}, false},         // a branch first
		{[]byte{0x0B}, false},
		{nil, false},
	} {
		if got := loopFirst(c.code); got != c.want {
			t.Errorf("loopFirst(% x) = %v, want %v", c.code, got, c.want)
		}
	}
}
