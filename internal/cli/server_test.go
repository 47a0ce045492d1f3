package cli

import (
	"runtime"
	"runtime/debug"
	"testing"
)

// TestTuneRuntime: the server runs two goroutines at once per CPU and
// collects at GOGC=400, each unless the environment sets it, and tuning
// twice (a test's second server) does not compound.
func TestTuneRuntime(t *testing.T) {
	procs, gc := runtime.GOMAXPROCS(0), debug.SetGCPercent(100)
	t.Cleanup(func() {
		runtime.GOMAXPROCS(procs)
		debug.SetGCPercent(gc)
	})
	env := map[string]string{}
	getenv := func(name string) string { return env[name] }
	for range 2 {
		tuneRuntime(getenv)
		if got, want := runtime.GOMAXPROCS(0), serverProcsPerCPU*cpus; got != want {
			t.Errorf("GOMAXPROCS is %d, want %d (%d CPUs)", got, want, cpus)
		}
		if got := debug.SetGCPercent(serverGCPercent); got != serverGCPercent {
			t.Errorf("GOGC is %d, want %d", got, serverGCPercent)
		}
	}

	runtime.GOMAXPROCS(1)
	debug.SetGCPercent(50)
	env = map[string]string{"GOMAXPROCS": "1", "GOGC": "50"}
	tuneRuntime(getenv)
	if got := runtime.GOMAXPROCS(0); got != 1 {
		t.Errorf("with GOMAXPROCS=1 set, GOMAXPROCS is %d", got)
	}
	if got := debug.SetGCPercent(50); got != 50 {
		t.Errorf("with GOGC=50 set, GOGC is %d", got)
	}
}
