//go:build linux && !amd64 && !arm64

package initproc

const (
	auditArch      = 0 // no filter: the runtime reports itself unavailable
	archSyscallBit = 0
)

var deniedArch []uintptr
