package wasm

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// yieldBudget is how many loop iterations a guest runs between two calls to
// the host.
const yieldBudget = 1000

// errCannotInstrument is returned for modules instrument does not handle
// (no sched_yield import to call, or SIMD or threads instructions); they run
// with wazero's own termination checks instead.
var errCannotInstrument = errors.New("module cannot be instrumented")

// errInvalid is returned for modules that name globals they do not have:
// invalid, but valid once instrumented, with the budget under that name.
var errInvalid = errors.New("invalid module")

// instrument returns a copy of a WebAssembly module in which every loop
// iteration and every function call counts down a new global, and every
// yieldBudget of them calls
// the module's own import of WASI's sched_yield. That call is where the host
// stops a guest whose deadline has passed (see Runtime), and where the Go
// runtime of the host can preempt the goroutine running the guest: native
// code that never calls out cannot be preempted, and would stall the host's
// garbage collector. wazero's own mechanism (WithCloseOnContextDone) calls
// out at every iteration, which makes code compiled from Go several times
// slower. Bulk operations count by the length they fill or copy. Function
// and global indices are unchanged: nothing is imported, and the globals
// are appended after the others.
func instrument(module []byte) (instrumented, error) {
	sections, err := splitSections(module)
	if err != nil {
		return instrumented{}, err
	}
	importedGlobals, definedGlobals := 0, 0
	yieldFunc := -1
	hasGlobalSection, hasDataCount := false, false
	var mutable []uint32 // the module's own mutable globals
	mutableKnown := true
	for _, s := range sections {
		switch s.id {
		case 12:
			hasDataCount = true // merging segments would break the count it states
		case 2:
			imp, err := scanImports(s.body)
			if err != nil {
				return instrumented{}, err
			}
			importedGlobals, yieldFunc = imp.globals, imp.yield
		case 6:
			hasGlobalSection = true
			sr := &reader{b: s.body}
			definedGlobals = int(sr.u32())
			if sr.err != nil {
				return instrumented{}, sr.err
			}
			mutable, mutableKnown = mutableGlobals(s.body, uint32(importedGlobals))
		}
	}
	if yieldFunc < 0 {
		return instrumented{}, fmt.Errorf("%w: it does not import %s.sched_yield", errCannotInstrument, wasiModule)
	}
	// Two globals are added: the budget, and a scratch one that keeps the
	// length of a bulk operation while it is counted.
	globals := uint32(importedGlobals + definedGlobals)
	g, scratch := leb(globals), leb(globals+1)
	budget := append([]byte{0x41}, leb(yieldBudget)...) // i32.const yieldBudget
	var check []byte
	// if budget <= 0 { drop(sched_yield()); budget = yieldBudget }
	check = append(append(check, 0x23), g...)
	check = append(check, 0x41, 0x00, 0x4C, 0x04, 0x40, 0x10)
	check = append(check, leb(uint32(yieldFunc))...)
	check = append(check, 0x1A)
	check = append(append(append(check, budget...), 0x24), g...)
	check = append(check, 0x0B)
	// budget--
	check = append(append(check, 0x23), g...)
	check = append(append(check, 0x41, 0x01, 0x6B, 0x24), g...)
	// Before a bulk operation, whose length is on top of the stack:
	// budget -= length >> bulkShift, then the check.
	var bulk []byte
	bulk = append(append(bulk, 0x24), scratch...)
	bulk = append(append(bulk, 0x23), scratch...)
	bulk = append(append(bulk, 0x23), g...)
	bulk = append(append(bulk, 0x23), scratch...)
	bulk = append(bulk, 0x41, bulkShift, 0x76, 0x6B, 0x24) // i32.const bulkShift, i32.shr_u, i32.sub, global.set
	bulk = append(append(bulk, g...), check...)
	newGlobals := append(append([]byte{0x7F, 0x01}, budget...), 0x0B) // mut i32 = yieldBudget
	newGlobals = append(newGlobals, 0x7F, 0x01, 0x41, 0x00, 0x0B)     // mut i32 = 0
	ins := &instrumenter{check: check, bulk: bulk, globals: globals}

	// The code first: it tells whether an instance's state is all in its
	// memory and globals, which the exports added below let a snapshot
	// read and set.
	var out []section
	for i, s := range sections {
		if s.id == 10 {
			body, err := ins.code(s.body)
			if err != nil {
				return instrumented{}, err
			}
			sections[i].body = body
		}
	}
	var result instrumented
	for _, s := range sections {
		switch s.id {
		case 6:
			s.body = appendToVector(s.body, newGlobals, 2)
		case 7:
			if err := checkExports(s.body, globals); err != nil {
				return instrumented{}, err
			}
			if mutableKnown && importedGlobals == 0 && !ins.changesTables {
				s.body, result.globals, result.snapshots = exportGlobals(s.body, mutable)
			}
		case 11:
			if !hasDataCount {
				s.body = mergeData(s.body)
			}
		}
		if !hasGlobalSection && s.id > 6 && s.id != 12 {
			// The global section follows the memory section (5) and comes
			// before the others, but for custom sections (0) and the data
			// count (12), which sits before the code.
			out = append(out, section{id: 6, body: append([]byte{2}, newGlobals...)})
			hasGlobalSection = true
		}
		out = append(out, s)
	}
	if !hasGlobalSection {
		out = append(out, section{id: 6, body: append([]byte{2}, newGlobals...)})
	}
	result.code = assemble(module[:8], out)
	return result, nil
}

