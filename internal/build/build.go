// Package build turns a function's source into what a deploy sends: the spec
// from its gust.yaml and an artifact. A wasm function's is built with the
// local Go toolchain (GOOS=wasip1 GOARCH=wasm): a reactor
// (-buildmode=c-shared) if the package uses the Go SDK, else a WASI command
// module. A process function's is its folder, packed as a .tar.gz bundle.
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
	"slices"
	"strings"

	"github.com/gust-faas/gust"

	"github.com/gust-faas/gust/internal/bundle"
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
// directory's) and its Go main package, or for a process function the
// folder itself.
func Dir(ctx context.Context, dir string) (Function, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return Function{}, err
	}
	spec, err := ReadSpec(filepath.Join(abs, SpecFile), filepath.Base(abs))
	if err != nil {
		return Function{}, err
	}
	if spec.Runtime == registry.RuntimeProcess {
		artifact, err := bundle.Pack(abs)
		return Function{Spec: spec, Artifact: artifact}, err
	}
	artifact, err := goBuild(ctx, abs)
	if err != nil {
		return Function{}, err
	}
	return Function{Spec: spec, Artifact: artifact}, nil
}

// FS builds the function in directory dir of gust.Source (an example):
// its files and the SDK's are copied to a temporary module and built there,
// so no network and no source tree are needed.
func FS(ctx context.Context, dir string) (Function, error) {
	tmp, err := os.MkdirTemp("", "gust-build-")
	if err != nil {
		return Function{}, err
	}
	defer os.RemoveAll(tmp)
	src, err := fs.Sub(gust.Source, dir)
	if err != nil {
		return Function{}, err
	}
	fnDir := filepath.Join(tmp, "fn")
	if err := os.CopyFS(fnDir, src); err != nil {
		return Function{}, err
	}
	sdk, err := fs.Sub(gust.Source, "sdk")
	if err != nil {
		return Function{}, err
	}
	if err := os.CopyFS(filepath.Join(tmp, "gust", "sdk"), sdk); err != nil {
		return Function{}, err
	}
	// A throwaway module that finds the SDK in the copy beside it.
	files := map[string]string{
		filepath.Join(tmp, "gust", "go.mod"): "module github.com/gust-faas/gust\n\ngo 1.26\n",
		filepath.Join(fnDir, "go.mod"): fmt.Sprintf("module gust.example/%s\n\ngo 1.26\n\nrequire github.com/gust-faas/gust v0.0.0\n\nreplace github.com/gust-faas/gust => ../gust\n",
			filepath.Base(dir)),
	}
	for path, content := range files {
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			return Function{}, err
		}
	}
	spec, err := ReadSpec(filepath.Join(fnDir, SpecFile), filepath.Base(dir))
	if err != nil {
		return Function{}, err
	}
	artifact, err := goBuild(ctx, fnDir)
	if err != nil {
		return Function{}, err
	}
	return Function{Spec: spec, Artifact: artifact}, nil
}

// ReadSpec reads a gust.yaml; a spec without a name gets defaultName.
func ReadSpec(path, defaultName string) (registry.Spec, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return registry.Spec{}, fmt.Errorf("%s not found: a function directory holds a %s and its source", path, SpecFile)
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
	name, err := goCommand(ctx, goBin, dir, "list", "-f", "{{.Name}}", ".")
	if err != nil {
		return nil, err
	}
	if name = strings.TrimSpace(name); name != "main" {
		return nil, fmt.Errorf("%s holds package %s: a function is a main package (package main, with func main calling gust.Serve, or a CGI program)", dir, name)
	}
	deps, err := goCommand(ctx, goBin, dir, "list", "-deps", "-f", "{{.ImportPath}}", ".")
	if err != nil {
		return nil, err
	}
	args := []string{"build", "-trimpath"}
	if slices.Contains(strings.Fields(deps), gust.SDKPath) {
		args = append(args, "-buildmode=c-shared")
	}
	out, err := os.CreateTemp("", "gust-*.wasm")
	if err != nil {
		return nil, err
	}
	out.Close()
	defer os.Remove(out.Name())
	if _, err := goCommand(ctx, goBin, dir, append(args, "-o", out.Name(), ".")...); err != nil {
		return nil, err
	}
	return os.ReadFile(out.Name())
}

// goCommand runs the go command for wasip1 in dir and returns its output.
func goCommand(ctx context.Context, goBin, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go %s in %s failed: %v\n%s", args[0], dir, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}
