//go:build linux

package initproc

import "golang.org/x/sys/unix"

const (
	auditArch      = unix.AUDIT_ARCH_X86_64
	archSyscallBit = 0x40000000 // __X32_SYSCALL_BIT
)

var deniedArch = []uintptr{unix.SYS_IOPL, unix.SYS_IOPERM, unix.SYS_USELIB, unix.SYS_CREATE_MODULE, unix.SYS_INOTIFY_INIT}
