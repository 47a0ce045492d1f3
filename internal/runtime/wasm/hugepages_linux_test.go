package wasm

import (
	"bufio"
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gust-faas/gust/internal/runtime/wasm/wasmtest"
)

// TestCompiledCodeOnHugePages: once a module is compiled, its machine code
// (an anonymous executable mapping of wazero's) is on huge pages, where
// the kernel collapses them.
func TestCompiledCodeOnHugePages(t *testing.T) {
	if _, err := newRuntime(t).Compile(context.Background(), "", wasmtest.MustRead(wasmtest.Hello)); err != nil {
		t.Fatal(err)
	}
	collapseCode() // Compile's own pass runs in the background
	huge, err := hugeCodeKiB()
	if err != nil {
		t.Fatal(err)
	}
	if huge == 0 {
		// Whether the kernel collapses anonymous memory at all:
		probe, err := unix.Mmap(-1, 0, 6<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Munmap(probe)
		for i := range probe {
			probe[i] = 1
		}
		start := uintptr(unsafe.Pointer(&probe[0]))
		if err := collapse(start, start+uintptr(len(probe))); err != nil {
			t.Skipf("the kernel collapses no memory into huge pages here: %v", err)
		}
		t.Fatal("no executable mapping is on huge pages after Compile, though the kernel collapses anonymous memory")
	}
}

// hugeCodeKiB sums AnonHugePages over the process's anonymous executable
// mappings.
func hugeCodeKiB() (int, error) {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	total, code := 0, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":"):
			code = len(fields) == 5 && fields[1] == "r-xp"
		case code && fields[0] == "AnonHugePages:":
			n, _ := strconv.Atoi(fields[1])
			total += n
		}
	}
	return total, sc.Err()
}
