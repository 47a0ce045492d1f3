package wasm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/gust-faas/gust/internal/runtime"
	"github.com/tetratelabs/wazero"
)

// wazero's decoder sizes what it allocates by the counts a module states
// (of imports, segments, locals, bytes of a name...) before it reads the
// elements, so a module of fifteen bytes that states four billion data
// segments makes it allocate hundreds of gigabytes, and the Go runtime ends
// the whole server ("out of memory" cannot be recovered). Modules come from
// tenants, so Gust decodes each new one first in a child process (the Gust
// binary executed again as decodeCheckArg) whose address space is limited:
// a module that needs more to be decoded is refused, and the server stays
// up.

// decodeCheckArg is argv[1] of the child process that decodes a module.
const decodeCheckArg = "gust-wasm-decode-check"

// decodeCheckMemory bounds the child's address space: a Go runtime and the
// decoding of the largest artifact (64 MiB) fit in it with room to spare.
const decodeCheckMemory = 2 << 30

// decodeCheckTimeout bounds how long the child may take.
const decodeCheckTimeout = 2 * time.Minute

func init() {
	if len(os.Args) > 1 && os.Args[1] == decodeCheckArg {
		os.Exit(runDecodeCheck())
	}
}

// runDecodeCheck is the child: it reads a module on stdin, decodes and
// validates it with wazero's interpreter (the decoder and validator are
// the compiler's), and exits 0, or 1 with the reason on stderr. An
// allocation past its address space ends it otherwise.
func runDecodeCheck() int {
	limit := &syscall.Rlimit{Cur: decodeCheckMemory, Max: decodeCheckMemory}
	if err := syscall.Setrlimit(syscall.RLIMIT_AS, limit); err != nil {
		fmt.Fprintf(os.Stderr, "limit the address space: %v", err)
		return 3
	}
	module, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "read the module: %v", err)
		return 3
	}
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	if _, err := rt.CompileModule(ctx, module); err != nil {
		fmt.Fprint(os.Stderr, err)
		return 1
	}
	return 0
}

// decodeCheck decodes module in a child process. A module that is invalid,
// or that needs more than decodeCheckMemory to be decoded, is a
// runtime.BadArtifact error; another error says the check could not be
// made.
func decodeCheck(ctx context.Context, module []byte) error {
	ctx, cancel := context.WithTimeout(ctx, decodeCheckTimeout)
	defer cancel()
	// The running binary, even if the file was replaced since it started.
	cmd := exec.CommandContext(ctx, "/proc/self/exe", decodeCheckArg)
	cmd.Stdin = bytes.NewReader(module)
	var stderr bytes.Buffer
	cmd.Stderr = &limitedWriter{w: &stderr, n: 4 << 10}
	cmd.Env = []string{"GOMAXPROCS=1", "GOTRACEBACK=none"}
	err := cmd.Run()
	refused := func(why string) error {
		if len(why) > 300 {
			why = why[:300] + "..."
		}
		return runtime.Errorf(runtime.BadArtifact, "invalid WebAssembly module: %s", why)
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &exit) && exit.ExitCode() == 1:
		return refused(strings.TrimSpace(stderr.String()))
	case ctx.Err() != nil:
		return refused(fmt.Sprintf("decoding it took longer than %s", decodeCheckTimeout))
	case errors.As(err, &exit) && exit.ExitCode() != 3:
		// A fatal error of the Go runtime (exit 2), most often memory.
		return refused(fmt.Sprintf("decoding it needs more than %d MiB of memory, or crashed the decoder", decodeCheckMemory>>20))
	}
	return fmt.Errorf("wasm: decode check: %v: %s", err, strings.TrimSpace(stderr.String()))
}

// limitedWriter keeps the first n bytes written to it.
type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := min(len(p), l.n)
		l.w.Write(p[:k])
		l.n -= k
	}
	return len(p), nil
}
