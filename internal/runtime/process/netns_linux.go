package process

import (
	"context"
	"fmt"
	"net"
	"os"
	goruntime "runtime"
	"syscall"
	"time"

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
func dialInNetNS(ctx context.Context, nsFD, port int) (net.Conn, error) {
	fd, err := socketInNetNS(nsFD)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "sandbox")
	defer f.Close()
	// A blocking connect to loopback answers at once, connected or
	// refused, unless the program's accept queue is full: then the kernel
	// retries for minutes, so it is bounded by the deadline.
	wait := time.Second
	if dl, ok := ctx.Deadline(); ok {
		wait = max(time.Millisecond, time.Until(dl))
	}
	tv := unix.NsecToTimeval(wait.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return nil, err
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		if err == unix.EINPROGRESS || err == unix.EAGAIN {
			return nil, os.ErrDeadlineExceeded
		}
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
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
	fd, sockErr := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
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
	return err == syscall.ECONNREFUSED
}
