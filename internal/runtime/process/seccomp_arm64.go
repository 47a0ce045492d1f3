//go:build linux

package process

import "golang.org/x/sys/unix"

const (
	auditArch      = unix.AUDIT_ARCH_AARCH64
	archSyscallBit = 0
)

var deniedArch []uintptr