// instrumented is a module as instrument rewrote it.
type instrumented struct {
	code []byte
	// snapshots is set if an instance's whole state is its memory and its
	// mutable globals, which instrument exported as globals names: then a
	// snapshot of one instance can start another (see snapshot.go).
	snapshots bool
	globals   []string
}

// snapshotExport prefixes the names of the exports instrument adds for
// the module's mutable globals.
const snapshotExport = "gust.snapshot.global."

// exportGlobals appends exports of the globals to an export section, and
// returns it with their names; if the module exports a name of that form
// itself, it returns the section unchanged and false.
func exportGlobals(body []byte, globals []uint32) ([]byte, []string, bool) {
	r := &reader{b: body}
	for range r.count() {
		if strings.HasPrefix(r.name(), snapshotExport) {
			return body, nil, false
		}
		r.byte()
		r.u32()
	}
	if r.err != nil {
		return body, nil, false
	}
	names := make([]string, 0, len(globals))
	var elems []byte
	for _, g := range globals {
		name := snapshotExport + strconv.Itoa(int(g))
		names = append(names, name)
		elems = append(append(elems, leb(uint32(len(name)))...), name...)
		elems = append(append(elems, 0x03), leb(g)...)
	}
	return appendToVector(body, elems, uint32(len(globals))), names, true
}

// mutableGlobals returns the indices of the mutable globals a global
// section defines, the first numbered first; false if it holds an
// initializer it cannot read.
func mutableGlobals(body []byte, first uint32) ([]uint32, bool) {
	r := &reader{b: body}
	var mutable []uint32
	for i := range uint32(r.count()) {
		r.byte() // value type
		if r.byte() == 0x01 {
			mutable = append(mutable, first+i)
		}
		if !r.constExpr() {
			return nil, false
		}
	}
	return mutable, r.err == nil
}

// constExpr reads a constant expression, up to its end; false if it holds
// an instruction a constant expression should not.
func (r *reader) constExpr() bool {
	for r.err == nil {
		switch op := r.byte(); {
		case op == 0x0B: // end
			return true
		case r.numericConst(op):
		case op == 0x23 || op == 0xD2: // global.get, ref.func
			r.u32()
		case op == 0xD0: // ref.null
			r.byte()
		case op == 0x6A || op == 0x6B || op == 0x6C || op == 0x7C || op == 0x7D || op == 0x7E: // add, sub, mul
		default:
			return false
		}
	}
	return false
}

