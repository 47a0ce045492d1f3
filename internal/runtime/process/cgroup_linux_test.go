package process

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// TestSetLimitsSkipsWhatTheKernelLacks: a kernel without swap accounting,
// or (cgroup v1) without kernel memory accounting, has no file for those
// limits; the sandbox gets the others (the runtime refused every sandbox
// once: the write tried to create the missing file). A missing file that
// every kernel has is an error.
func TestSetLimitsSkipsWhatTheKernelLacks(t *testing.T) {
	for _, tc := range []struct {
		v2    bool
		files []string
	}{
		{false, []string{"memory.limit_in_bytes", "memory.swappiness", "pids.max", "cpu.cfs_period_us", "cpu.cfs_quota_us", "cpu.shares"}},
		{true, []string{"memory.max", "pids.max", "cpu.max", "cpu.weight"}},
	} {
		dir := t.TempDir()
		for _, f := range tc.files {
			if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		c := &cgroup{v2: tc.v2, dirs: map[string]string{"memory": dir, "pids": dir, "cpu": dir, "unified": dir}}
		if err := c.setLimits(cgroupLimits{memory: 64 << 20, cpu: 1, pids: 128}); err != nil {
			t.Fatalf("v2 %t: setLimits = %v, want the missing optional limits skipped", tc.v2, err)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, tc.files[0])); string(b) != "67108864" {
			t.Errorf("v2 %t: %s = %q, want the memory limit", tc.v2, tc.files[0], b)
		}
		if err := os.Remove(filepath.Join(dir, "pids.max")); err != nil {
			t.Fatal(err)
		}
		if err := c.setLimits(cgroupLimits{memory: 64 << 20, cpu: 1, pids: 128}); err == nil {
			t.Errorf("v2 %t: setLimits without pids.max succeeded, want an error", tc.v2)
		}
	}
}

// TestSweepLeavesLiveCgroups: the sweep at start removes what servers that
// are gone left behind, but not a cgroup that holds processes, nor its
// server's folder: a server in another PID namespace (a container sharing
// the host's cgroups) looks gone from here, and the sweep once killed its
// sandboxes and removed the folder it makes new ones in.
func TestSweepLeavesLiveCgroups(t *testing.T) {
	cg, err := openCgroups()
	if err != nil {
		t.Skipf("no cgroups here: %v", err)
	}
	t.Cleanup(cg.close)
	const other = "999999999" // a PID no process has here
	var live, stale *cgroup
	for _, name := range []string{"live", "stale"} {
		c := &cgroup{v2: cg.v2, dirs: map[string]string{}}
		for k, base := range cg.base {
			dir := filepath.Join(base, other, name)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			c.dirs[k] = dir
		}
		if name == "live" {
			live = c
		} else {
			stale = c
		}
	}
	t.Cleanup(func() {
		live.kill()
		live.remove()
		stale.remove()
		for _, base := range cg.base {
			os.Remove(filepath.Join(base, other))
		}
	})
	sleeper := exec.Command("sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	if err := live.add(sleeper.Process.Pid); err != nil {
		t.Fatal(err)
	}
	cg.sweep()
	if err := sleeper.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("the process in the other server's cgroup: %v, want it alive", err)
	}
	for k, dir := range live.dirs {
		if _, err := os.Stat(dir); err != nil {
			t.Errorf("%s: the cgroup with a process: %v, want it kept", k, err)
		}
	}
	for k, dir := range stale.dirs {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: the empty cgroup of a gone server: %v, want it removed", k, err)
		}
	}
}
