// Package runtime is the contract between the pool and every kind of sandbox:
// a neutral request and response, and the typed errors a sandbox reports.
package runtime

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Request is one invocation, free of HTTP routing.
type Request struct {
	Method string
	// Path is the part of the URL path after the function's name, with a
	// leading slash ("/" when empty). RawPath, if set, is Path as the client
	// escaped it, which keeps a %2F within a segment apart from a slash.
	Path     string
	RawPath  string
	RawQuery string
	Header   http.Header
	Body     []byte
	// RemoteAddr and Host come from the HTTP request, for CGI's variables.
	RemoteAddr string
	Host       string

	InvocationID string
	// Source is the invocation whose destination this one is, if any: the
	// function sees it as X-Gust-Source-Invocation (GUST_SOURCE_INVOCATION
	// under CGI). Like the invocation id it is Gust's to set, never the
	// caller's.
	Source   string
	Tenant   string
	Function string
	Version  int
}

// Response is what a function answered.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
	// HeadLength, for a HEAD request, is the length of the body that a GET
	// would have had, as the function declared it in a Content-Length it
	// sent without the body; 0 if it declared none.
	HeadLength int64
}

// HiddenHeader reports whether a request header is one a function never
// sees: credentials meant for Gust, Gust's own, and those that describe the
// connection.
func HiddenHeader(name string) bool {
	switch name {
	case "Authorization", "Proxy", "Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer",
		"Transfer-Encoding", "Upgrade", "Content-Length", "Host", "Expect":
		return true
	}
	return strings.HasPrefix(name, "X-Gust-")
}

// VisibleHeader returns the headers of h that a function sees: what Gust
// keeps of a request for later, such as a queued invocation, keeps no
// credentials meant for Gust. The values are shared with h.
func VisibleHeader(h http.Header) http.Header {
	out := make(http.Header, len(h))
	for k, vs := range h {
		if !HiddenHeader(k) {
			out[k] = vs
		}
	}
	return out
}

// hopByHop headers describe one connection, not a response; Content-Length
// is Gust's to compute.
var hopByHop = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true,
	"Transfer-Encoding": true, "Upgrade": true, "Te": true, "Trailer": true,
	"Content-Length": true,
}

// DroppedResponseHeader reports whether a header of a function's response
// is not the function's to set: hop-by-hop headers, and Gust's own
// (X-Gust-*). Every sandbox drops them.
func DroppedResponseHeader(name string) bool {
	return hopByHop[name] || strings.HasPrefix(name, "X-Gust-")
}

// EscapedPath returns r's path as a request line carries it: as the
// client escaped it, where RawPath is a valid escaping of Path, else
// escaped anew. It holds no space or control byte.
func (r *Request) EscapedPath() string {
	p := r.Path
	if p == "" || p[0] != '/' {
		p = "/" + p
	}
	return (&url.URL{Path: p, RawPath: r.RawPath}).EscapedPath()
}

// EscapeControls percent-encodes spaces, control bytes and non-ASCII in
// s, which then fits a request line or a line of the wasm host ABI.
func EscapeControls(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			var b strings.Builder
			for j := 0; j < len(s); j++ {
				if c := s[j]; c <= ' ' || c >= 0x7f {
					fmt.Fprintf(&b, "%%%02X", c)
				} else {
					b.WriteByte(c)
				}
			}
			return b.String()
		}
	}
	return s
}

// Kind says why an invocation failed.
type Kind int

const (
	// Crashed: the guest trapped or exited non-zero.
	Crashed Kind = iota + 1
	// Timeout: the guest ran past its deadline and was stopped.
	Timeout
	// OutOfMemory: the guest needed more memory than its limit.
	OutOfMemory
	// BadResponse: the guest's output is not a valid response.
	BadResponse
	// BadArtifact: the artifact cannot run in this sandbox.
	BadArtifact
)