// assemble encodes a module from its header and sections.
func assemble(header []byte, sections []section) []byte {
	buf := append([]byte(nil), header...)
	for _, s := range sections {
		buf = append(buf, s.id)
		buf = append(buf, leb(uint32(len(s.body)))...)
		buf = append(buf, s.body...)
	}
	return buf
}

// bulkShift makes a bulk memory or table operation (fill, copy, init)
// count one loop iteration for each 64 KiB (or 8 Ki table entries) it
// moves, besides its own: a loop of a thousand fills over the whole memory
// would otherwise run for many seconds between two calls to the host.
const bulkShift = 16

type section struct {
	id   byte
	body []byte
}

// splitSections returns a module's sections, in order.
func splitSections(module []byte) ([]section, error) {
	if len(module) < 8 || !bytes.Equal(module[:4], []byte("\x00asm")) {
		return nil, errors.New("not a WebAssembly module")
	}
	var sections []section
	r := &reader{b: module, i: 8}
	for r.i < len(r.b) {
		id := r.byte()
		size := r.u32()
		if r.err != nil || r.i+int(size) > len(r.b) {
			return nil, errors.New("truncated section")
		}
		sections = append(sections, section{id: id, body: r.b[r.i : r.i+int(size)]})
		r.i += int(size)
	}
	return sections, r.err
}

// maxDataGap is the widest run of zeros mergeData fills to join two data
// segments.
const maxDataGap = 4096

// mergeData joins the active data segments of memory 0 that lie close
// together. Go's linker starts a new segment after every run of zeros, so a
// Go module has tens of thousands, and wazero's per-segment work at every
// instantiation costs milliseconds; a few hundred segments cost almost
// nothing. The memory's contents are the same. A section with a segment of
// any other kind is returned unchanged (memory.init and data.drop would see
// the indices move).
func mergeData(body []byte) []byte {
	type segment struct {
		offset int64
		data   []byte
	}
	r := &reader{b: body}
	n := r.count()
	segs := make([]segment, 0, n)
	for range n {
		if r.u32() != 0 || r.byte() != 0x41 { // active, memory 0, i32.const
			return body
		}
		offset := r.sleb32()
		if r.byte() != 0x0B {
			return body
		}
		size := int(r.u32())
		start := r.i
		r.skip(size)
		if r.err != nil || offset < 0 {
			return body
		}
		segs = append(segs, segment{offset: offset, data: r.b[start:r.i]})
	}
	if r.err != nil || r.i != len(r.b) {
		return body
	}
	// A gap may be filled with zeros only if no segment writes into it: the
	// linker may list segments out of order, and zeros written over an
	// earlier segment's bytes would erase them.
	type span struct{ start, end int64 }
	spans := make([]span, len(segs))
	for i, s := range segs {
		spans[i] = span{s.offset, s.offset + int64(len(s.data))}
	}
	slices.SortFunc(spans, func(a, b span) int { return cmp.Compare(a.start, b.start) })
	maxEnd := make([]int64, len(spans)) // maxEnd[i]: the furthest end of spans[:i+1]
	for i, sp := range spans {
		maxEnd[i] = sp.end
		if i > 0 {
			maxEnd[i] = max(maxEnd[i], maxEnd[i-1])
		}
	}
	written := func(lo, hi int64) bool { // does any segment write into [lo, hi)?
		i, _ := slices.BinarySearchFunc(spans, hi, func(sp span, t int64) int { return cmp.Compare(sp.start, t) })
		return i > 0 && maxEnd[i-1] > lo // spans[:i] start before hi
	}
	var merged []segment
	for _, s := range segs {
		if k := len(merged) - 1; k >= 0 {
			last := &merged[k]
			end := last.offset + int64(len(last.data))
			if gap := s.offset - end; gap >= 0 && gap <= maxDataGap && (gap == 0 || !written(end, s.offset)) {
				last.data = append(append(last.data, make([]byte, gap)...), s.data...)
				continue
			}
		}
		merged = append(merged, segment{offset: s.offset, data: append([]byte(nil), s.data...)})
	}
	out := leb(uint32(len(merged)))
	for _, s := range merged {
		out = append(out, 0x00, 0x41)
		out = append(out, sleb32(int32(s.offset))...)
		out = append(out, 0x0B)
		out = append(out, leb(uint32(len(s.data)))...)
		out = append(out, s.data...)
	}
	return out
}

