package process

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"

	"github.com/gust-faas/gust/internal/cgi"
	"github.com/gust-faas/gust/internal/runtime"
)

// stdioInstance is a sandbox built ahead of its one request: the program
// starts when the request comes, reads the body on stdin and writes the
// response on stdout.
type stdioInstance struct {
	sb          *sandbox
	stdin       *os.File // write end
	stdout      *os.File // read end
	stderr      *runtime.StderrLog
	limits      runtime.Limits
	contentType string
}

func (p *prepared) startStdio(ctx context.Context, cfg runtime.Config) (runtime.Instance, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	cfg.Env = programEnv(cfg.Env)
	sb, err := p.r.start(ctx, p.dir, cfg, startIO{stdin: inR, stdout: outW, stderr: cfg.Stderr}, false)
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, err
	}
	return &stdioInstance{sb: sb, stdin: inW, stdout: outR, stderr: cfg.Stderr, limits: cfg.Limits, contentType: cfg.Process.ContentType}, nil
}

func (s *stdioInstance) Invoke(ctx context.Context, req *runtime.Request, log *slog.Logger) (*runtime.Response, error) {
	s.stderr.Begin(log)
	env := append(cgi.Env(req), "GUST_INVOCATION_ID="+req.InvocationID)
	if err := s.sb.exec(ctx, env); err != nil {
		return nil, err
	}
	go func() {
		s.stdin.Write(req.Body) // a program that does not read its body closes the pipe: EPIPE
		s.stdin.Close()
	}()
	limit := s.limits.MaxOutputBytes
	if s.contentType == "" {
		limit += cgi.MaxHeaderBytes
	}
	type result struct {
		out      []byte
		overflow bool
	}
	read := make(chan result, 1)
	go func() {
		out, _ := io.ReadAll(io.LimitReader(s.stdout, int64(limit)+1))
		read <- result{out: out, overflow: len(out) > limit}
	}()
	var res result
	select {
	case res = <-read:
	case <-ctx.Done():
		s.sb.close()
		return nil, &runtime.Error{Kind: runtime.Timeout, Message: "the function did not finish before its deadline", Stderr: tail(s.stderr)}
	}
	if res.overflow {
		s.sb.close()
		return nil, runtime.Errorf(runtime.BadResponse, "response is larger than %d bytes", s.limits.MaxOutputBytes)
	}
	select {
	case <-s.sb.done:
	case <-ctx.Done():
		s.sb.close()
		return nil, &runtime.Error{Kind: runtime.Timeout, Message: "the function did not exit before its deadline", Stderr: tail(s.stderr)}
	}
	s.stderr.Flush()
	if s.sb.err != nil {
		return nil, s.sb.failure(s.stderr)
	}
	if s.contentType != "" {
		return &runtime.Response{Status: http.StatusOK, Header: http.Header{"Content-Type": {s.contentType}}, Body: slices.Clip(res.out)}, nil
	}
	resp, err := cgi.ParseResponse(res.out)
	if err != nil {
		return nil, &runtime.Error{Kind: runtime.BadResponse, Message: err.Error(), Stderr: tail(s.stderr)}
	}
	return resp, nil
}

func (s *stdioInstance) Reusable() bool { return false }

// WantSpare implements runtime.Spared: the next request finds its sandbox
// built.
func (s *stdioInstance) WantSpare() bool { return true }

func (s *stdioInstance) Close(context.Context) error {
	s.sb.close()
	s.stdin.Close()
	s.stdout.Close()
	return nil
}
