package process

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroups makes a cgroup per sandbox under the server's own, in the v1
// hierarchies of the memory, cpu and pids controllers or in the unified v2
// hierarchy, whichever the host mounts.
type cgroups struct {
	v2 bool
	// base is the folder new cgroups go in: one per controller for v1
	// (memory, cpu, pids), one for v2; each holds a folder per server
	// process (see mine), which holds its sandboxes'.
	base map[string]string
	// mine is this server's folder's name: its PID, which the sweep of a
	// later server checks, and a random part, for servers that have the
	// same PID in PID namespaces of their own (1, in containers) and
	// share a hierarchy.
	mine string
}

var controllers = []string{"memory", "cpu", "pids"}

// cgroupPeriod is the CPU quota's period.
const cgroupPeriod = 100 * time.Millisecond

// openCgroups finds the hierarchies and makes a "gust" cgroup under the
// server's own in each.
func openCgroups() (*cgroups, error) {
	own, err := ownCgroups()
	if err != nil {
		return nil, err
	}
	mounts, err := cgroupMounts()
	if err != nil {
		return nil, err
	}
	random := make([]byte, 4)
	rand.Read(random)
	cg := &cgroups{base: map[string]string{}, mine: strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(random)}
	if m, ok := mounts["unified"]; ok && len(mounts) == 1 {
		cg.v2 = true
		// The server's own cgroup may hold processes, so it cannot hand
		// controllers to children (cgroup v2's "no internal processes"):
		// the sandboxes go beside it, in its parent.
		parent := filepath.Join(m, own[""])
		if own[""] != "/" {
			parent = filepath.Dir(parent)
		}
		base := filepath.Join(parent, "gust-sandboxes")
		if err := os.MkdirAll(base, 0o755); err != nil {
			return nil, fmt.Errorf("cgroup v2: %w", err)
		}
		if err := os.MkdirAll(filepath.Join(base, cg.mine), 0o755); err != nil {
			return nil, fmt.Errorf("cgroup v2: %w", err)
		}
		for _, dir := range []string{parent, base, filepath.Join(base, cg.mine)} {
			if err := writeControl(filepath.Join(dir, "cgroup.subtree_control"), "+memory +cpu +pids"); err != nil {
				return nil, fmt.Errorf("cgroup v2: cannot enable the memory, cpu and pids controllers in %s: %w", dir, err)
			}
		}
		cg.base["unified"] = base
		return cg, nil
	}
	for _, c := range controllers {
		m, ok := mounts[c]
		if !ok {
			return nil, fmt.Errorf("cgroup v1: the %s controller is not mounted", c)
		}
		base := filepath.Join(m, own[c], "gust")
		if err := os.MkdirAll(filepath.Join(base, cg.mine), 0o755); err != nil {
			return nil, fmt.Errorf("cgroup v1: %w", err)
		}
		cg.base[c] = base
	}
	return cg, nil
}

// ownCgroups reads /proc/self/cgroup: the server's cgroup path by
// controller ("" for v2).
func ownCgroups() (map[string]string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for line := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for c := range strings.SplitSeq(parts[1], ",") {
			out[c] = parts[2]
		}
	}
	return out, nil
}

// cgroupMounts reads /proc/self/mountinfo: the mount point of each v1
// controller this package uses, or of the v2 hierarchy as "unified" when no
// v1 hierarchy has them.
func cgroupMounts() (map[string]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	v1, v2 := map[string]string{}, ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fields, rest := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 || len(rest) < 3 {
			continue
		}
		switch rest[0] {
		case "cgroup2":
			if v2 == "" {
				v2 = fields[4]
			}
		case "cgroup":
			for opt := range strings.SplitSeq(rest[2], ",") {
				for _, c := range controllers {
					if opt == c {
						v1[c] = fields[4]
					}
				}
			}
		}
	}
	if len(v1) > 0 {
		return v1, nil
	}
	if v2 != "" {
		return map[string]string{"unified": v2}, nil
	}
	return nil, errors.New("no cgroup hierarchy is mounted")
}

// sweep removes the folders of servers that are gone, and the empty
// cgroups in them: their sandboxes died with them (Pdeathsig). A cgroup
// with processes is left alone, and with it its server's folder: a server
// in another PID namespace sharing the hierarchy looks gone from here
// (its PID is not ours to see), and killing what its folder held stopped
// its sandboxes and took the folder it makes new ones in.
func (cg *cgroups) sweep() {
	for _, base := range cg.base {
		servers, _ := os.ReadDir(base)
		for _, s := range servers {
			digits, _, _ := strings.Cut(s.Name(), "-")
			pid, err := strconv.Atoi(digits)
			if !s.IsDir() || err != nil || s.Name() == cg.mine || syscall.Kill(pid, 0) != syscall.ESRCH {
				continue
			}
			dir := filepath.Join(base, s.Name())
			sandboxes, _ := os.ReadDir(dir)
			for _, sb := range sandboxes {
				if sb.IsDir() {
					os.Remove(filepath.Join(dir, sb.Name())) // only if empty
				}
			}
			os.Remove(dir) // only if empty
		}
	}
}

// close removes this server's folders once the cgroups of its sandboxes
// have gone (their removal goes on as they close), waiting up to a
// second; what it cannot remove, a later server's sweep does.
func (cg *cgroups) close() {
	mine := &cgroup{v2: cg.v2, dirs: map[string]string{}}
	for k, base := range cg.base {
		mine.dirs[k] = filepath.Join(base, cg.mine)
	}
	mine.remove()
}

