package process

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gust-faas/gust/internal/bundle"
	"github.com/gust-faas/gust/internal/runtime"
	"github.com/gust-faas/gust/internal/runtime/process/initproc"
)

// Sandbox limits that the spec does not set.
const (
	maxPids = 128
	// cpuPerGiB is the CPU quota per GiB of memory, as Lambda's share
	// (one core at 1769 MB) rounded; minCPU is the least any sandbox gets,
	// so that an interpreter starts in reasonable time.
	cpuPerGiB = 1.0
	minCPU    = 0.5
	// maxTmpBytes caps /tmp, which is charged to the memory limit too.
	maxTmpBytes = 512 << 20
	// A sandbox's ids map to idMapSize host ids from idMapBase plus a
	// multiple of idMapSize, one of idMapSlots, taken in turn: sandboxes
	// seldom share a host uid, and with it the kernel's per-user counts.
	// They belong to no host user.
	idMapBase  = 0x70000000
	idMapSize  = 65536
	idMapSlots = 4096
)

// Config configures the process runtime.
type Config struct {
	// Dir holds the unpacked bundles; the runtime owns it.
	Dir string
	// AllowHostNetwork lets functions run with network: host, which gives
	// them the host's network: Gust itself, the host's services, and other
	// functions with it. It is the operator's to allow, not a tenant's.
	AllowHostNetwork bool
}

// Runtime is the process sandbox. It implements runtime.Sandbox.
type Runtime struct {
	dir       string
	hostNetOK bool
	cgroups   *cgroups
	cores     float64
	seq       atomic.Uint64
	spares    *spares
	starting  atomic.Int32 // cold starts running

	// bundles counts the prepared artifacts using each unpacked folder:
	// two versions of one bundle share it, and the last to close removes it.
	bundlesMu sync.Mutex
	bundles   map[string]int
}

