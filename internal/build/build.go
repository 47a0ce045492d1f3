// Package build turns a function's source into what a deploy sends: the spec
// from its gust.yaml and a WebAssembly artifact built with the local Go
// toolchain (GOOS=wasip1 GOARCH=wasm).
package build

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/gust-faas/gust/internal/registry"
)

// SpecFile is the name of a function's spec in its directory.
const SpecFile = "gust.yaml"

// Function is a built function, ready to deploy.
type Function struct {
	Spec     registry.Spec
	Artifact []byte
}

// Dir builds the function in dir: its gust.yaml (whose name defaults to the
// directory's) and its Go main package.
func Dir(ctx context.Context, dir string) (Function, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return Function{}, err
	}
	spec, err := ReadSpec(filepath.Join(abs, SpecFile), filepath.Base(abs))
	if err != nil {
		return Function{}, err
	}
	artifact, err := goBuild(ctx, abs)
	if err != nil {
		return Function{}, err
	}
	return Function{Spec: spec, Artifact: artifact}, nil
}

// FS builds the function in directory dir of fsys, which holds only its own
// files: they are copied to a temporary module and built there.
func FS(ctx context.Context, fsys fs.FS, dir string) (Function, error) {
	tmp, err := os.MkdirTemp("", "gust-build-")
	if err != nil {
		return Function{}, err
	}
	defer os.RemoveAll(tmp)
	src, err := fs.Sub(fsys, dir)
	if err != nil {
		return Function{}, err
	}
	if err := os.CopyFS(tmp, src); err != nil {
		return Function{}, err
	}
	if _, err := os.Stat(filepath.Join(tmp, "go.mod")); errors.Is(err, fs.ErrNotExist) {
		mod := fmt.Sprintf("module gust.example/%s\n\ngo 1.26\n", filepath.Base(dir))
		if err := os.WriteFile(filepath.Join(tmp, "go.mod"), []byte(mod), 0o644); err != nil {
			return Function{}, err
		}
	}
	spec, err := ReadSpec(filepath.Join(tmp, SpecFile), filepath.Base(dir))
	if err != nil {
		return Function{}, err
	}
	artifact, err := goBuild(ctx, tmp)
	if err != nil {
		return Function{}, err
	}
	return Function{Spec: spec, Artifact: artifact}, nil
}

// ReadSpec reads a gust.yaml; a spec without a name gets defaultName.
func ReadSpec(path, defaultName string) (registry.Spec, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return registry.Spec{}, fmt.Errorf("%s not found: a function directory holds a %s and its Go source", path, SpecFile)
	}
	if err != nil {
		return registry.Spec{}, err
	}
	spec, err := registry.DecodeSpecYAML(data)
	if err != nil {
		return registry.Spec{}, fmt.Errorf("%s: %w", path, err)
	}
	if spec.Name == "" {
		spec.Name = defaultName
	}
	spec = spec.WithDefaults()
	if err := spec.Validate(); err != nil {
		return registry.Spec{}, fmt.Errorf("%s: %w", path, err)
	}
	return spec, nil
}

// goBuild builds the main package in dir to WebAssembly.
func goBuild(ctx context.Context, dir string) ([]byte, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return nil, errors.New("building a Go function needs the Go toolchain: no go command on PATH (or deploy a .wasm file)")
	}
	out, err := os.CreateTemp("", "gust-*.wasm")
	if err != nil {
		return nil, err
	}
	out.Close()
	defer os.Remove(out.Name())
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-o", out.Name(), ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	var msg bytes.Buffer
	cmd.Stdout, cmd.Stderr = &msg, &msg
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go build in %s failed: %v\n%s", dir, err, strings.TrimSpace(msg.String()))
	}
	return os.ReadFile(out.Name())
}