// appendToVector adds n encoded elements to a section that is a vector.
func appendToVector(body, elems []byte, n uint32) []byte {
	r := &reader{b: body}
	count := r.u32()
	out := append(leb(count+n), body[r.i:]...)
	return append(out, elems...)
}

// checkExports refuses a module that exports a global it does not have
// (index globals or above): instrument's own would take its place.
func checkExports(body []byte, globals uint32) error {
	r := &reader{b: body}
	for range r.count() {
		r.name()
		kind, index := r.byte(), r.u32()
		if kind == 0x03 && index >= globals && r.err == nil {
			return fmt.Errorf("%w: it exports global %d, and has %d", errInvalid, index, globals)
		}
	}
	return r.err
}

const wasiModule = "wasi_snapshot_preview1"

// imports is what instrument and boundTables need of a module's imports.
type imports struct {
	globals, tables int
	yield           int // sched_yield's function index, or -1
}

// scanImports reads an import section.
func scanImports(body []byte) (imports, error) {
	r := &reader{b: body}
	n := r.count()
	funcs := 0
	imp := imports{yield: -1}
	for range n {
		mod := r.name()
		name := r.name()
		switch r.byte() {
		case 0x00: // func
			r.u32()
			if mod == wasiModule && name == "sched_yield" {
				imp.yield = funcs
			}
			funcs++
		case 0x01: // table
			r.byte()
			r.limits()
			imp.tables++
		case 0x02: // memory
			r.limits()
		case 0x03: // global
			r.byte()
			r.byte()
			imp.globals++
		default:
			return imports{}, errors.New("unknown import kind")
		}
	}
	return imp, r.err
}

// instrumenter rewrites function bodies.
type instrumenter struct {
	check   []byte // at function entries and loop heads
	bulk    []byte // before bulk operations
	globals uint32 // the module's own; the indices from here on are instrument's
	// changesTables is set by code that changes what no export shows: a
	// table, or which segments are dropped.
	changesTables bool
}

// code rewrites the code section's function bodies.
func (ins *instrumenter) code(body []byte) ([]byte, error) {
	r := &reader{b: body}
	n := r.count()
	out := leb(uint32(n))
	for range n {
		size := int(r.u32())
		if r.err != nil || r.i+size > len(r.b) {
			return nil, errors.New("truncated function body")
		}
		fn, err := ins.function(r.b[r.i : r.i+size])
		if err != nil {
			return nil, err
		}
		r.i += size
		out = append(out, leb(uint32(len(fn)))...)
		out = append(out, fn...)
	}
	return out, r.err
}