// New checks that this kernel and this process can make sandboxes, by
// making one, and returns the runtime, or an error that says why not.
func New(ctx context.Context, cfg Config) (*Runtime, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the server does not run as root, which making namespaces and cgroups needs")
	}
	if !initproc.SeccompDefined() {
		return nil, errors.New("no seccomp filter is defined for this architecture")
	}
	cg, err := openCgroups()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, err
	}
	r := &Runtime{dir: cfg.Dir, hostNetOK: cfg.AllowHostNetwork, cgroups: cg, cores: float64(goruntime.NumCPU()), bundles: map[string]int{}}
	r.spares = newSpares(func() (*initProc, error) { return r.spawn(false) }, func() bool { return r.starting.Load() > 0 })
	r.sweep()
	if err := r.probe(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// Close stops the init processes kept for the next cold starts. Instances
// are closed by their owners.
func (r *Runtime) Close() {
	r.spares.close()
	r.cgroups.close()
}

// sweep removes what a server that stopped abruptly left: unpacked
// bundles (each is unpacked again when first needed), and the empty
// cgroups of servers that are gone.
func (r *Runtime) sweep() {
	leftovers, _ := os.ReadDir(r.dir)
	for _, e := range leftovers {
		os.RemoveAll(filepath.Join(r.dir, e.Name()))
	}
	r.cgroups.sweep()
}

// probe builds a sandbox and stops it before any program runs.
func (r *Runtime) probe(ctx context.Context) error {
	empty, err := os.MkdirTemp(r.dir, "probe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(empty)
	os.Chmod(empty, 0o755)
	sb, err := r.start(ctx, empty, runtime.Config{Limits: runtime.Limits{MemoryBytes: 64 << 20}, Process: runtime.Process{Command: []string{"true"}}}, startOptions{probe: true})
	if err != nil {
		return fmt.Errorf("a test sandbox failed: %w", err)
	}
	sb.wait()
	sb.close()
	return nil
}

// Prepare unpacks a bundle once per node: a restart finds it unpacked.
// The node's spare inits start with its first bundle, ahead of its first
// cold start.
func (r *Runtime) Prepare(ctx context.Context, digest string, artifact []byte) (runtime.Prepared, error) {
	dir := filepath.Join(r.dir, strings.ReplaceAll(digest, ":", "-"))
	r.bundlesMu.Lock()
	r.bundles[dir]++ // before it looks: a Close now leaves the folder alone
	r.bundlesMu.Unlock()
	p := &prepared{r: r, dir: dir, shared: map[string][]*httpSandbox{}}
	if err := r.unpack(dir, artifact); err != nil {
		p.Close(ctx)
		return nil, err
	}
	r.spares.begin()
	return p, nil
}

// unpack unpacks artifact into dir, unless it is there.
func (r *Runtime) unpack(dir string, artifact []byte) error {
	if _, err := os.Stat(dir); err != nil {
		tmp, err := os.MkdirTemp(r.dir, "unpack-")
		if err != nil {
			return err
		}
		if err := bundle.Unpack(artifact, tmp, bundle.DefaultLimits); err != nil {
			os.RemoveAll(tmp)
			var be *bundle.Error
			if errors.As(err, &be) {
				return &runtime.Error{Kind: runtime.BadArtifact, Message: be.Error()}
			}
			return err
		}
		if err := os.Chmod(tmp, 0o755); err != nil {
			os.RemoveAll(tmp)
			return err
		}
		if err := os.Rename(tmp, dir); err != nil {
			os.RemoveAll(tmp)
			if !errors.Is(err, os.ErrExist) {
				return err
			}
		}
	}
	return nil
}

// prepared is an unpacked bundle.
type prepared struct {
	r      *Runtime
	dir    string
	closed sync.Once

	mu     sync.Mutex
	shared map[string][]*httpSandbox // running http programs, by sandboxKey
}

// Check makes sure the command can be found: a path in the bundle, or a
// program in the sandbox's PATH on this host.
func (p *prepared) Check(cfg runtime.Config) error {
	cmd := cfg.Process.Command
	if len(cmd) == 0 {
		return runtime.Errorf(runtime.BadArtifact, "a process function needs a command")
	}
	if err := p.r.checkNetwork(cfg); err != nil {
		return err
	}
	name := cmd[0]
	if strings.Contains(name, "/") {
		if strings.HasPrefix(name, "/") {
			if fi, err := os.Stat(name); err == nil && underSystemDirs(filepath.Clean(name)) && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
				return nil
			}
			return runtime.Errorf(runtime.BadArtifact, "command %s is not in the sandbox: use a path in the bundle (./app) or a program of the host's /usr", name)
		}
		root, err := os.OpenRoot(p.dir)
		if err != nil {
			return err
		}
		defer root.Close()
		fi, err := root.Stat(name)
		if err != nil || !fi.Mode().IsRegular() {
			return runtime.Errorf(runtime.BadArtifact, "command %s is not a file in the bundle", name)
		}
		if fi.Mode()&0o111 == 0 {
			return runtime.Errorf(runtime.BadArtifact, "command %s is not executable: set its mode (chmod +x) before packing", name)
		}
		return nil
	}
	for _, dir := range []string{"/usr/local/bin", "/usr/bin", "/bin"} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 && filepath.Base(name) == name {
			return nil
		}
	}
	return runtime.Errorf(runtime.BadArtifact, "command %s is not installed on this node (the sandbox's PATH is /usr/local/bin:/usr/bin:/bin); ship it in the bundle and name it ./%s", name, name)
}

// checkNetwork refuses network: host unless the operator allowed it; a
// function deployed while it was allowed does not start once it is not.
func (r *Runtime) checkNetwork(cfg runtime.Config) error {
	if cfg.Process.Network && !r.hostNetOK {
		return runtime.Errorf(runtime.BadArtifact, "network: host is not allowed on this server: it gives a function the host's network, Gust and the host's services included; its operator may allow it with gust server --allow-host-network")
	}
	return nil
}

