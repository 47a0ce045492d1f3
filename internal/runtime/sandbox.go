package runtime

import (
	"context"
	"log/slog"
	"time"
)

// MaxLogLines bounds how many lines of output one invocation may log.
const MaxLogLines = 200

// Sandbox is one kind of sandbox: WebAssembly, or a Linux process.
type Sandbox interface {
	// Prepare makes an artifact ready to start instances (validate,
	// unpack, compile). The pool prepares each artifact once per node.
	// Failures are *Error of kind BadArtifact where the artifact is at
	// fault.
	Prepare(ctx context.Context, digest string, artifact []byte) (Prepared, error)
}

// Prepared is an artifact ready to run.
type Prepared interface {
	// Check reports whether instances can start under cfg: an artifact
	// that needs more memory than the limit fails with OutOfMemory, one
	// that cannot run as configured with BadArtifact.
	Check(cfg Config) error
	// Start makes one instance: the cold start.
	Start(ctx context.Context, cfg Config) (Instance, error)
	// Forget drops what the instances of owner (Config.Owner) share, a
	// snapshot of their start: the owner's version is gone, or its
	// secrets changed.
	Forget(owner string)
	// Close releases what Prepare made; instances are closed first.
	Close(ctx context.Context) error
}

// Instance is one started sandbox.
type Instance interface {
	// Invoke serves req under ctx's deadline; what the function writes to
	// its log goes to log. Failures are *Error; after one the instance is
	// dead and must be closed.
	Invoke(ctx context.Context, req *Request, log *slog.Logger) (*Response, error)
	// Reusable reports whether the instance may serve a request (another
	// one, once it served): one that runs a fresh program per request is
	// not once it served, one whose program died is not.
	Reusable() bool
	// Close stops the instance and everything it started. Calling it twice
	// is harmless.
	Close(ctx context.Context) error
}

// Config is what every instance of a function version shares.
type Config struct {
	// Env holds KEY=value pairs.
	Env    []string
	Limits Limits
	// Stderr is the log of a reusable instance; Invoke points it at each
	// invocation's logger in turn.
	Stderr *StderrLog
	// Owner names the function version the instances are of, one tenant's
	// (tenant, function, version and when it was deployed): a sandbox may
	// start an instance from the state another instance of the same owner
	// and Env reached when it started, and never from another owner's.
	// Empty: every instance starts afresh.
	Owner string
	// Process holds what only process sandboxes use.
	Process Process
}

// Protocols a process function speaks.
const (
	// ProtocolHTTP: the program serves HTTP on $PORT and stays up.
	ProtocolHTTP = "http"
	// ProtocolStdio: one process per request, the body on stdin and the
	// response on stdout.
	ProtocolStdio = "stdio"
)

// Process configures a process sandbox.
type Process struct {
	// Command is the program and its arguments, run in /var/task.
	Command  []string
	Protocol string
	// Network gives the sandbox the host's network instead of its own
	// loopback alone.
	Network bool
	// ContentType, for stdio, says the program writes raw bytes of this
	// type instead of a CGI response.
	ContentType string
	// InitTimeout bounds how long an http program may take to listen.
	InitTimeout time.Duration
	// Concurrency is how many requests an http program serves at once:
	// each Start up to that many returns a slot of the same program, with
	// a connection of its own.
	Concurrency int
}
