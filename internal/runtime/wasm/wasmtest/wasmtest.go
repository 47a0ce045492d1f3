// Package wasmtest builds Go programs into WebAssembly for tests, once per
// test binary: the examples and the misbehaving guest fixture.
package wasmtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// Packages that tests deploy, relative to the module root. Hello, Echo and
// Reactor use the Go SDK and build as reactors; HelloCGI and Guest are WASI
// command modules.
const (
	Hello    = "examples/hello"
	Echo     = "examples/echo"
	HelloCGI = "examples/hello-cgi"
	Guest    = "internal/runtime/wasm/testdata/guest"
	Reactor  = "internal/runtime/wasm/testdata/reactor"
)

var (
	once  sync.Once
	dir   string
	built error
)

// Build compiles every package above with GOOS=wasip1 GOARCH=wasm, in two go
// commands (the first call does; later calls return its result), and
// returns the path of the .wasm file of pkg.
func Build(pkg string) (string, error) {
	once.Do(func() { dir, built = buildAll() })
	if built != nil {
		return "", built
	}
	return filepath.Join(dir, filepath.Base(pkg)+".wasm"), nil
}

// MustRead returns the compiled module of pkg, or panics: for TestMain.
func MustRead(pkg string) []byte {
	path, err := Build(pkg)
	if err != nil {
		panic(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		panic(err)
	}
	return data
}

// ModuleRoot returns the directory holding go.mod.
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out))), nil
}

func buildAll() (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	out, err := os.MkdirTemp("", "gust-wasmtest-")
	if err != nil {
		return "", err
	}
	// -buildmode=c-shared takes one package per go command.
	builds := [][]string{
		{"-buildmode=c-shared", Hello},
		{"-buildmode=c-shared", Echo},
		{"-buildmode=c-shared", Reactor},
		{"", HelloCGI, Guest}, // the default build mode takes many
	}
	var (
		pkgs []string
		wg   sync.WaitGroup
		errs = make([]error, len(builds))
	)
	for i, b := range builds {
		args := []string{"build", "-trimpath", "-o", out + string(filepath.Separator)}
		if b[0] != "" {
			args = []string{"build", "-trimpath", b[0], "-o", filepath.Join(out, filepath.Base(b[1]))}
		}
		for _, p := range b[1:] {
			args = append(args, "./"+p)
			pkgs = append(pkgs, p)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command("go", args...)
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
			if msg, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, msg)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return "", err
	}
	for _, p := range pkgs {
		// go build -o dir/ names each binary after its package's directory.
		name := filepath.Join(out, filepath.Base(p))
		if err := os.Rename(name, name+".wasm"); err != nil {
			return "", err
		}
	}
	return out, nil
}
