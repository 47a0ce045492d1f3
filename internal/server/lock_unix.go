//go:build unix

package server

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// lockDataDir takes the data dir for this server alone: two servers on one
// store corrupt it, and a second one's start would sweep the first's
// unpacked bundles. The lock goes with the process, however it ends.
func lockDataDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("data dir %s is in use by another gust server: stop it, or give this one another --data-dir", dir)
		}
		return nil, fmt.Errorf("locking the data dir: %w", err)
	}
	return f, nil
}