func underSystemDirs(p string) bool {
	for _, d := range initproc.SystemDirs {
		if strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return false
}

// Forget implements runtime.Prepared: process instances share nothing.
func (p *prepared) Forget(string) {}

// Close removes the unpacked bundle unless another prepared artifact uses
// it: the pool closes a prepared artifact when no version needs it any
// more, or when it stops.
func (p *prepared) Close(context.Context) error {
	var err error
	p.closed.Do(func() {
		r := p.r
		r.bundlesMu.Lock()
		defer r.bundlesMu.Unlock()
		if r.bundles[p.dir]--; r.bundles[p.dir] > 0 {
			return
		}
		delete(r.bundles, p.dir)
		err = os.RemoveAll(p.dir)
	})
	return err
}

// Start starts an instance: for http, a program that listens on $PORT;
// for stdio, a sandbox built ahead of its request.
func (p *prepared) Start(ctx context.Context, cfg runtime.Config) (runtime.Instance, error) {
	if err := p.r.checkNetwork(cfg); err != nil {
		return nil, err
	}
	p.r.starting.Add(1)
	defer func() {
		p.r.starting.Add(-1)
		p.r.spares.replenish()
	}()
	if cfg.Process.Protocol == runtime.ProtocolStdio {
		return p.startStdio(ctx, cfg)
	}
	return p.startHTTP(ctx, cfg)
}

// startOptions are how a sandbox starts: where the standard streams of its
// init and program go, and whether it stops once built (probe) or runs its
// program once per request (serve) instead of executing it once.
type startOptions struct {
	output       io.Writer
	probe, serve bool
}

// sandbox is one running init process, and the program it becomes.
type sandbox struct {
	cmd     *exec.Cmd
	cg      *cgroup
	control *os.File // the init's fd 3
	status  *os.File // the init's fd 4
	pass    *os.File // serve: the init's fd 6, for each request's streams
	done    chan struct{}
	err     error // from Wait, once done is closed

	closeOnce sync.Once
}

// start makes the cgroup, takes an init process (a spare, or one started
// now), and has it build the root; it returns once the sandbox is ready
// for its program.
func (r *Runtime) start(ctx context.Context, bundleDir string, cfg runtime.Config, opts startOptions) (*sandbox, error) {
	bundleFD, err := detachedMount(bundleDir)
	if err != nil {
		return nil, err
	}
	defer bundleFD.Close()
	fds := []int{int(bundleFD.Fd())}
	var pass *os.File
	if opts.serve {
		pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		pass = os.NewFile(uintptr(pair[0]), "pass")
		child := os.NewFile(uintptr(pair[1]), "pass")
		defer child.Close()
		fds = append(fds, int(child.Fd()))
	}
	sb, err := r.fromSpare(ctx, fds, cfg, opts)
	if sb == nil && (err == nil || ctx.Err() == nil) {
		// No spare; or it died while it waited, or failed where a new init
		// may not: start one.
		var p *initProc
		if p, err = r.spawn(cfg.Process.Network); err == nil {
			sb, err = r.configure(ctx, p, fds, cfg, opts)
		}
	}
	if err != nil {
		if pass != nil {
			pass.Close()
		}
		return nil, err
	}
	sb.pass = pass
	return sb, nil
}

// fromSpare makes the sandbox of a spare init, or returns nil and no error
// if none is ready or the sandbox cannot use one (a probe, the host's
// network).
func (r *Runtime) fromSpare(ctx context.Context, fds []int, cfg runtime.Config, opts startOptions) (*sandbox, error) {
	if opts.probe || cfg.Process.Network {
		return nil, nil
	}
	p := r.spares.take()
	if p == nil {
		return nil, nil
	}
	return r.configure(ctx, p, fds, cfg, opts)
}

// outputDrain is how long a sandbox's output is read after its init has
// exited.
const outputDrain = time.Second

// configure makes p the sandbox cfg describes: it sets the cgroup's
// limits, sends the init the descriptors fds (the bundle's mount, and for
// serve the socket of the requests' streams) and its configuration, and
// waits until the root is built. On failure the init is stopped.
func (r *Runtime) configure(ctx context.Context, p *initProc, fds []int, cfg runtime.Config, opts startOptions) (*sandbox, error) {
	sb := &sandbox{cmd: p.cmd, cg: p.cg, control: p.control, status: p.status, done: make(chan struct{})}
	output := opts.output
	if output == nil {
		output = io.Discard
	}
	go func() {
		copied := make(chan struct{})
		go func() {
			io.Copy(output, p.output)
			close(copied)
		}()
		<-p.waited
		// Every process of the sandbox is gone with its init, but a
		// descriptor of the pipe may outlive them in a unix socket's
		// queue until the kernel collects it: what they wrote is read,
		// and no more is waited for.
		select {
		case <-copied:
		case <-time.After(outputDrain):
		}
		p.output.Close()
		<-copied
		sb.err = p.err
		close(sb.done)
	}()
	// The init waits for its configuration: nothing else runs in the
	// cgroup before the limits are set.
	mem := int64(cfg.Limits.MemoryBytes)
	err := p.cg.setLimits(cgroupLimits{
		memory: mem,
		cpu:    min(r.cores, max(minCPU, cpuPerGiB*float64(mem)/(1<<30))),
		pids:   maxPids,
	})
	if err != nil {
		sb.close()
		return nil, err
	}
	ic := initproc.Config{
		Command:     cfg.Process.Command,
		Env:         cfg.Env,
		TmpBytes:    min(maxTmpBytes, mem),
		HostNetwork: cfg.Process.Network,
		ProbeOnly:   opts.probe,
		Serve:       opts.serve,
	}
	err = unix.Sendmsg(int(sb.control.Fd()), []byte{0}, unix.UnixRights(fds...), nil, 0)
	if err == nil {
		err = json.NewEncoder(sb.control).Encode(ic)
	}
	if err != nil {
		sb.close()
		return nil, fmt.Errorf("configuring the sandbox: %w", err)
	}
	if err := sb.readStatus(ctx, true); err != nil {
		sb.close()
		return nil, err
	}
	return sb, nil
}

// initProc is an init process, started in the namespaces of a sandbox and
// waiting for the rest of it: its cgroup, bundle and configuration.
type initProc struct {
	cmd     *exec.Cmd
	cg      *cgroup       // the sandbox's, with the init in it, without limits yet
	control *os.File      // the host's end of the init's fd 3
	status  *os.File      // the read end of the init's fd 4
	output  *os.File      // the read end of the init's stdout and stderr
	waited  chan struct{} // closed once the init has exited and err is set
	err     error
}

// spawn starts an init process in new user, PID, mount, IPC, UTS and,
// unless hostNetwork, network namespaces, and in a cgroup of its own.
// Moving a process into a cgroup can take milliseconds (the kernel waits
// for a grace period of RCU): a spare pays that before it is needed.
func (r *Runtime) spawn(hostNetwork bool) (*initProc, error) {
	seq := r.seq.Add(1)
	cg, err := r.cgroups.create("s" + strconv.FormatUint(seq, 10))
	if err != nil {
		return nil, err
	}
	p, err := r.startInit(seq, hostNetwork)
	if err != nil {
		cg.remove()
		return nil, err
	}
	p.cg = cg
	if err := cg.add(p.cmd.Process.Pid); err != nil {
		p.discard()
		return nil, err
	}
	return p, nil
}

// startInit starts the Gust binary again as Arg, in the namespaces.
func (r *Runtime) startInit(seq uint64, hostNetwork bool) (*initProc, error) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	control, controlChild := os.NewFile(uintptr(pair[0]), "control"), os.NewFile(uintptr(pair[1]), "control")
	defer controlChild.Close()
	statusR, statusW, err := os.Pipe()
	if err != nil {
		control.Close()
		return nil, err
	}
	defer statusW.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		control.Close()
		statusR.Close()
		return nil, err
	}
	defer outW.Close()
	// Placeholders at fdBundle and fdPass, which the init's first message
	// replaces: the Go runtime's own descriptors (its poller's, the
	// cgroup files it reads) must not take those numbers meanwhile.
	null, err := os.Open(os.DevNull)
	if err != nil {
		control.Close()
		statusR.Close()
		outR.Close()
		return nil, err
	}
	defer null.Close()
	hostID := idMapBase + int(seq%idMapSlots)*idMapSize
	flags := syscall.CLONE_NEWUSER | syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS
	if !hostNetwork {
		flags |= syscall.CLONE_NEWNET
	}
	cmd := &exec.Cmd{
		Path: "/proc/self/exe",
		Args: []string{initproc.Arg},
		// A fast start: no collection, one P, and no cgroup files read
		// for a GOMAXPROCS already set, so that the runtime's own
		// descriptors are the same on every host.
		Env:        []string{"GOGC=off", "GOMAXPROCS=1", "GODEBUG=containermaxprocs=0"},
		Stdout:     outW,
		Stderr:     outW,
		ExtraFiles: []*os.File{controlChild, statusW, null, null},
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags:                 uintptr(flags),
			UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: hostID, Size: idMapSize}},
			GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: hostID, Size: idMapSize}},
			GidMappingsEnableSetgroups: true,
			// Become the namespace's root (a host id of the map) before the
			// exec, so that the init keeps its capabilities in the namespace.
			Credential: &syscall.Credential{Uid: 0, Gid: 0},
			Pdeathsig:  syscall.SIGKILL,
			// A session of its own: no controlling terminal to type into.
			Setsid: true,
		},
	}
	if err := cmd.Start(); err != nil {
		control.Close()
		statusR.Close()
		outR.Close()
		return nil, fmt.Errorf("starting the sandbox: %w", err)
	}
	// The init holds its ends now (deferred closes drop the host's): the
	// status pipe's EOF must mean it closed (or exec'd) them.
	p := &initProc{cmd: cmd, control: control, status: statusR, output: outR, waited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.waited)
	}()
	return p, nil
}