// cgroup is one sandbox's.
type cgroup struct {
	v2   bool
	dirs map[string]string // by controller, or "unified"
}

// limits of one sandbox.
type cgroupLimits struct {
	memory int64
	cpu    float64 // in cores
	pids   int
}

// create makes a cgroup named name in each hierarchy, without limits
// (setLimits sets them before anything but the sandbox's init runs in it)
// and with the least CPU weight: a spare init starting in it yields the
// CPU to the programs and requests that need it now.
func (cg *cgroups) create(name string) (*cgroup, error) {
	c := &cgroup{v2: cg.v2, dirs: map[string]string{}}
	for k, base := range cg.base {
		dir := filepath.Join(base, cg.mine, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			c.remove()
			return nil, err
		}
		c.dirs[k] = dir
	}
	if err := c.write(c.weight(false)); err != nil {
		c.remove()
		return nil, err
	}
	return c, nil
}

// weight is the write that gives the cgroup the least CPU weight, or the
// default.
func (c *cgroup) weight(normal bool) [2]string {
	file, least, usual := filepath.Join(c.dirs["cpu"], "cpu.shares"), "2", "1024"
	if c.v2 {
		file, least, usual = filepath.Join(c.dirs["unified"], "cpu.weight"), "1", "100"
	}
	if normal {
		return [2]string{file, usual}
	}
	return [2]string{file, least}
}

// write writes w[1] to the file w[0].
func (c *cgroup) write(w [2]string) error {
	if err := writeControl(w[0], w[1]); err != nil {
		return fmt.Errorf("cgroup: %w", err)
	}
	return nil
}

// writeControl writes value to an existing control file: os.WriteFile
// would try to create a missing one, which cgroupfs refuses with EACCES,
// not ENOENT.
func writeControl(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	return errors.Join(err, f.Close())
}

// optional are the control files setLimits skips where the kernel lacks
// them: the swap limits (swap accounting off), and cgroup v1's limit on
// socket buffers (kernel memory accounting off).
var optional = map[string]bool{"memory.swap.max": true, "memory.memsw.limit_in_bytes": true, "memory.kmem.tcp.limit_in_bytes": true}

// setLimits limits the cgroup's memory (without swap), CPU and processes.
func (c *cgroup) setLimits(lim cgroupLimits) error {
	quota := int64(lim.cpu * float64(cgroupPeriod/time.Microsecond))
	period := int64(cgroupPeriod / time.Microsecond)
	mem := strconv.FormatInt(lim.memory, 10)
	var writes [][2]string
	if c.v2 {
		d := c.dirs["unified"]
		writes = [][2]string{
			{filepath.Join(d, "memory.max"), mem},
			{filepath.Join(d, "memory.swap.max"), "0"},
			{filepath.Join(d, "pids.max"), strconv.Itoa(lim.pids)},
			{filepath.Join(d, "cpu.max"), fmt.Sprintf("%d %d", quota, period)},
			c.weight(true),
		}
	} else {
		writes = [][2]string{
			{filepath.Join(c.dirs["memory"], "memory.limit_in_bytes"), mem},
			{filepath.Join(c.dirs["memory"], "memory.memsw.limit_in_bytes"), mem}, // no swap
			// Socket buffers count towards the limit only once they have
			// one of their own (cgroup v2 counts them anyway): a program
			// could otherwise buffer gigabytes in sockets to itself, and
			// press every socket on the host.
			{filepath.Join(c.dirs["memory"], "memory.kmem.tcp.limit_in_bytes"), mem},
			{filepath.Join(c.dirs["memory"], "memory.swappiness"), "0"},
			{filepath.Join(c.dirs["pids"], "pids.max"), strconv.Itoa(lim.pids)},
			{filepath.Join(c.dirs["cpu"], "cpu.cfs_period_us"), strconv.FormatInt(period, 10)},
			{filepath.Join(c.dirs["cpu"], "cpu.cfs_quota_us"), strconv.FormatInt(quota, 10)},
			c.weight(true),
		}
	}
	for _, w := range writes {
		if err := c.write(w); err != nil {
			if optional[filepath.Base(w[0])] && errors.Is(err, os.ErrNotExist) {
				continue
			}
			return err
		}
	}
	return nil
}

// add moves pid into the cgroup.
func (c *cgroup) add(pid int) error {
	p := strconv.Itoa(pid)
	for _, dir := range c.dirs {
		if err := writeControl(filepath.Join(dir, "cgroup.procs"), p); err != nil {
			return fmt.Errorf("cgroup: %w", err)
		}
	}
	return nil
}

// oomKills returns how many processes of the cgroup the kernel's OOM
// killer killed.
func (c *cgroup) oomKills() int {
	file := "memory.oom_control"
	dir := c.dirs["memory"]
	if c.v2 {
		file, dir = "memory.events", c.dirs["unified"]
	}
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return 0
	}
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("oom_kill ")); ok {
			n, _ := strconv.Atoi(string(v))
			return n
		}
	}
	return 0
}

// kill ends every process of the cgroup.
func (c *cgroup) kill() {
	for _, dir := range c.dirs {
		if c.v2 && writeControl(filepath.Join(dir, "cgroup.kill"), "1") == nil {
			continue
		}
		b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		for f := range strings.FieldsSeq(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

// remove deletes the cgroup once its processes have gone, trying for up
// to a second: the kernel reaps a killed tree asynchronously.
func (c *cgroup) remove() {
	for _, dir := range c.dirs {
		for range 100 {
			if err := os.Remove(dir); err == nil || errors.Is(err, os.ErrNotExist) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
