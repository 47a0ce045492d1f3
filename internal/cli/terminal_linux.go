package cli

import (
	"bufio"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// isTerminal reports whether w is a terminal.
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// readLineHidden reads a line from the terminal f without echoing it, as
// a password prompt does.
func readLineHidden(f *os.File) (string, error) {
	fd := int(f.Fd())
	saved, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return "", err
	}
	quiet := *saved
	quiet.Lflag &^= unix.ECHO
	quiet.Lflag |= unix.ICANON
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &quiet); err != nil {
		return "", err
	}
	defer unix.IoctlSetTermios(fd, unix.TCSETS, saved)
	// Interrupted (^C), the terminal gets its echo back before the
	// signal ends the process, as it would have without the prompt.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	read := make(chan struct{})
	defer func() {
		signal.Stop(sigs)
		close(read)
	}()
	go func() {
		select {
		case sig := <-sigs:
			unix.IoctlSetTermios(fd, unix.TCSETS, saved)
			signal.Reset(sig)
			syscall.Kill(os.Getpid(), sig.(syscall.Signal))
		case <-read:
		}
	}()
	return bufio.NewReader(f).ReadString('\n')
}