func (ins *instrumenter) function(fn []byte) ([]byte, error) {
	r := &reader{b: fn}
	for range r.count() { // local declarations
		r.u32()
		r.byte()
	}
	out := make([]byte, 0, len(fn)+len(fn)/8+len(ins.check))
	out = append(out, fn[:r.i]...)
	// At entry too: recursion (or a tail call back to itself) repeats
	// without a loop, and would otherwise never call out. A body that
	// opens a loop before it can call or branch (Go's every function: its
	// jumps are branches to one loop) has its check there.
	if !loopFirst(fn[r.i:]) {
		out = append(out, ins.check...)
	}
	for r.i < len(r.b) && r.err == nil {
		start := r.i
		op := r.byte()
		switch {
		case op == 0x03: // loop
			r.blockType()
			out = append(out, r.b[start:r.i]...)
			out = append(out, ins.check...)
			continue
		case op == 0x02 || op == 0x04: // block, if
			r.blockType()
		case op == 0x23 || op == 0x24: // global.get, global.set
			// An index past the module's own globals makes the module
			// invalid, but would name the budget in its instrumented
			// copy, and reset it for ever.
			if index := r.u32(); index >= ins.globals && r.err == nil {
				return nil, fmt.Errorf("%w: it uses global %d, and has %d", errInvalid, index, ins.globals)
			}
		case op == 0x0C || op == 0x0D || op == 0x10 || op == 0x12 || (op >= 0x20 && op <= 0x26) || op == 0xD2:
			r.u32()
			ins.changesTables = ins.changesTables || op == 0x26 // table.set
		case op == 0x0E: // br_table
			for range r.count() {
				r.u32()
			}
			r.u32()
		case op == 0x11 || op == 0x13: // call_indirect, return_call_indirect
			r.u32()
			r.u32()
		case op == 0x1C: // select with types
			for range r.count() {
				r.byte()
			}
		case op >= 0x28 && op <= 0x3E: // loads and stores
			r.u32()
			r.u32()
		case op == 0x3F || op == 0x40: // memory.size, memory.grow
			r.u32()
		case r.numericConst(op):
		case op == 0xD0: // ref.null
			r.byte()
		case op == 0xFC:
			sub, err := r.prefixFC()
			if err != nil {
				return nil, err
			}
			if bulkOp(sub) {
				out = append(out, ins.bulk...)
			}
			switch sub {
			case 8, 9, 12, 13, 14, 15, 17: // memory.init, data.drop, table.init, elem.drop, table.copy, table.grow, table.fill
				ins.changesTables = true
			}
		case op <= 0x01 || op == 0x05 || op == 0x0B || op == 0x0F || op == 0x1A || op == 0x1B || (op >= 0x45 && op <= 0xC4) || op == 0xD1:
			// no immediates
		default:
			return nil, fmt.Errorf("%w (opcode 0x%02x)", errCannotInstrument, op)
		}
		out = append(out, r.b[start:r.i]...)
	}
	if r.err != nil {
		return nil, r.err
	}
	return out, nil
}

// loopFirst reports whether code reaches a loop through nothing but
// blocks and instructions that neither call, branch nor trap: global and
// local gets and sets, and numeric constants.
func loopFirst(code []byte) bool {
	r := &reader{b: code}
	for r.i < len(r.b) && r.err == nil {
		switch op := r.byte(); {
		case op == 0x03: // loop
			return true
		case op == 0x02: // block
			r.blockType()
		case op >= 0x20 && op <= 0x24: // local and global gets and sets
			r.u32()
		case r.numericConst(op):
		default:
			return false
		}
	}
	return false
}

// numericConst reports whether op is a numeric constant (i32, i64, f32 or
// f64.const), and reads its immediate if it is. As a switch's case it
// reads only the immediate of the instruction it matches.
func (r *reader) numericConst(op byte) bool {
	switch op {
	case 0x41, 0x42:
		r.sleb()
	case 0x43:
		r.skip(4)
	case 0x44:
		r.skip(8)
	default:
		return false
	}
	return true
}

// reader decodes the parts of the binary format instrument needs.
type reader struct {
	b   []byte
	i   int
	err error
}

func (r *reader) byte() byte {
	if r.i >= len(r.b) {
		r.err = errors.New("unexpected end of module")
		return 0
	}
	c := r.b[r.i]
	r.i++
	return c
}

