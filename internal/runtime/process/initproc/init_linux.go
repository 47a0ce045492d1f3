// Package initproc is the first process of a process sandbox: the Gust
// binary executed again (as Arg) inside new namespaces. It builds the
// sandbox's root, waits for the host's word, drops to an unprivileged user
// under a seccomp filter and executes the function's program.
package initproc

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Arg is argv[0] of the sandbox's first process: the Gust binary,
// executed again inside the new namespaces, which builds the root and then
// executes the function's program.
const Arg = "gust-sandbox-init"

// File descriptors of the init process. It starts with the first two
// (ExtraFiles 0 and 1) and placeholders at the others, which the first
// message on fdControl replaces, so that an init started before anyone
// needs it (a spare) can become any function's sandbox.
const (
	fdControl = 3 // a unix socket: the other descriptors, the Config, then the Exec
	fdStatus  = 4 // writes 'R' when ready, or 'E' and why it failed
	fdBundle  = 5 // the bundle as a detached mount, moved to /var/task
	fdPass    = 6 // Serve: a unix socket bringing each request's stdin, stdout and stderr
)

// Identity of the function's program inside the sandbox.
const (
	sandboxUID = 1000
	sandboxGID = 1000
)

// Config is what the init process needs to build the sandbox.
type Config struct {
	Command  []string `json:"command"`
	Env      []string `json:"env"`
	TmpBytes int64    `json:"tmp_bytes"`
	// HostNetwork keeps the host's network (no network namespace).
	HostNetwork bool `json:"host_network"`
	// ProbeOnly stops after building the sandbox.
	ProbeOnly bool `json:"probe_only,omitempty"`
	// Serve keeps the init up, running the program once per Request,
	// instead of executing it once in its place.
	Serve bool `json:"serve,omitempty"`
}

// Exec starts the program, with Env added to the config's.
type Exec struct {
	Env []string `json:"env"`
}

// init makes every binary that links this package, gust and the test
// binaries alike, able to be a sandbox's init process: run as Arg, it never
// returns to main. This package imports little, so that its init runs early
// among the binary's: a sandbox's start waits for it.
func init() {
	if len(os.Args) > 0 && os.Args[0] == Arg {
		runInit()
	}
}

// runInit builds the sandbox, waits for the host's word, and executes the
// program. It never returns.
func runInit() {
	goruntime.LockOSThread() // no_new_privs and seccomp are per thread: exec from this one
	// The root's folders and the program's files get the modes they are
	// made with, whatever umask the server runs under (under 077, /var was
	// 0700 and the program's user could not reach /var/task).
	unix.Umask(0o022)
	// Whatever the server inherited and did not mark close-on-exec stops
	// here, short of the program.
	unix.CloseRange(fdBundle, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	status := os.NewFile(fdStatus, "status")
	fail := func(err error) {
		fmt.Fprintf(status, "E%v", err)
		os.Exit(127)
	}
	// What every sandbox's root holds is built before the sandbox is
	// known: a spare init has it ready when a cold start takes it.
	if err := prepareRoot(); err != nil {
		fail(err)
	}
	if err := receiveSandboxFDs(); err != nil {
		fail(fmt.Errorf("receiving the sandbox's bundle: %w", err))
	}
	control := os.NewFile(fdControl, "control")
	dec := json.NewDecoder(control)
	var cfg Config
	if err := dec.Decode(&cfg); err != nil {
		fail(fmt.Errorf("reading the sandbox's configuration: %w", err))
	}
	// The host has put this process in the sandbox's cgroup: from here on
	// that cgroup is its root, and the host's cgroup paths stay hidden.
	if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
		fail(fmt.Errorf("a cgroup namespace: %w", err))
	}
	if err := finishRoot(cfg); err != nil {
		fail(err)
	}
	if cfg.Serve {
		if err := dropPrivileges(); err != nil {
			fail(err)
		}
	}
	if _, err := status.Write([]byte{'R'}); err != nil {
		os.Exit(127)
	}
	if cfg.ProbeOnly {
		os.Exit(0)
	}
	if cfg.Serve {
		serve(cfg, dec, status)
	}
	var msg Exec
	if err := dec.Decode(&msg); err != nil {
		os.Exit(127) // the host gave up on this sandbox
	}
	control.Close()
	fail(execProgram(cfg, msg))
}

// receiveSandboxFDs receives the bundle's mount and, for Serve, the
// socket of the requests' streams, and puts them at fdBundle and fdPass.
func receiveSandboxFDs() error {
	fds, err := receiveFDs(fdControl, 1, 2)
	if err != nil {
		return err
	}
	for i, fd := range fds {
		// Over the host's placeholder.
		if err := unix.Dup3(fd, []int{fdBundle, fdPass}[i], unix.O_CLOEXEC); err != nil {
			return err
		}
		unix.Close(fd)
	}
	return nil
}

