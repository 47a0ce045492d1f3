package initproc

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// deniedSyscalls are the system calls a function never needs: they change
// the machine, the mounts or the namespaces, load code into the kernel, or
// reach into other processes. They fail with EPERM. deniedArch adds the
// ones only some architectures have.
var deniedSyscalls = append([]uintptr{
	unix.SYS_MOUNT, unix.SYS_UMOUNT2, unix.SYS_PIVOT_ROOT, unix.SYS_CHROOT,
	unix.SYS_FSOPEN, unix.SYS_FSCONFIG, unix.SYS_FSMOUNT, unix.SYS_FSPICK,
	unix.SYS_MOVE_MOUNT, unix.SYS_OPEN_TREE, unix.SYS_MOUNT_SETATTR,
	unix.SYS_UNSHARE, unix.SYS_SETNS,
	unix.SYS_PTRACE, unix.SYS_PROCESS_VM_READV, unix.SYS_PROCESS_VM_WRITEV, unix.SYS_KCMP,
	unix.SYS_KEXEC_LOAD, unix.SYS_KEXEC_FILE_LOAD, unix.SYS_REBOOT,
	unix.SYS_INIT_MODULE, unix.SYS_FINIT_MODULE, unix.SYS_DELETE_MODULE,
	unix.SYS_BPF, unix.SYS_PERF_EVENT_OPEN, unix.SYS_USERFAULTFD,
	unix.SYS_KEYCTL, unix.SYS_ADD_KEY, unix.SYS_REQUEST_KEY,
	unix.SYS_SWAPON, unix.SYS_SWAPOFF, unix.SYS_SYSLOG, unix.SYS_ACCT, unix.SYS_QUOTACTL,
	unix.SYS_SETTIMEOFDAY, unix.SYS_CLOCK_SETTIME, unix.SYS_CLOCK_ADJTIME, unix.SYS_ADJTIMEX,
	unix.SYS_OPEN_BY_HANDLE_AT, unix.SYS_NAME_TO_HANDLE_AT, unix.SYS_LOOKUP_DCOOKIE,
	unix.SYS_VHANGUP, unix.SYS_NFSSERVCTL, unix.SYS_PIDFD_GETFD,
	// A large attack surface of the kernel's, which Docker refuses too.
	unix.SYS_IO_URING_SETUP, unix.SYS_IO_URING_ENTER, unix.SYS_IO_URING_REGISTER,
	// Their limits count against the host's root, for every sandbox at once.
	unix.SYS_INOTIFY_INIT1, unix.SYS_FANOTIFY_INIT,
}, deniedArch...)

// cloneNewFlags are clone's flags that make namespaces.
const cloneNewFlags = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWUSER |
	unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP | unix.CLONE_NEWTIME

// socketFamilies are the address families a function may open sockets of.
// Others fail with EAFNOSUPPORT: vsock above all, which no network
// namespace confines (a function would reach the hypervisor, or listen
// where the host's own vsock services do), and the rarely used protocols
// whose modules a socket call would load.
var socketFamilies = []uint32{unix.AF_UNIX, unix.AF_INET, unix.AF_INET6, unix.AF_NETLINK}

// seccompFilter is the BPF program: a foreign architecture is killed; a
// denied call fails with EPERM; a socket of a family not in socketFamilies
// fails with EAFNOSUPPORT; clone with a namespace flag fails with EPERM;
// clone3, whose flags a filter cannot read, fails with ENOSYS, so that the
// C library falls back to clone; everything else is allowed.
func seccompFilter() []unix.SockFilter {
	const (
		offNr   = 0
		offArch = 4
		offArg0 = 16 // the low 32 bits of args[0], little-endian
	)
	ret := func(v uint32) unix.SockFilter { return unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: v} }
	load := func(off uint32) unix.SockFilter {
		return unix.SockFilter{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: off}
	}
	// jeq skips t instructions when A == k, else f.
	jeq := func(k uint32, t, f uint8) unix.SockFilter {
		return unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: k, Jt: t, Jf: f}
	}
	var (
		allow = ret(unix.SECCOMP_RET_ALLOW)
		eperm = ret(unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM))
	)
	prog := []unix.SockFilter{
		load(offArch),
		jeq(auditArch, 1, 0),
		ret(unix.SECCOMP_RET_KILL_PROCESS),
		load(offNr),
	}
	if archSyscallBit != 0 {
		// x32 calls on amd64 carry this bit: refuse them all.
		prog = append(prog,
			unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K, K: archSyscallBit, Jt: 0, Jf: 1},
			eperm)
	}
	for _, nr := range deniedSyscalls {
		prog = append(prog, jeq(uint32(nr), 0, 1), eperm)
	}
	prog = append(prog,
		jeq(unix.SYS_CLONE3, 0, 1),
		ret(unix.SECCOMP_RET_ERRNO|uint32(unix.ENOSYS)),
		// socket: past its checks of the family, to allow or refuse.
		jeq(unix.SYS_SOCKET, 0, uint8(len(socketFamilies)+3)),
		load(offArg0),
	)
	for i, family := range socketFamilies {
		prog = append(prog, jeq(family, uint8(len(socketFamilies)-i), 0)) // to allow
	}
	prog = append(prog,
		ret(unix.SECCOMP_RET_ERRNO|uint32(unix.EAFNOSUPPORT)),
		allow,
		jeq(unix.SYS_CLONE, 1, 0),
		allow,
		load(offArg0),
		unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K, K: cloneNewFlags, Jt: 0, Jf: 1},
		eperm,
		allow,
	)
	return prog
}

// installSeccomp sets no_new_privs and the filter on the calling thread,
// which must be locked (the program execs from it), and with allThreads on
// every thread of the process too (whichever forks the program).
func installSeccomp(allThreads bool) error {
	if auditArch == 0 {
		return errors.New("no seccomp filter is defined for this architecture")
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return err
	}
	filter := seccompFilter()
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	var flags uintptr
	if allThreads {
		flags = unix.SECCOMP_FILTER_FLAG_TSYNC // which sets no_new_privs on them too
	}
	if r, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(unsafe.Pointer(&prog))); e != 0 {
		return e
	} else if r != 0 {
		return fmt.Errorf("thread %d could not take the filter", r)
	}
	return nil
}

// SeccompDefined reports whether a filter is defined for this architecture.
func SeccompDefined() bool { return auditArch != 0 }
