package wasm

import (
	"slices"
	"syscall"
	"testing"
)

// TestSpareMappingsAreCleared: a closed instance's memory goes to the next
// instance of the same limit, with every byte the first one could touch
// cleared; the budget bounds what the spares hold.
func TestSpareMappingsAreCleared(t *testing.T) {
	const limit = 3 << 20
	spares := newMappingSpares(sparesBudget)
	first := &limitedMemory{limit: limit, spares: spares}
	first.Allocate(0, 0)
	if first.mapping == nil {
		t.Skip("anonymous mappings are not available here")
	}
	used := first.Reallocate(1 << 20)
	for i := range used {
		used[i] = 0xAB
	}
	start := &first.mapping[0]
	first.Free()

	second := &limitedMemory{limit: limit, spares: spares}
	second.Allocate(0, 0)
	if second.mapping == nil || &second.mapping[0] != start {
		t.Fatal("the second instance did not get the first one's mapping")
	}
	if len(second.buf) != 0 || len(second.mapping) != cap(second.mapping) {
		t.Fatalf("the spare came back with length %d of %d, want an empty memory over the whole reservation", len(second.buf), cap(second.mapping))
	}
	all := second.Reallocate(limit)
	if i := slices.IndexFunc(all, func(b byte) bool { return b != 0 }); i >= 0 {
		t.Fatalf("byte %d of the reused memory is %#x: the first instance's data reached the second", i, all[i])
	}
	if second.Reallocate(limit+1) != nil || !second.refused {
		t.Error("the reused memory grew past its limit")
	}
	second.Free()
	// Taken again, and not handed out twice.
	m := spares.take(uint64(cap(all)))
	if m == nil {
		t.Fatal("a freed mapping was not kept")
	} else if again := spares.take(uint64(cap(all))); again != nil {
		t.Error("one mapping was handed out twice")
	}
	// Once the runtime closes, the spares keep nothing: what its runtimes
	// free then may still be written by a guest that was not waited for.
	if !spares.put(m, 1) {
		t.Fatal("the spares refused a mapping")
	}
	spares.close()
	if spares.held != 0 || spares.take(uint64(cap(m))) != nil {
		t.Error("closed spares still hold a mapping")
	}
	third := &limitedMemory{limit: limit, spares: spares}
	third.Allocate(0, 0)
	third.Reallocate(64 << 10)
	if spares.put(third.mapping, len(third.buf)) {
		t.Error("closed spares took a mapping")
	}
	syscall.Munmap(third.mapping)

	// A memory past what is worth clearing is not kept.
	big := newMappingSpares(sparesBudget)
	huge := &limitedMemory{limit: clearAtMost + 1<<20, spares: big}
	huge.Allocate(0, 0)
	huge.Reallocate(clearAtMost + 64<<10)
	huge.Free()
	if big.held != 0 {
		t.Errorf("a memory of %d bytes was kept, more than the %d worth clearing", clearAtMost+64<<10, clearAtMost)
	}
}

// TestSpareMappingsBudget: the spares hold at most their budget of touched
// pages, and a mapping of another size makes room by unmapping those of the
// sizes it does not need.
func TestSpareMappingsBudget(t *testing.T) {
	mmap := func(n int) []byte {
		m, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
		if err != nil {
			t.Skip("anonymous mappings are not available here:", err)
		}
		return m
	}
	s := newMappingSpares(1 << 20)
	a, b, c := mmap(2<<20), mmap(2<<20), mmap(4<<20)
	if !s.put(a, 1<<20) {
		t.Fatal("a budget of 1 MiB refused a mapping with 1 MiB touched")
	}
	if s.put(b, 1) {
		t.Error("a full budget took a second mapping of the same size")
	}
	syscall.Munmap(b)
	if !s.put(c, 1<<20) {
		t.Fatal("a mapping of another size did not make room by unmapping the spare it does not need")
	}
	if s.take(2<<20) != nil || s.take(4<<20) == nil || s.held != 0 {
		t.Errorf("after the eviction: want only the 4 MiB mapping kept, and nothing held once it is taken (held %d)", s.held)
	}
	// A mapping that cannot fit even alone evicts nothing.
	d := mmap(2 << 20)
	if !s.put(d, 1<<20) || s.put(c, 1<<20+1) || s.take(2<<20) == nil {
		t.Error("a mapping over the whole budget evicted the spares of another size")
	}
	syscall.Munmap(c)
	syscall.Munmap(d)
}
