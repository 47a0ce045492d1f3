package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gust-faas/gust/internal/httperror"
)

// client talks to a Gust server's API.
type client struct {
	base string
	http *http.Client
}

// serverFlag adds --server to fs and returns a function that makes the client.
func (e *env) serverFlag(fs *flag.FlagSet) func() (*client, error) {
	server := fs.String("server", "", "Gust server URL (default $GUST_URL, or "+DefaultServer+")")
	return func() (*client, error) {
		base := *server
		if base == "" {
			base = e.getenv("GUST_URL")
		}
		if base == "" {
			base = DefaultServer
		}
		u, err := url.Parse(base)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, usagef("server URL %q is not an http:// or https:// URL", base)
		}
		return &client{
			base: strings.TrimSuffix(u.String(), "/"),
			http: &http.Client{Transport: &http.Transport{
				Proxy:       http.ProxyFromEnvironment,
				DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			}},
		}, nil
	}
}

// apiError is an error answer from the server.
type apiError struct {
	Status  int
	Code    string
	Message string
	Stderr  string
}

func (e *apiError) Error() string {
	msg := fmt.Sprintf("%s (HTTP %d %s)", e.Message, e.Status, e.Code)
	if e.Stderr != "" {
		msg += "\nlast lines of the function's stderr:\n" + indent(e.Stderr)
	}
	return msg
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ")
}

// do sends a request and returns the response; a failure to connect becomes
// an error that says what to do about it.
func (c *client) do(req *http.Request) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		var opErr *net.OpError
		if errors.As(err, &opErr) && opErr.Op == "dial" {
			return nil, fmt.Errorf("cannot reach the Gust server at %s: %v\n(start one with 'gust server', or point --server or GUST_URL at one)", c.base, opErr.Err)
		}
		return nil, fmt.Errorf("request to %s failed: %w", c.base, err)
	}
	return resp, nil
}

// call sends a request to the API and decodes a JSON answer into out (if not
// nil). An error answer becomes an *apiError.
func (c *client) call(ctx context.Context, method, path string, body io.Reader, contentType string, out any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return 0, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("reading the answer from %s: %w", c.base, err)
	}
	if resp.StatusCode >= 400 {
		return resp.StatusCode, decodeError(resp, data)
	}
	if out != nil && resp.StatusCode != http.StatusNoContent {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("the server at %s answered something that is not Gust's JSON: %v", c.base, err)
		}
	}
	return resp.StatusCode, nil
}

// decodeError reads Gust's JSON error, or describes an answer that is not one.
func decodeError(resp *http.Response, data []byte) error {
	var body struct {
		Error *httperror.Error `json:"error"`
	}
	if err := json.Unmarshal(data, &body); err != nil || body.Error == nil {
		text := strings.TrimSpace(string(bytes.ToValidUTF8(data, nil)))
		if len(text) > 200 {
			text = text[:200] + "..."
		}
		return &apiError{Status: resp.StatusCode, Code: "unknown", Message: fmt.Sprintf("the server answered %s: %s", resp.Status, text)}
	}
	return &apiError{Status: resp.StatusCode, Code: body.Error.Code, Message: body.Error.Message, Stderr: body.Error.Stderr}
}