func (k Kind) String() string {
	switch k {
	case Crashed:
		return "crashed"
	case Timeout:
		return "timeout"
	case OutOfMemory:
		return "out of memory"
	case BadResponse:
		return "bad response"
	case BadArtifact:
		return "bad artifact"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Error is a sandbox failure. Message is safe to show the function's
// developer; Stderr holds the last lines the guest wrote to stderr.
type Error struct {
	Kind    Kind
	Message string
	Stderr  string
	Err     error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Kind.String() + ": " + e.Message + ": " + e.Err.Error()
	}
	return e.Kind.String() + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Is makes a Timeout match context.DeadlineExceeded.
func (e *Error) Is(target error) bool {
	return e.Kind == Timeout && target == context.DeadlineExceeded
}

// Errorf returns an *Error of kind k.
func Errorf(k Kind, format string, args ...any) *Error {
	return &Error{Kind: k, Message: fmt.Sprintf(format, args...)}
}

// KindOf returns the Kind of err's *Error, or 0.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return 0
}

// Limits bound one invocation. The deadline comes from the context.
type Limits struct {
	MemoryBytes uint64
	// MaxOutputBytes bounds everything the guest writes as its response.
	MaxOutputBytes int
}

// StderrLog is an io.Writer for a guest's stderr: it logs each line (at most
// maxLines lines of maxLine bytes each, so a guest cannot flood the log) and
// keeps the last tailBytes for an error message.
type StderrLog struct {
	log      *slog.Logger
	mu       sync.Mutex
	partial  []byte
	tail     []byte
	lines    int
	maxLines int
}

const (
	maxLine   = 1024
	tailBytes = 2048
)

// NewStderrLog returns a StderrLog that writes at most maxLines lines to log.
func NewStderrLog(log *slog.Logger, maxLines int) *StderrLog {
	return &StderrLog{log: log, maxLines: maxLines}
}

// Write implements io.Writer; it never fails.
func (s *StderrLog) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tail = append(s.tail, p...)
	if len(s.tail) > 2*tailBytes {
		s.tail = append(s.tail[:0], s.tail[len(s.tail)-tailBytes:]...)
	}
	s.partial = append(s.partial, p...)
	for {
		i := bytes.IndexByte(s.partial, '\n')
		if i < 0 {
			if len(s.partial) > maxLine {
				s.emit(s.partial[:maxLine])
				s.partial = s.partial[:0]
			}
			return len(p), nil
		}
		s.emit(s.partial[:i])
		s.partial = s.partial[i+1:]
	}
}

func (s *StderrLog) emit(line []byte) {
	s.lines++
	switch {
	case s.lines <= s.maxLines:
		if len(line) > maxLine {
			line = line[:maxLine]
		}
		s.log.Info(strings.ToValidUTF8(string(line), "\uFFFD"), "stream", "stderr")
	case s.lines == s.maxLines+1:
		s.log.Warn("further stderr lines of this invocation are not logged", "stream", "stderr")
	}
}

// Begin starts a new invocation on a warm instance's StderrLog: its lines go
// to log, and the tail and line count start afresh.
func (s *StderrLog) Begin(log *slog.Logger) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log, s.tail, s.partial, s.lines = log, s.tail[:0], s.partial[:0], 0
}

// Flush logs a last line that had no newline.
func (s *StderrLog) Flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.partial) > 0 {
		s.emit(s.partial)
		s.partial = nil
	}
}

// Tail returns the last lines written, at most about tailBytes, whole lines
// where possible.
func (s *StderrLog) Tail() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tail
	if len(t) > tailBytes {
		t = t[len(t)-tailBytes:]
		if i := bytes.IndexByte(t, '\n'); i >= 0 && i < len(t)-1 {
			t = t[i+1:]
		}
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(t))
	sc.Buffer(make([]byte, 0, tailBytes), tailBytes*2)
	for sc.Scan() {
		lines = append(lines, strings.ToValidUTF8(sc.Text(), "\uFFFD"))
	}
	return strings.Join(lines, "\n")
}

// SleepUntilDone sleeps for d or until ctx is done, whichever is first: a
// guest's sleep must not outlive its deadline.
func SleepUntilDone(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
