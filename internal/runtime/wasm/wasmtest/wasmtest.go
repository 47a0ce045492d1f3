// Package wasmtest builds Go programs into WebAssembly for tests, once per
// test binary: the examples and the misbehaving guest fixture.
package wasmtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// Packages that tests deploy, relative to the module root.
const (
	Hello = "examples/hello"
	Echo  = "examples/echo"
	Guest = "internal/runtime/wasm/testdata/guest"
)

var (
	once  sync.Once
	dir   string
	built error
)

// Build compiles Hello, Echo and Guest with GOOS=wasip1 GOARCH=wasm in one go
// command (the first call does; later calls return its result) and returns
// the path of the .wasm file of pkg.
func Build(pkg string) (string, error) {
	once.Do(func() { dir, built = buildAll(Hello, Echo, Guest) })
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

func buildAll(pkgs ...string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	out, err := os.MkdirTemp("", "gust-wasmtest-")
	if err != nil {
		return "", err
	}
	args := []string{"build", "-trimpath", "-o", out + string(filepath.Separator)}
	for _, p := range pkgs {
		args = append(args, "./"+p)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, msg)
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
