package process

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	goruntime "runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// hostNetNS is this process's own network namespace, to return to.
var hostNetNS = func() int {
	fd, err := unix.Open("/proc/self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	return fd
}()

// dialInNetNS connects to 127.0.0.1:port inside the network namespace
// nsFD. Only the socket is made there: a locked thread enters the
// namespace, creates it and comes back, so the sandbox gets no route out.
// The connect waits in Go's poller, within ctx's deadline: a program whose
// accept queue is full would otherwise hold it for minutes.
func dialInNetNS(ctx context.Context, nsFD, port int) (net.Conn, error) {
	fd, err := socketInNetNS(nsFD)
	if err != nil {
		return nil, err
	}
	cerr := unix.Connect(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}})
	if cerr != nil && cerr != unix.EINPROGRESS {
		unix.Close(fd)
		return nil, cerr
	}
	f := os.NewFile(uintptr(fd), "sandbox") // non-blocking: the poller takes it
	defer f.Close()
	if cerr == unix.EINPROGRESS {
		if dl, ok := ctx.Deadline(); ok {
			f.SetWriteDeadline(dl)
		}
		rc, err := f.SyscallConn()
		if err != nil {
			return nil, err
		}
		var connectErr error
		if err := rc.Write(func(fd uintptr) bool {
			if _, err := unix.Getpeername(int(fd)); err == nil {
				return true // connected
			}
			v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
			switch {
			case err != nil:
				connectErr = err
			case v != 0:
				connectErr = syscall.Errno(v)
			default:
				return false // still connecting: wait for the poller
			}
			return true
		}); err != nil {
			return nil, err
		}
		if connectErr != nil {
			return nil, connectErr
		}
	}
	return net.FileConn(f)
}

func socketInNetNS(nsFD int) (int, error) {
	if hostNetNS < 0 {
		return -1, fmt.Errorf("cannot open this process's network namespace")
	}
	goruntime.LockOSThread()
	if err := unix.Setns(nsFD, unix.CLONE_NEWNET); err != nil {
		goruntime.UnlockOSThread()
		return -1, fmt.Errorf("entering the sandbox's network: %w", err)
	}
	fd, sockErr := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err := unix.Setns(hostNetNS, unix.CLONE_NEWNET); err != nil {
		// The thread is stuck in the sandbox's namespace: leave it locked,
		// and the Go runtime ends it with this goroutine.
		if sockErr == nil {
			unix.Close(fd)
		}
		return -1, fmt.Errorf("leaving the sandbox's network: %w", err)
	}
	goruntime.UnlockOSThread()
	if sockErr != nil {
		return -1, sockErr
	}
	return fd, nil
}

// isRefused reports whether err is a refused connection: nothing listens yet.
func isRefused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED)
}
