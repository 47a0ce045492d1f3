// Package cgi speaks the Common Gateway Interface (RFC 3875) to a guest: the
// environment a request becomes, and the parser for the response a guest
// writes back. The parser takes hostile input: it bounds sizes and rejects
// anything that could smuggle headers into Gust's own response.
package cgi

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/textproto"
	"sort"
	"strconv"
	"strings"

	"github.com/gust-faas/gust/internal/runtime"
)

// Limits of a guest's response header section.
const (
	MaxHeaderBytes = 64 << 10
	MaxHeaders     = 100
)

// Env returns the CGI meta-variables for req, as KEY=value pairs, sorted.
func Env(req *runtime.Request) []string {
	env := map[string]string{
		"GATEWAY_INTERFACE": "CGI/1.1",
		"SERVER_PROTOCOL":   "HTTP/1.1",
		"SERVER_SOFTWARE":   "gust",
		"REQUEST_METHOD":    req.Method,
		"SCRIPT_NAME":       "/fn/" + req.Tenant + "/" + req.Function,
		"PATH_INFO":         req.Path,
		"QUERY_STRING":      req.RawQuery,
		"REQUEST_URI":       "/fn/" + req.Tenant + "/" + req.Function + req.Path,
		"CONTENT_LENGTH":    strconv.Itoa(len(req.Body)),
		"REMOTE_ADDR":       req.RemoteAddr,
		"SERVER_NAME":       req.Host,
	}
	if req.RawQuery != "" {
		env["REQUEST_URI"] += "?" + req.RawQuery
	}
	if host, port, err := net.SplitHostPort(req.Host); err == nil {
		env["SERVER_NAME"], env["SERVER_PORT"] = host, port
	}
	if host, _, err := net.SplitHostPort(req.RemoteAddr); err == nil {
		env["REMOTE_ADDR"] = host
	}
	if req.Host != "" {
		env["HTTP_HOST"] = req.Host // as every web server sets it
	}
	if ct := req.Header.Get("Content-Type"); ct != "" {
		env["CONTENT_TYPE"] = ct
	}
	env["GUST_INVOCATION_ID"] = req.InvocationID
	if req.Source != "" {
		env["GUST_SOURCE_INVOCATION"] = req.Source
	}
	for name, values := range req.Header {
		if strings.Contains(name, "_") {
			// X_Forwarded_For would become the same variable as
			// X-Forwarded-For and could override what a proxy set; Apache
			// and nginx drop such headers too.
			continue
		}
		// What a function never sees: credentials meant for Gust, Gust's own
		// names, the connection's (hop-by-hop) headers; Proxy is httpoxy
		// (CVE-2016-5385). Content-Type and Host have their variables.
		if canonical := textproto.CanonicalMIMEHeaderKey(name); runtime.HiddenHeader(canonical) || canonical == "Content-Type" {
			continue
		}
		env["HTTP_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_"))] = strings.Join(values, ", ")
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+strings.ReplaceAll(v, "\x00", ""))
	}
	sort.Strings(out)
	return out
}

// ParseResponse parses a CGI response: header lines, a blank line, the body.
// Lines may end in "\n" or "\r\n". A Status header sets the status code (200
// if absent, 302 if only Location is given). Headers named X-Gust-* are
// Gust's own and are dropped, as are hop-by-hop headers and Content-Length,
// which, with no body, sets the response's HeadLength.
func ParseResponse(out []byte) (*runtime.Response, error) {
	head, body, err := split(out)
	if err != nil {
		return nil, err
	}
	lines := strings.Count(head, "\n") + 1
	if lines > MaxHeaders {
		return nil, fmt.Errorf("response has %d header lines, at most %d are allowed", lines, MaxHeaders)
	}
	// One allocation holds the response and, for a head of a few lines,
	// every header's values, as net/http's reader shares one array.
	r := new(response)
	values := r.values[:0]
	if lines > len(r.values) {
		values = make([]string, 0, lines)
	}
	resp := &r.Response
	*resp = runtime.Response{Status: http.StatusOK, Header: make(http.Header, lines), Body: body}
	statusSet := false
	for i := 0; head != ""; i++ {
		var line string
		line, head, _ = strings.Cut(head, "\n")
		line = strings.TrimSuffix(line, "\r")
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("response header line %d has no colon: %q", i+1, clip(line))
		}
		if !validName(name) {
			return nil, fmt.Errorf("response header line %d has an invalid name %q", i+1, clip(name))
		}
		value = strings.Trim(value, " \t")
		if !validValue(value) {
			return nil, fmt.Errorf("response header %s has a control character in its value", name)
		}
		name = http.CanonicalHeaderKey(name)
		switch {
		case name == "Status":
			code, err := parseStatus(value)
			if err != nil {
				return nil, err
			}
			resp.Status, statusSet = code, true
		case name == "Content-Length" && len(body) == 0:
			// No body: the answer to a HEAD, which declares the length of
			// the body a GET would have had. Gust sets its own.
			if n, err := strconv.ParseInt(value, 10, 64); err == nil && n >= 0 {
				resp.HeadLength = n
			}
		case runtime.DroppedResponseHeader(name):
			continue
		default:
			if vs, ok := resp.Header[name]; ok {
				resp.Header[name] = append(vs, value) // vs is full: this copies
				continue
			}
			values = append(values, value)
			resp.Header[name] = values[len(values)-1 : len(values) : len(values)]
		}
	}
	if !statusSet && resp.Header.Get("Location") != "" {
		resp.Status = http.StatusFound
	}
	return resp, nil
}

// response is a parsed response and the values of a few headers (most
// responses have two to four header lines).
type response struct {
	runtime.Response
	values [4]string
}

// split finds the blank line that ends the header section.
func split(out []byte) (string, []byte, error) {
	if len(out) == 0 {
		return "", nil, fmt.Errorf("response is empty: a CGI response starts with headers, such as \"Content-Type: text/plain\", and a blank line")
	}
	limit := min(len(out), MaxHeaderBytes+4)
	for i := 0; i < limit; i++ {
		if out[i] != '\n' {
			continue
		}
		if i == 0 || (i == 1 && out[0] == '\r') {
			return "", nil, fmt.Errorf("response has an empty header section: a CGI response needs at least a Content-Type or Status header")
		}
		rest := out[i+1:]
		var body []byte
		switch {
		case len(rest) > 0 && rest[0] == '\n':
			body = rest[1:]
		case len(rest) > 1 && rest[0] == '\r' && rest[1] == '\n':
			body = rest[2:]
		default:
			continue
		}
		head := string(out[:i])
		if len(strings.TrimSuffix(head, "\r")) > MaxHeaderBytes {
			return "", nil, fmt.Errorf("response header section is longer than %d bytes", MaxHeaderBytes)
		}
		return head, body, nil
	}
	if len(out) > MaxHeaderBytes {
		return "", nil, fmt.Errorf("response header section is longer than %d bytes", MaxHeaderBytes)
	}
	return "", nil, fmt.Errorf("response has no blank line after its headers (%d bytes of output)", len(out))
}

func parseStatus(v string) (int, error) {
	codeText, _, _ := strings.Cut(v, " ")
	code, err := strconv.Atoi(codeText)
	if err != nil || len(codeText) != 3 || code < 200 || code > 599 {
		return 0, fmt.Errorf("response Status %q is not a code from 200 to 599", clip(v))
	}
	return code, nil
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return false
		}
	}
	return true
}

func isTokenChar(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' ||
		strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func validValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

func clip(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return string(bytes.ToValidUTF8([]byte(s), []byte("\uFFFD")))
}
