package process

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/gust-faas/gust/internal/cgi"
	"github.com/gust-faas/gust/internal/runtime"
	"github.com/gust-faas/gust/internal/runtime/process/initproc"
)

// stdioInstance is a sandbox whose init runs the program once per request,
// as Lambda reuses an execution environment: the body on the program's
// stdin, the response from its stdout. After each run every process the
// run left is killed; /tmp stays, as the instance's scratch space.
type stdioInstance struct {
	sb          *sandbox
	results     *bufio.Reader // the init's Results, a JSON line each, on its status pipe
	stderr      *runtime.StderrLog
	limits      runtime.Limits
	contentType string
	dead        bool
}

func (p *prepared) startStdio(ctx context.Context, cfg runtime.Config) (runtime.Instance, error) {
	cfg.Env = programEnv(cfg.Env)
	sb, err := p.r.start(ctx, p.dir, cfg, startOptions{output: cfg.Stderr, serve: true})
	if err != nil {
		return nil, err
	}
	return &stdioInstance{sb: sb, results: bufio.NewReaderSize(sb.status, maxResultBytes), stderr: cfg.Stderr, limits: cfg.Limits, contentType: cfg.Process.ContentType}, nil
}

// pipes makes the three pipes of one run: the init gets stdin's read end
// and the write ends of the others.
func pipes() (mine, theirs [3]*os.File, err error) {
	for i := range 3 {
		r, w, err := os.Pipe()
		if err != nil {
			closeAll(mine[:i])
			closeAll(theirs[:i])
			return mine, theirs, err
		}
		if i == 0 {
			mine[i], theirs[i] = w, r
		} else {
			mine[i], theirs[i] = r, w
		}
	}
	return mine, theirs, nil
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

func (s *stdioInstance) Invoke(ctx context.Context, req *runtime.Request, log *slog.Logger) (*runtime.Response, error) {
	s.stderr.Begin(log)
	mine, theirs, err := pipes()
	if err != nil {
		return nil, s.fail(err)
	}
	defer closeAll(mine[:])
	oomBefore := s.sb.cg.oomKills()
	err = json.NewEncoder(s.sb.control).Encode(initproc.Request{Env: cgi.Env(req)})
	if err == nil {
		rights := unix.UnixRights(int(theirs[0].Fd()), int(theirs[1].Fd()), int(theirs[2].Fd()))
		err = unix.Sendmsg(int(s.sb.pass.Fd()), []byte{0}, rights, nil, 0)
	}
	closeAll(theirs[:])
	if err != nil {
		return nil, s.fail(err)
	}
	go func() {
		mine[0].Write(req.Body) // a program that does not read its body closes the pipe: EPIPE
		mine[0].Close()
	}()
	logged := make(chan struct{})
	go func() {
		io.Copy(s.stderr, mine[2])
		close(logged)
	}()
	limit := s.limits.MaxOutputBytes
	if s.contentType == "" {
		limit += cgi.MaxHeaderBytes
	}
	type output struct {
		out []byte
		err error
		res initproc.Result
	}
	done := make(chan output, 1)
	go func() {
		out, _ := io.ReadAll(io.LimitReader(mine[1], int64(limit)+1))
		if len(out) > limit {
			done <- output{out: out}
			return
		}
		var res initproc.Result
		err := s.readResult(&res)
		<-logged
		done <- output{out: out, err: err, res: res}
	}()
	var o output
	select {
	case o = <-done:
	case <-ctx.Done():
		s.kill()
		return nil, &runtime.Error{Kind: runtime.Timeout, Message: "the function did not finish before its deadline", Stderr: tail(s.stderr)}
	}
	if len(o.out) > limit {
		s.kill()
		return nil, runtime.Errorf(runtime.BadResponse, "response is larger than %d bytes", s.limits.MaxOutputBytes)
	}
	if o.err != nil {
		if !errors.Is(o.err, io.EOF) {
			// Not a Result: the init is not to be trusted any more.
			s.kill()
			return nil, &runtime.Error{Kind: runtime.Crashed, Message: "the sandbox's init answered what is not a result", Err: o.err}
		}
		// The init itself ended: killed by the OOM killer, or by a signal
		// the program sent it.
		s.dead = true
		return nil, s.sb.failure(s.stderr, "the sandbox's init, mid-request,")
	}
	s.stderr.Flush()
	if s.sb.cg.oomKills() > oomBefore {
		s.dead = true // the OOM killer may have chosen the init
		return nil, &runtime.Error{Kind: runtime.OutOfMemory, Message: "the function ran out of memory and was killed", Stderr: tail(s.stderr)}
	}
	switch res := o.res; {
	case res.Error != "":
		return nil, &runtime.Error{Kind: runtime.Crashed, Message: res.Error, Stderr: tail(s.stderr)}
	case res.Signal != 0 || res.Exit != 0:
		return nil, &runtime.Error{Kind: runtime.Crashed, Message: ended(program, syscall.Signal(res.Signal), res.Exit), Stderr: tail(s.stderr)}
	}
	if s.contentType != "" {
		return &runtime.Response{Status: http.StatusOK, Header: http.Header{"Content-Type": {s.contentType}}, Body: slices.Clip(o.out)}, nil
	}
	resp, err := cgi.ParseResponse(o.out)
	if err != nil {
		return nil, &runtime.Error{Kind: runtime.BadResponse, Message: err.Error(), Stderr: tail(s.stderr)}
	}
	return resp, nil
}

// maxResultBytes bounds one Result line from the init.
const maxResultBytes = 4096

// readResult reads the init's next Result: one line, of bounded length.
func (s *stdioInstance) readResult(res *initproc.Result) error {
	line, err := s.results.ReadSlice('\n')
	if err != nil {
		return err
	}
	return json.Unmarshal(line, res)
}

// fail reports a failure to hand a request to the sandbox.
func (s *stdioInstance) fail(err error) error {
	s.kill()
	return &runtime.Error{Kind: runtime.Crashed, Message: "cannot hand the request to the sandbox", Err: err}
}

func (s *stdioInstance) kill() {
	s.dead = true
	s.sb.close()
}

func (s *stdioInstance) Reusable() bool { return !s.dead && !s.sb.exited() }

func (s *stdioInstance) Close(context.Context) error {
	s.kill()
	return nil
}
