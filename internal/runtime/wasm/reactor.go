package wasm

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/gust-faas/gust/internal/cgi"
	"github.com/gust-faas/gust/internal/runtime"
)

// Kind is how a module serves requests, found from its exports.
type Kind int

const (
	// Command is a WASI command (exports _start): a fresh instance runs
	// for each request, as CGI.
	Command Kind = iota + 1
	// Reactor is built with the Go SDK or anything that speaks the host ABI
	// of docs/abi.md (exports _initialize, gust_start and gust_handle): an
	// instance stays warm and serves request after request.
	Reactor
)

func (k Kind) String() string {
	switch k {
	case Command:
		return "command"
	case Reactor:
		return "reactor"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// The host ABI: the module Gust provides to reactors, and their exports.
const (
	hostModule   = "gust"
	exportStart  = "gust_start"
	exportHandle = "gust_handle"
)

// callState is what the host functions of one call work on. It travels in
// the call's context.
type callState struct {
	head     []byte
	body     []byte
	bodyRead int
	out      cappedBuffer
}

type callKey struct{}

func stateOf(ctx context.Context) *callState {
	st, _ := ctx.Value(callKey{}).(*callState)
	return st
}

// callContext is the context of a call to an instance: the request's,
// with the call's state. An instance serves one call at a time, and keeps
// one callContext for all of them: context.WithValue would allocate on
// every request.
type callContext struct {
	context.Context
	state callState
}

func (c *callContext) Value(key any) any {
	if key == (callKey{}) {
		return &c.state
	}
	return c.Context.Value(key)
}

// instantiateHost defines the gust host module in rt.
func instantiateHost(ctx context.Context, rt wazero.Runtime) (map[string]bool, error) {
	i32 := api.ValueTypeI32
	b := rt.NewHostModuleBuilder(hostModule)
	b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(requestHead), []api.ValueType{i32, i32}, []api.ValueType{i32}).Export("request_head")
	b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(requestBodyRead), []api.ValueType{i32, i32}, []api.ValueType{i32}).Export("request_body_read")
	b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(responseWrite), []api.ValueType{i32, i32}, []api.ValueType{i32}).Export("response_write")
	if _, err := b.Instantiate(ctx); err != nil {
		return nil, err
	}
	return map[string]bool{"request_head": true, "request_body_read": true, "response_write": true}, nil
}

// request_head(buf, cap) -> len: copies the request head if it fits in cap
// bytes; returns its length either way.
func requestHead(ctx context.Context, mod api.Module, stack []uint64) {
	st := stateOf(ctx)
	ptr, capacity := api.DecodeU32(stack[0]), api.DecodeU32(stack[1])
	if st == nil {
		stack[0] = 0
		return
	}
	if uint32(len(st.head)) <= capacity && !mod.Memory().Write(ptr, st.head) {
		panic(errors.New("request_head: buffer outside memory"))
	}
	stack[0] = uint64(len(st.head))
}

// request_body_read(buf, cap) -> n: copies the next n <= cap bytes of the
// body; 0 at its end.
func requestBodyRead(ctx context.Context, mod api.Module, stack []uint64) {
	st := stateOf(ctx)
	ptr, capacity := api.DecodeU32(stack[0]), api.DecodeU32(stack[1])
	if st == nil {
		stack[0] = 0
		return
	}
	chunk := st.body[st.bodyRead:]
	chunk = chunk[:min(len(chunk), int(capacity))]
	if !mod.Memory().Write(ptr, chunk) {
		panic(errors.New("request_body_read: buffer outside memory"))
	}
	st.bodyRead += len(chunk)
	stack[0] = uint64(len(chunk))
}

// response_write(buf, len) -> 0, or -1 once the response is over its limit.
func responseWrite(ctx context.Context, mod api.Module, stack []uint64) {
	st := stateOf(ctx)
	ptr, n := api.DecodeU32(stack[0]), api.DecodeU32(stack[1])
	if st == nil {
		stack[0] = api.EncodeI32(-1)
		return
	}
	data, ok := mod.Memory().Read(ptr, n)
	if !ok {
		panic(errors.New("response_write: buffer outside memory"))
	}
	if _, err := st.out.Write(data); err != nil {
		stack[0] = api.EncodeI32(-1)
		return
	}
	stack[0] = 0
}

// renderHead renders req's head in the ABI's format (docs/abi.md): lines
// ending in "\n": the method, the escaped path, the raw query, the host,
// the remote address, the invocation id, then one "Name: value" line per
// header value, and X-Gust-Source-Invocation for a destination's
// invocation. Header values cannot hold a newline (net/http refuses them);
// a value that does anyway is left out.
func renderHead(req *runtime.Request) []byte {
	n := len(req.Method) + len(req.Path) + len(req.RawQuery) + len(req.Host) + len(req.RemoteAddr) + len(req.InvocationID) + 40
	if req.Source != "" {
		n += len(sourceHeader) + len(req.Source)
	}
	for name, values := range req.Header {
		for _, v := range values {
			n += len(name) + len(v) + 3
		}
	}
	b := make([]byte, 0, n)
	for i, s := range []string{req.Method, req.Path, req.RawQuery, req.Host, req.RemoteAddr, req.InvocationID} {
		if i == 1 {
			s = req.EscapedPath() // which leaves no control byte
		} else {
			s = runtime.EscapeControls(s)
		}
		b = append(append(b, s...), '\n')
	}
	b = append(append(append(b, "Content-Length: "...), strconv.Itoa(len(req.Body))...), '\n')
	for name, values := range req.Header {
		if runtime.HiddenHeader(name) {
			continue
		}
		for _, v := range values {
			if strings.ContainsAny(name, "\n:") || strings.ContainsRune(v, '\n') {
				continue
			}
			b = append(append(append(append(b, name...), ": "...), v...), '\n')
		}
	}
	if req.Source != "" {
		b = append(append(append(b, sourceHeader...), runtime.EscapeControls(req.Source)...), '\n')
	}
	return b
}

