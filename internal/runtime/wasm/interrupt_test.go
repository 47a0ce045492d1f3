package wasm

import (
	"bytes"
	"math/rand/v2"
	"testing"
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
