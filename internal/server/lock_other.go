//go:build !unix

package server

import "os"

// lockDataDir does not lock where flock does not exist.
func lockDataDir(string) (*os.File, error) { return nil, nil }
