package wasm

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// adviseHugePages asks for transparent huge pages behind an instance's
// memory. Code compiled from Go keeps its stack and heap there: with 2 MiB
// pages a cold start faults a few pages in instead of hundreds (measured:
// 1.9 ms instead of 3.7 ms for the SDK hello function) and warm requests
// miss the TLB less. Where the kernel refuses, the memory stays as it was.
func adviseHugePages(m []byte) { unix.Madvise(m, unix.MADV_HUGEPAGE) }

// collapsing coalesces collapseCodeSoon's calls: one pass at a time, and
// one more after it for every module compiled while it ran.
var collapsing struct {
	sync.Mutex
	running, again bool
}

// collapseCodeSoon runs collapseCode in the background, once for all the
// calls that come while a pass runs: modules compiled together at start
// cost one or two passes, not one each.
func collapseCodeSoon() {
	collapsing.Lock()
	defer collapsing.Unlock()
	if collapsing.running {
		collapsing.again = true
		return
	}
	collapsing.running = true
	go func() {
		for {
			collapseCode()
			collapsing.Lock()
			again := collapsing.again
			collapsing.running, collapsing.again = again, false
			collapsing.Unlock()
			if !again {
				return
			}
		}
	}()
}

// collapseCode moves the machine code that wazero compiled onto huge pages,
// where the kernel can (Linux 6.1 and later: MADV_COLLAPSE). A module
// compiled from Go is some 20 MiB of code, and a request runs through
// code spread across all of it: on 4 KiB pages it misses the TLB all the
// way (measured: 2% of a warm request's CPU for the SDK hello function).
//
// wazero does not say where its code is, so every anonymous executable
// mapping of the process is collapsed, in its whole 2 MiB pages (the
// huge page of x86-64, and of arm64 with 4 KiB pages; elsewhere the
// kernel refuses and nothing changes): Gust makes no executable memory
// but wazero's. A mapping already collapsed costs the kernel little. One
// unmapped after the list was read, whose range something else took
// meanwhile, is collapsed as that: harmless, if it may bring back memory
// the Go runtime had returned.
func collapseCode() {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "start-end perms offset dev inode [path]": an anonymous mapping has
		// no path.
		fields := strings.Fields(sc.Text())
		if len(fields) != 5 || fields[1] != "r-xp" {
			continue
		}
		lo, hi, _ := strings.Cut(fields[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 == nil && err2 == nil {
			collapse(uintptr(start), uintptr(end))
		}
	}
}

// collapse puts the whole 2 MiB pages of [start, end) on huge pages.
func collapse(start, end uintptr) error {
	const huge = 2 << 20
	start, end = (start+huge-1)&^(huge-1), end&^(huge-1)
	if end <= start {
		return nil
	}
	unix.Syscall(unix.SYS_MADVISE, start, end-start, unix.MADV_HUGEPAGE)
	if _, _, errno := unix.Syscall(unix.SYS_MADVISE, start, end-start, unix.MADV_COLLAPSE); errno != 0 {
		return errno
	}
	return nil
}