// SystemDirs are the host's folders bound read-only into the sandbox;
// those that are symbolic links on the host (a merged /usr) are copied as
// links.
var SystemDirs = []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/alternatives", "/etc/ssl", "/etc/ca-certificates"}

// etcFiles are copied from the host's /etc when they exist.
var etcFiles = []string{"ld.so.cache", "ld.so.conf", "nsswitch.conf", "localtime", "mime.types"}

// devices are bound from the host's /dev.
var devices = []string{"null", "zero", "full", "random", "urandom"}

const newRoot = "/tmp" // every sandbox mounts its own tmpfs here, in its own mount namespace

// prepareRoot builds what every sandbox's root holds, in a tmpfs at
// newRoot: the host's system folders, /etc, /proc and /dev.
func prepareRoot() error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making the mounts private: %w", err)
	}
	if err := unix.Mount("tmpfs", newRoot, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=4m,mode=755"); err != nil {
		return fmt.Errorf("mounting the root: %w", err)
	}
	for _, d := range SystemDirs {
		if err := bindSystem(d); err != nil {
			return err
		}
	}
	if err := writeEtc(); err != nil {
		return err
	}
	proc := filepath.Join(newRoot, "proc")
	if err := os.Mkdir(proc, 0o555); err != nil {
		return err
	}
	if err := unix.Mount("proc", proc, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mounting /proc: %w", err)
	}
	if err := makeDev(); err != nil {
		return err
	}
	if err := unix.Sethostname([]byte("sandbox")); err != nil {
		return fmt.Errorf("setting the hostname: %w", err)
	}
	return nil
}

// finishRoot adds the sandbox's own parts to the root prepareRoot built
// (the bundle at /var/task, /tmp, the network) and pivots into it.
func finishRoot(cfg Config) error {
	if cfg.HostNetwork {
		if err := copyResolvConf(); err != nil {
			return err
		}
	}
	task := filepath.Join(newRoot, "var/task")
	if err := os.MkdirAll(task, 0o755); err != nil {
		return err
	}
	// The host made the bundle a detached read-only mount: the sandbox's
	// root could not reach its folder by path.
	if err := unix.MoveMount(fdBundle, "", unix.AT_FDCWD, task, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("mounting the bundle: %w", err)
	}
	unix.Close(fdBundle)
	tmp := filepath.Join(newRoot, "tmp")
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", tmp, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, fmt.Sprintf("size=%d,mode=1777", cfg.TmpBytes)); err != nil {
		return fmt.Errorf("mounting /tmp: %w", err)
	}
	if !cfg.HostNetwork {
		if err := loopbackUp(); err != nil {
			return fmt.Errorf("bringing up the loopback: %w", err)
		}
	}
	old := filepath.Join(newRoot, ".old")
	if err := os.Mkdir(old, 0o700); err != nil {
		return err
	}
	if err := unix.PivotRoot(newRoot, old); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	if err := unix.Unmount("/.old", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detaching the host's root: %w", err)
	}
	if err := os.Remove("/.old"); err != nil {
		return err
	}
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("making the root read-only: %w", err)
	}
	return nil
}

// bindSystem copies the host's path into the new root: a link as a link, a
// folder as a read-only bind mount. A path the host lacks is skipped.
func bindSystem(p string) error {
	fi, err := os.Lstat(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	dst := filepath.Join(newRoot, p)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		return os.Symlink(target, dst)
	}
	if !fi.IsDir() {
		return nil
	}
	if err := os.Mkdir(dst, 0o755); err != nil {
		return err
	}
	if err := bindReadOnly(p, dst); err != nil {
		return fmt.Errorf("binding %s: %w", p, err)
	}
	return nil
}

// bindReadOnly binds src at dst, read-only, without setuid or devices. A
// remount inside a user namespace must keep the flags the kernel locked
// on the source mount, so they are read and kept.
func bindReadOnly(src, dst string) error {
	if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dst, &st); err != nil {
		return err
	}
	flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV)
	for _, f := range [][2]uintptr{
		{unix.ST_NOEXEC, unix.MS_NOEXEC}, {unix.ST_NOATIME, unix.MS_NOATIME},
		{unix.ST_NODIRATIME, unix.MS_NODIRATIME}, {unix.ST_RELATIME, unix.MS_RELATIME},
	} {
		if uintptr(st.Flags)&f[0] != 0 {
			flags |= f[1]
		}
	}
	return unix.Mount("", dst, "", flags, "")
}

