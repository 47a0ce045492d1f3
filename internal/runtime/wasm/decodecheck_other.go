//go:build !linux

package wasm

import "context"

// checksInChild says that decodeCheck compiles in a child process, which
// reports the files of compiled code it added to the cache: on Linux only.
const checksInChild = false

// decodeCheck is made in a child process with limited memory on Linux only
// (see decodecheck_linux.go); elsewhere wazero compiles modules in-process,
// and what it adds to the cache is owned by no one.
func decodeCheck(context.Context, []byte, bool, string) ([]string, error) { return nil, nil }