const sourceHeader = "X-Gust-Source-Invocation: "

// Instance is one warm reactor instance. It serves one request at a time;
// after a failure it is dead and must be closed.
type Instance struct {
	mod     api.Module
	handle  api.Function // kept: each lookup makes a call engine with its own stack
	mem     *limitedMemory
	stderr  *runtime.StderrLog
	limits  runtime.Limits
	yielder *yielder
	call    callContext // the current call's
}

// InstanceConfig is what every request of an instance shares.
type InstanceConfig struct {
	// Env holds KEY=value pairs.
	Env    []string
	Limits runtime.Limits
	// Stderr receives the guest's stdout and stderr; Invoke points it at
	// each invocation's logger in turn. Required.
	Stderr *runtime.StderrLog
	// Owner names whose instances these are (runtime.Config.Owner):
	// instances of one owner, environment and limits start from a
	// snapshot of the first (see snapshot.go). Empty: each starts in full.
	Owner string
}

// Start makes a warm instance of a reactor module: instantiate, run
// _initialize and gust_start. This is the cold start.
func (m *Module) Start(ctx context.Context, cfg InstanceConfig) (*Instance, error) {
	if m.kind != Reactor {
		return nil, fmt.Errorf("wasm: Start needs a reactor module, this one is a %s", m.kind)
	}
	if err := m.CheckMemory(cfg.Limits.MemoryBytes); err != nil {
		return nil, err
	}
	mem := &limitedMemory{limit: cfg.Limits.MemoryBytes, spares: m.rt.spares}
	y := newYielder(ctx)
	mc := wazero.NewModuleConfig().
		WithName("").
		WithStartFunctions(). // called below, under the interrupt
		WithStdout(cfg.Stderr).
		WithStderr(cfg.Stderr).
		WithSysWalltime().
		WithSysNanotime().
		WithRandSource(rand.Reader).
		WithOsyield(y.yield).
		WithNanosleep(y.sleep)
	for _, kv := range cfg.Env {
		k, v, _ := strings.Cut(kv, "=")
		mc = mc.WithEnv(k, v)
	}
	var (
		key    snapshotKey
		snap   *snapshot
		wanted bool // a snapshot of this start is wanted
		mod    api.Module
		err    error
	)
	if m.snapshots != nil && cfg.Owner != "" {
		key = keyOf(cfg)
		snap, wanted = m.snapshots.find(key)
		if wanted {
			defer m.snapshots.settled(key) // taken or not, the next start may
		}
	}
	if snap != nil {
		mod, err = m.restore(ctx, mem, mc, snap) // neither, if snap did not fit
	}
	if mod == nil && err == nil {
		mod, err = m.instantiate(ctx, mem, mc)
		if err == nil {
			err = call(ctx, mod, "_initialize")
		}
		if err == nil {
			err = call(ctx, mod, exportStart)
		}
		if err == nil && wanted {
			m.snapshots.take(key, mod)
		}
	}
	if err != nil {
		if mod != nil {
			mod.Close(context.WithoutCancel(ctx))
		}
		cfg.Stderr.Flush()
		if cerr := classify(ctx, err, mem, cfg.Stderr); cerr != nil {
			return nil, cerr
		}
		return nil, runtime.Errorf(runtime.Crashed, "exited while starting")
	}
	return &Instance{mod: mod, handle: mod.ExportedFunction(exportHandle), mem: mem, stderr: cfg.Stderr, limits: cfg.Limits, yielder: y}, nil
}

// Invoke serves req on the instance under ctx's deadline; what the guest
// writes to stdout and stderr goes to log. Failures are *runtime.Error;
// after one, the instance is dead.
func (i *Instance) Invoke(ctx context.Context, req *runtime.Request, log *slog.Logger) (*runtime.Response, error) {
	if i.mod.IsClosed() {
		// Its memory may be another instance's by now.
		return nil, runtime.Errorf(runtime.Crashed, "instance has exited")
	}
	i.stderr.Begin(log)
	i.yielder.set(ctx)
	call := &i.call
	call.Context = ctx
	call.state = callState{head: renderHead(req), body: req.Body, out: cappedBuffer{max: i.limits.MaxOutputBytes + cgi.MaxHeaderBytes}}
	// The response's body is the output buffer's: the next call's state
	// starts a buffer of its own. What this call held is let go.
	defer func() { call.Context, call.state = nil, callState{} }()
	_, err := i.handle.Call(call)
	i.stderr.Flush()
	if err := classify(ctx, err, i.mem, i.stderr); err != nil {
		return nil, err
	}
	if err != nil {
		// An exit with code 0: a warm instance must not exit, and this one
		// is closed, whatever it wrote.
		return nil, &runtime.Error{Kind: runtime.Crashed, Message: "exited with code 0 while serving a request (a reactor's instance must stay up)", Stderr: i.stderr.Tail()}
	}
	return parseOutput(&call.state.out, i.limits.MaxOutputBytes, i.stderr)
}

// Close closes the instance. Calling it twice is harmless.
func (i *Instance) Close(ctx context.Context) error { return i.mod.Close(ctx) }
