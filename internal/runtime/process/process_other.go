//go:build !linux

package process

import (
	"context"
	"errors"

	"github.com/gust-faas/gust/internal/runtime"
)

// Config configures the process runtime.
type Config struct {
	Dir              string
	AllowHostNetwork bool
}

// Runtime is the process sandbox.
type Runtime struct{ runtime.Sandbox }

// New fails: process sandboxes need Linux.
func New(context.Context, Config) (*Runtime, error) {
	return nil, errors.New("process sandboxes need Linux")
}

// Close does nothing: New never returns a Runtime here.
func (*Runtime) Close() {}
