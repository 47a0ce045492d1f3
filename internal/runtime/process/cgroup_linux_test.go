package process

import (
	"os"
	"path/filepath"
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