// writeEtc makes /etc: the sandbox's own passwd, group, hosts and
// hostname, and a few harmless files copied from the host.
func writeEtc() error {
	etc := filepath.Join(newRoot, "etc")
	if err := os.MkdirAll(etc, 0o755); err != nil {
		return err
	}
	files := map[string]string{
		"passwd":   fmt.Sprintf("root:x:0:0:root:/:/usr/sbin/nologin\nsandbox:x:%d:%d:sandbox:/tmp:/usr/sbin/nologin\n", sandboxUID, sandboxGID),
		"group":    fmt.Sprintf("root:x:0:\nsandbox:x:%d:\n", sandboxGID),
		"hosts":    "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost sandbox\n",
		"hostname": "sandbox\n",
	}
	for _, name := range etcFiles {
		p := filepath.Join("/etc", name)
		// A link is kept as a link where its target is in the sandbox
		// (localtime).
		if fi, err := os.Lstat(p); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			if target, err := os.Readlink(p); err == nil {
				os.Symlink(target, filepath.Join(etc, name))
			}
			continue
		}
		if b, err := os.ReadFile(p); err == nil && len(b) < 1<<20 {
			files[name] = string(b)
		}
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(etc, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// copyResolvConf copies the host's resolv.conf, for a sandbox with the
// host's network. It often points into /run, which the sandbox lacks: the
// file is copied, not linked.
func copyResolvConf() error {
	b, err := os.ReadFile("/etc/resolv.conf")
	if err != nil || len(b) >= 1<<20 {
		return nil // as a host without one: no name resolution
	}
	return os.WriteFile(filepath.Join(newRoot, "etc/resolv.conf"), b, 0o644)
}

// makeDev makes a minimal /dev: a few devices bound from the host, the
// standard links, and /dev/shm.
func makeDev() error {
	dev := filepath.Join(newRoot, "dev")
	if err := os.Mkdir(dev, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "size=64k,mode=755"); err != nil {
		return fmt.Errorf("mounting /dev: %w", err)
	}
	for _, d := range devices {
		dst := filepath.Join(dev, d)
		if err := os.WriteFile(dst, nil, 0o666); err != nil {
			return err
		}
		if err := unix.Mount("/dev/"+d, dst, "", unix.MS_BIND, ""); err != nil {
			os.Remove(dst) // a host without it: the sandbox goes without too
		}
	}
	for name, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"} {
		if err := os.Symlink(target, filepath.Join(dev, name)); err != nil {
			return err
		}
	}
	shm := filepath.Join(dev, "shm")
	if err := os.Mkdir(shm, 0o755); err != nil {
		return err
	}
	// Shared memory is charged to the sandbox's memory limit, like /tmp.
	if err := unix.Mount("tmpfs", shm, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=64m,mode=1777"); err != nil {
		return fmt.Errorf("mounting /dev/shm: %w", err)
	}
	return nil
}

// loopbackUp brings up lo, the only interface of a new network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// maxOpenFiles is how many files the program may have open at once, as
// on AWS Lambda, rather than the server's own limit: thousands of sockets
// could hold gigabytes of buffers.
const maxOpenFiles = 1024

// setResourceLimits sets the limits the program inherits: no core dumps,
// and maxOpenFiles.
func setResourceLimits() error {
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{}); err != nil {
		return err
	}
	return unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: maxOpenFiles, Max: maxOpenFiles})
}

// execProgram drops to the sandbox's user, installs the seccomp filter
// and executes the function's program in /var/task. It returns only on
// failure.
func execProgram(cfg Config, msg Exec) error {
	env := append(cfg.Env, msg.Env...)
	if err := unix.Chdir("/var/task"); err != nil {
		return err
	}
	path, err := lookPath(cfg.Command[0], env)
	if err != nil {
		return err
	}
	if err := setResourceLimits(); err != nil {
		return err
	}
	if err := unix.Setgroups(nil); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	// Raw calls: this thread alone must change, and execve follows at once.
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, sandboxGID, sandboxGID, sandboxGID); e != 0 {
		return fmt.Errorf("setresgid: %w", e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, sandboxUID, sandboxUID, sandboxUID); e != 0 {
		return fmt.Errorf("setresuid: %w", e)
	}
	if err := keepParentDeathSignal(); err != nil {
		return err
	}
	if err := installSeccomp(false); err != nil {
		return fmt.Errorf("seccomp: %w", err)
	}
	unix.CloseOnExec(fdStatus) // closed by a successful exec: the host reads EOF
	argv, err := syscall.SlicePtrFromStrings(cfg.Command)
	if err != nil {
		return err
	}
	envv, err := syscall.SlicePtrFromStrings(env)
	if err != nil {
		return err
	}
	p, err := syscall.BytePtrFromString(path)
	if err != nil {
		return err
	}
	_, _, e := unix.RawSyscall(unix.SYS_EXECVE, uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(&argv[0])), uintptr(unsafe.Pointer(&envv[0])))
	return fmt.Errorf("cannot execute %s: %w", cfg.Command[0], e)
}

// keepParentDeathSignal sets again the SIGKILL on the server's death that
// a change of uid cleared, on this thread (the one that execs or serves).
func keepParentDeathSignal() error {
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_PDEATHSIG): %w", err)
	}
	return nil
}

// lookPath finds name as the sandbox's PATH says; a name with a slash is
// taken as it is, relative to /var/task.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	path := "/usr/local/bin:/usr/bin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for dir := range strings.SplitSeq(path, ":") {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("command %q is not found in the sandbox's PATH (%s)", name, path)
}
