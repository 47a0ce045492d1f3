//go:build linux

package initproc

import "golang.org/x/sys/unix"

const (
	auditArch      = unix.AUDIT_ARCH_AARCH64
	archSyscallBit = 0
)

var deniedArch []uintptr
