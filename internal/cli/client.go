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
	key  string
	// tenant is the tenant an admin acts in (--tenant); empty: the key's.
	tenant string
	http   *http.Client
}

// clientFlags adds --server, --key and --tenant to fs and returns a function
// that makes the client once the flags are parsed.
func (e *env) clientFlags(fs *flag.FlagSet) func() (*client, error) {
	server := fs.String("server", "", "Gust server URL (default $GUST_URL, the one 'gust login' saved, or "+DefaultServer+")")
	key := fs.String("key", "", "API key (default $GUST_KEY, the one 'gust login' saved, or ./gust-data/admin.key)")
	tenantName := fs.String("tenant", "", "tenant to act in, for an admin key (default: the key's own)")
	return func() (*client, error) {
		saved, err := e.loadConfig()
		if err != nil {
			return nil, err
		}
		base := firstOf(*server, e.getenv("GUST_URL"), saved.Server, DefaultServer)
		token := firstOf(*key, e.getenv("GUST_KEY"))
		if token == "" && saved.Key != "" && (saved.Server == "" || saved.Server == base) {
			token = saved.Key
		}
		if token == "" {
			token = e.localAdminKey()
		}
		u, err := url.Parse(base)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, usagef("server URL %q is not an http:// or https:// URL", base)
		}
		return &client{
			base:   strings.TrimSuffix(u.String(), "/"),
			key:    token,
			tenant: *tenantName,
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
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
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
	if c.tenant != "" {
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		path += sep + "tenant=" + url.QueryEscape(c.tenant)
	}
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
	e := &apiError{Status: resp.StatusCode, Code: body.Error.Code, Message: body.Error.Message, Stderr: body.Error.Stderr}
	if resp.StatusCode == http.StatusUnauthorized {
		e.Message += "\n(give a key with --key or GUST_KEY, or save one with 'gust login')"
	}
	return e
}

// callJSON sends v as a JSON body.
func (c *client) callJSON(ctx context.Context, method, path string, v, out any) (int, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return 0, err
	}
	return c.call(ctx, method, path, bytes.NewReader(data), "application/json", out)
}

func firstOf(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}