// exited reports whether the init has exited.
func (p *initProc) exited() bool { return closed(p.waited) }

// closed reports whether ch is closed.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// discard stops an init that no sandbox took.
func (p *initProc) discard() {
	p.cmd.Process.Kill()
	p.control.Close()
	<-p.waited
	p.status.Close()
	p.output.Close()
	if p.cg != nil {
		go p.cg.remove()
	}
}

// readStatus reads the init's status pipe: ready wants the 'R' it writes
// once the root is built; otherwise it wants EOF, which a successful exec
// of the program makes.
func (sb *sandbox) readStatus(ctx context.Context, ready bool) error {
	type result struct {
		b   []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		if ready {
			b := make([]byte, 1)
			n, err := sb.status.Read(b)
			if n == 1 && b[0] == 'R' {
				ch <- result{b: b}
				return
			}
			rest, _ := io.ReadAll(io.LimitReader(sb.status, 4096))
			ch <- result{b: append(b[:n], rest...), err: err}
			return
		}
		b, err := io.ReadAll(io.LimitReader(sb.status, 4096))
		ch <- result{b: b, err: err}
	}()
	select {
	case res := <-ch:
		msg := string(res.b)
		if ready && msg == "R" {
			return nil
		}
		if m, ok := strings.CutPrefix(msg, "E"); ok {
			return runtime.Errorf(runtime.Crashed, "the sandbox could not start: %s", m)
		}
		if !ready && msg == "" {
			return nil // exec succeeded
		}
		<-sb.done
		return runtime.Errorf(runtime.Crashed, "the sandbox's init exited while starting (%v)", sb.err)
	case <-ctx.Done():
		sb.close()
		return runtime.Errorf(runtime.Timeout, "the sandbox did not start before the deadline")
	}
}

