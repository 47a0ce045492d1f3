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
	const limit = 3<<20 + 64<<10 // a size no other test uses, so the spare is this test's
	first := &limitedMemory{limit: limit}
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

	second := &limitedMemory{limit: limit}
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
	if m := spares.take(uint64(cap(all))); m == nil {
		t.Error("a freed mapping was not kept")
	} else if again := spares.take(uint64(cap(all))); again != nil {
		t.Error("one mapping was handed out twice")
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
	s := &mappingSpares{budget: 1 << 20, byReserve: map[uint64][][]byte{}}
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
	syscall.Munmap(c)
}
