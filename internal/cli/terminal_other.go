//go:build !linux

package cli

import (
	"bufio"
	"os"
)

// isTerminal reports whether w is a terminal: never, here.
func isTerminal(any) bool { return false }

// readLineHidden reads a line from f (echoed: this system's terminal is
// not driven here).
func readLineHidden(f *os.File) (string, error) { return bufio.NewReader(f).ReadString('\n') }
