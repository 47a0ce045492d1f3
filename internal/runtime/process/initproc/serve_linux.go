package initproc

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime/debug"
	"syscall"

	"golang.org/x/sys/unix"
)

// Request is one run of the program in a serving sandbox, with Env added
// to the config's; its stdin, stdout and stderr come on fdPass.
type Request struct {
	Env []string `json:"env"`
}

// Result is how one run ended.
type Result struct {
	Exit   int    `json:"exit"`
	Signal int    `json:"signal,omitempty"`
	Error  string `json:"error,omitempty"`
}

// dropPrivileges makes every thread the sandbox's user, with no_new_privs
// and the seccomp filter, before any request: the programs it starts
// inherit all three.
func dropPrivileges() error {
	if err := unix.Chdir("/var/task"); err != nil {
		return err
	}
	if err := setResourceLimits(); err != nil {
		return err
	}
	// The syscall package's calls change every thread.
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setresgid(sandboxGID, sandboxGID, sandboxGID); err != nil {
		return fmt.Errorf("setresgid: %w", err)
	}
	if err := syscall.Setresuid(sandboxUID, sandboxUID, sandboxUID); err != nil {
		return fmt.Errorf("setresuid: %w", err)
	}
	if err := keepParentDeathSignal(); err != nil {
		return err
	}
	if err := installSeccomp(true); err != nil {
		return fmt.Errorf("seccomp: %w", err)
	}
	return nil
}

// serve runs the program once per request until the host closes the
// control pipe. After each run every other process of the sandbox is
// killed, so nothing a run started outlives it.
func serve(cfg Config, dec *json.Decoder, status *os.File) {
	// The init lives as long as the instance: collect its garbage (it
	// started with GOGC=off, for a fast start).
	debug.SetGCPercent(100)
	// The programs get their three streams and nothing of the init's.
	for _, fd := range []int{fdControl, fdStatus, fdPass} {
		unix.CloseOnExec(fd)
	}
	enc := json.NewEncoder(status)
	for {
		var req Request
		if err := dec.Decode(&req); err != nil {
			os.Exit(0) // the host is done with this sandbox
		}
		fds, err := receiveFDs(fdPass, 3, 3)
		var res Result
		if err != nil {
			res = Result{Exit: 127, Error: "receiving the request's streams: " + err.Error()}
		} else {
			res = runOnce(cfg, req, fds)
			for _, fd := range fds {
				unix.Close(fd)
			}
		}
		if len(res.Error) > 512 {
			res.Error = res.Error[:512] + "..." // a Result fits maxResultBytes, escaped
		}
		if err := enc.Encode(res); err != nil {
			os.Exit(1)
		}
	}
}

// receiveFDs receives from the unix socket fd one message of one byte
// that brings min to max descriptors, close-on-exec.
func receiveFDs(fd, min, max int) ([]int, error) {
	oob := make([]byte, unix.CmsgSpace(max*4))
	_, oobn, _, _, err := unix.Recvmsg(fd, make([]byte, 1), oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return nil, err
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("expected %d to %d descriptors", min, max)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err == nil && (len(fds) < min || len(fds) > max) {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("got %d descriptors, expected %d to %d", len(fds), min, max)
	}
	return fds, err
}

func runOnce(cfg Config, req Request, fds []int) Result {
	env := append(cfg.Env[:len(cfg.Env):len(cfg.Env)], req.Env...)
	path, err := lookPath(cfg.Command[0], env)
	if err != nil {
		return Result{Exit: 127, Error: err.Error()}
	}
	pid, err := syscall.ForkExec(path, cfg.Command, &syscall.ProcAttr{
		Dir:   "/var/task",
		Env:   env,
		Files: []uintptr{uintptr(fds[0]), uintptr(fds[1]), uintptr(fds[2])},
	})
	if err != nil {
		return Result{Exit: 127, Error: fmt.Sprintf("cannot execute %s: %v", cfg.Command[0], err)}
	}
	var ws syscall.WaitStatus
	for {
		if _, err := syscall.Wait4(pid, &ws, 0, nil); err != syscall.EINTR {
			break
		}
	}
	// Everything the run left, to the last background child: init is the
	// one process kill(-1) spares. Then reap them.
	syscall.Kill(-1, syscall.SIGKILL)
	for {
		if _, err := syscall.Wait4(-1, nil, 0, nil); err == syscall.ECHILD {
			break
		}
	}
	if ws.Signaled() {
		return Result{Exit: -1, Signal: int(ws.Signal())}
	}
	return Result{Exit: ws.ExitStatus()}
}