// exec has the init execute the program, with env added.
func (sb *sandbox) exec(ctx context.Context, env []string) error {
	err := json.NewEncoder(sb.control).Encode(initproc.Exec{Env: env})
	sb.control.Close()
	if err != nil {
		return runtime.Errorf(runtime.Crashed, "the sandbox exited before its program started")
	}
	return sb.readStatus(ctx, false)
}

// exited reports whether the program has exited.
func (sb *sandbox) exited() bool { return closed(sb.done) }

// failure explains how who (the program, or the init running it) ended:
// killed by the OOM killer, or exited, or killed by a signal.
func (sb *sandbox) failure(stderr *runtime.StderrLog, who string) *runtime.Error {
	<-sb.done
	if sb.cg.oomKills() > 0 {
		return &runtime.Error{Kind: runtime.OutOfMemory, Message: "the function ran out of memory and was killed", Stderr: tail(stderr)}
	}
	how := who + " exited"
	if ee, ok := sb.err.(*exec.ExitError); ok {
		var sig syscall.Signal
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			sig = ws.Signal()
		}
		how = ended(who, sig, ee.ExitCode())
	}
	return &runtime.Error{Kind: runtime.Crashed, Message: how, Stderr: tail(stderr)}
}

// ended says how who ended: killed by sig, or with an exit status.
func ended(who string, sig syscall.Signal, status int) string {
	if sig != 0 {
		return who + " was killed by signal " + sig.String()
	}
	return who + " exited with status " + strconv.Itoa(status)
}

func tail(s *runtime.StderrLog) string {
	if s == nil {
		return ""
	}
	s.Flush()
	return s.Tail()
}

// wait waits for the init or program to exit.
func (sb *sandbox) wait() { <-sb.done }

// close kills the sandbox's whole tree: its first process is the PID
// namespace's init, and the kernel kills every other with it. The cgroup
// goes once they have gone.
func (sb *sandbox) close() {
	sb.closeOnce.Do(func() {
		sb.cmd.Process.Kill()
		sb.control.Close()
		<-sb.done
		sb.status.Close()
		if sb.pass != nil {
			sb.pass.Close()
		}
		go sb.cg.remove()
	})
}

// detachedMount returns a read-only, nosuid, nodev copy of dir's mount as
// a detached mount, for the sandbox's init to attach at /var/task.
func detachedMount(dir string) (*os.File, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("open_tree %s: %w", dir, err)
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mount_setattr: %w", err)
	}
	return os.NewFile(uintptr(fd), "bundle"), nil
}

var _ runtime.Sandbox = (*Runtime)(nil)

// program is how errors name the function's program.
const program = "the function's program"