// count reads the length of a vector, which cannot be more than the bytes
// left: every element takes at least one. A forged length would otherwise
// have the caller loop, or allocate, for billions of elements.
func (r *reader) count() int {
	n := r.u32()
	if r.err == nil && int64(n) > int64(len(r.b)-r.i) {
		r.err = fmt.Errorf("a vector of %d elements in %d bytes", n, len(r.b)-r.i)
	}
	if r.err != nil {
		return 0
	}
	return int(n)
}

func (r *reader) name() string {
	n := int(r.u32())
	start := r.i
	r.skip(n)
	if r.err != nil {
		return ""
	}
	return string(r.b[start:r.i])
}

func (r *reader) skip(n int) {
	if n < 0 || r.i+n > len(r.b) {
		r.err = errors.New("unexpected end of module")
		r.i = len(r.b)
		return
	}
	r.i += n
}

func (r *reader) u32() uint32 {
	var v uint32
	for shift := 0; shift < 35; shift += 7 {
		c := r.byte()
		v |= uint32(c&0x7F) << shift
		if c&0x80 == 0 {
			return v
		}
	}
	r.err = errors.New("LEB128 number too long")
	return 0
}

// sleb skips a signed LEB128 number (up to 64 bits).
func (r *reader) sleb() {
	for n := 0; n < 10; n++ {
		if r.byte()&0x80 == 0 {
			return
		}
	}
	r.err = errors.New("LEB128 number too long")
}

// sleb32 reads a signed LEB128 number of up to 32 bits.
func (r *reader) sleb32() int64 {
	var v int64
	shift := 0
	for {
		c := r.byte()
		v |= int64(c&0x7F) << shift
		shift += 7
		if c&0x80 == 0 {
			if shift < 64 && c&0x40 != 0 {
				v |= -1 << shift
			}
			return v
		}
		if shift >= 35 {
			r.err = errors.New("LEB128 number too long")
			return 0
		}
	}
}

func sleb32(v int32) []byte {
	var out []byte
	for {
		c := byte(v & 0x7F)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(out, c)
		}
		out = append(out, c|0x80)
	}
}

func (r *reader) limits() {
	flags := r.byte()
	r.u32()
	if flags&1 != 0 {
		r.u32()
	}
}

func (r *reader) blockType() {
	if r.i >= len(r.b) {
		r.err = errors.New("unexpected end of module")
		return
	}
	switch c := r.b[r.i]; c {
	case 0x40, 0x7F, 0x7E, 0x7D, 0x7C, 0x7B, 0x70, 0x6F:
		r.i++
	default:
		r.sleb() // a type index, as a signed 33-bit number
	}
}

// bulkOp reports whether the 0xFC instruction sub fills, copies or
// initializes a length of memory or table given on top of the stack.
func bulkOp(sub uint32) bool {
	switch sub {
	case 8, 10, 11, 12, 14, 17: // memory.init, memory.copy, memory.fill, table.init, table.copy, table.fill
		return true
	}
	return false
}

// prefixFC reads an instruction prefixed with 0xFC, past the prefix, and
// returns its number.
func (r *reader) prefixFC() (uint32, error) {
	sub := r.u32()
	switch {
	case sub <= 7: // saturating truncations
	case sub == 8: // memory.init
		r.u32()
		r.u32()
	case sub == 9 || sub == 11 || sub == 13 || (sub >= 15 && sub <= 17): // data.drop, memory.fill, elem.drop, table.grow/size/fill
		r.u32()
	case sub == 10 || sub == 12 || sub == 14: // memory.copy, table.init, table.copy
		r.u32()
		r.u32()
	default:
		return 0, fmt.Errorf("%w (0xFC %d)", errCannotInstrument, sub)
	}
	return sub, r.err
}

func leb(v uint32) []byte {
	var out []byte
	for {
		c := byte(v & 0x7F)
		v >>= 7
		if v != 0 {
			c |= 0x80
		}
		out = append(out, c)
		if v == 0 {
			return out
		}
	}
}
