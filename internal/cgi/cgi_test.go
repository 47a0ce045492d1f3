package cgi_test

import (
	"bytes"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/gust-faas/gust/internal/cgi"
	"github.com/gust-faas/gust/internal/runtime"
)

// responseTest is one guest output and what ParseResponse makes of it: either
// a response (status, headers, body) or an error whose message contains every
// string in wantErr.
type responseTest struct {
	name       string
	in         string
	wantStatus int
	wantHeader http.Header
	wantBody   string
	wantErr    []string
}

// lines returns n header lines "X-H: v" joined by "\n", without the blank line.
func lines(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString("X-H: v")
	}
	return b.String()
}

// longHeader returns a header line "X-Long: aaa..." of exactly n bytes.
func longHeader(n int) string {
	const prefix = "X-Long: "
	return prefix + strings.Repeat("a", n-len(prefix))
}

var responseTests = []responseTest{
	// Valid responses.
	{
		name:       "LF line endings",
		in:         "Content-Type: text/plain\n\nhello",
		wantStatus: 200,
		wantHeader: http.Header{"Content-Type": {"text/plain"}},
		wantBody:   "hello",
	},
	{
		name:       "CRLF line endings",
		in:         "Content-Type: text/plain\r\nX-A: b\r\n\r\nhello\r\n",
		wantStatus: 200,
		wantHeader: http.Header{"Content-Type": {"text/plain"}, "X-A": {"b"}},
		wantBody:   "hello\r\n",
	},
	{
		name:       "CRLF headers, LF blank line",
		in:         "Content-Type: text/plain\r\n\nhello",
		wantStatus: 200,
		wantHeader: http.Header{"Content-Type": {"text/plain"}},
		wantBody:   "hello",
	},
	{
		name:       "LF headers, CRLF blank line",
		in:         "Content-Type: text/plain\n\r\nhello",
		wantStatus: 200,
		wantHeader: http.Header{"Content-Type": {"text/plain"}},
		wantBody:   "hello",
	},
	{
		name:       "empty body",
		in:         "Content-Type: text/plain\n\n",
		wantStatus: 200,
		wantHeader: http.Header{"Content-Type": {"text/plain"}},
		wantBody:   "",
	},
	{
		name:       "status with reason",
		in:         "Status: 404 Not Found\nContent-Type: text/plain\n\nno such thing",
		wantStatus: 404,
		wantHeader: http.Header{"Content-Type": {"text/plain"}},
		wantBody:   "no such thing",
	},
	{
		name:       "status without reason",
		in:         "Status: 201\r\n\r\n",
		wantStatus: 201,
		wantHeader: http.Header{},
	},
	{
		name:       "status lowest",
		in:         "Status: 200\n\n",
		wantStatus: 200,
		wantHeader: http.Header{},
	},
	{
		name:       "status highest",
		in:         "Status: 599 Whatever\n\n",
		wantStatus: 599,
		wantHeader: http.Header{},
	},
	{
		name:       "status name in lower case",
		in:         "status: 503\n\n",
		wantStatus: 503,
		wantHeader: http.Header{},
	},
	{
		name:       "last status wins",
		in:         "Status: 500\nStatus: 202\n\n",
		wantStatus: 202,
		wantHeader: http.Header{},
	},
	{
		name:       "location only gives 302",
		in:         "Location: https://example.com/\n\n",
		wantStatus: 302,
		wantHeader: http.Header{"Location": {"https://example.com/"}},
	},
	{
		name:       "location with status keeps status",
		in:         "Status: 301 Moved Permanently\nLocation: /new\n\n",
		wantStatus: 301,
		wantHeader: http.Header{"Location": {"/new"}},
	},
	{
		name:       "location with explicit 200",
		in:         "Location: /new\nStatus: 200\n\n",
		wantStatus: 200,
		wantHeader: http.Header{"Location": {"/new"}},
	},
	{
		name:       "body with blank lines preserved byte for byte",
		in:         "Content-Type: text/plain\n\nline 1\n\nline 3\r\n\r\n\n\x00\xff end\r",
		wantStatus: 200,
		wantHeader: http.Header{"Content-Type": {"text/plain"}},
		wantBody:   "line 1\n\nline 3\r\n\r\n\n\x00\xff end\r",
	},
	{
		name:       "body that looks like headers",
		in:         "Content-Type: text/plain\n\nStatus: 500\nX-Gust-Tenant: evil\n\n",
		wantStatus: 200,
		wantHeader: http.Header{"Content-Type": {"text/plain"}},
		wantBody:   "Status: 500\nX-Gust-Tenant: evil\n\n",
	},
	{
		name:       "repeated headers",
		in:         "Set-Cookie: a=1\nSet-Cookie: b=2\nset-cookie: c=3\n\n",
		wantStatus: 200,
		wantHeader: http.Header{"Set-Cookie": {"a=1", "b=2", "c=3"}},
	},
	{
		name:       "names canonicalized",
		in:         "content-type: text/html\nX-REQUEST-ID: 7\n\n",
		wantStatus: 200,
		wantHeader: http.Header{"Content-Type": {"text/html"}, "X-Request-Id": {"7"}},
	},
	{
		name:       "value whitespace trimmed, inner tab kept",
		in:         "X-A: \t a\tb \t\nX-B:c\n\n",
		wantStatus: 200,
		wantHeader: http.Header{"X-A": {"a\tb"}, "X-B": {"c"}},
	},
	{
		name:       "empty value",
		in:         "X-Empty:\n\n",
		wantStatus: 200,
		wantHeader: http.Header{"X-Empty": {""}},
	},
	{
		name:       "value with colon and non-ASCII",
		in:         "X-Url: http://h:8080/é\n\n",
		wantStatus: 200,
		wantHeader: http.Header{"X-Url": {"http://h:8080/é"}},
	},
	{
		name:       "token characters in name",
		in:         "X!#$%&'*+-.^_`|~9: v\n\n",
		wantStatus: 200,
		wantHeader: http.Header{"X!#$%&'*+-.^_`|~9": {"v"}},
	},
	{
		name: "X-Gust and hop-by-hop headers dropped",
		in: "Content-Type: text/plain\n" +
			"X-Gust-Tenant: other\nx-gust-invocation-id: 1\nX-GUST-FUNCTION: f\n" +
			"Transfer-Encoding: chunked\nConnection: close\nContent-Length: 99\n" +
			"Keep-Alive: timeout=5\nProxy-Connection: keep-alive\nUpgrade: h2c\n" +
			"TE: trailers\nTrailer: X-T\n\nbody",
		wantStatus: 200,
		wantHeader: http.Header{"Content-Type": {"text/plain"}},
		wantBody:   "body",
	},
	{
		name:       "X-Gust lookalikes kept",
		in:         "X-Gustav: 1\nX-Gust: 2\n\n",
		wantStatus: 200,
		wantHeader: http.Header{"X-Gustav": {"1"}, "X-Gust": {"2"}},
	},
	{
		name:       "exactly MaxHeaders lines",
		in:         lines(cgi.MaxHeaders) + "\n\n",
		wantStatus: 200,
		wantHeader: http.Header{"X-H": slices.Repeat([]string{"v"}, cgi.MaxHeaders)},
	},
	{
		name:       "header section of exactly MaxHeaderBytes",
		in:         longHeader(cgi.MaxHeaderBytes) + "\n\nbody",
		wantStatus: 200,
		wantHeader: http.Header{"X-Long": {strings.Repeat("a", cgi.MaxHeaderBytes-len("X-Long: "))}},
		wantBody:   "body",
	},
	{
		name:       "header section of exactly MaxHeaderBytes, CRLF",
		in:         longHeader(cgi.MaxHeaderBytes) + "\r\n\r\nbody",
		wantStatus: 200,
		wantHeader: http.Header{"X-Long": {strings.Repeat("a", cgi.MaxHeaderBytes-len("X-Long: "))}},
		wantBody:   "body",
	},

	// Hostile or broken responses.
	{name: "empty output", in: "", wantErr: []string{"response is empty"}},
	{name: "no blank line", in: "Content-Type: text/plain\n", wantErr: []string{"no blank line"}},
	{name: "no newline at all", in: "hello world", wantErr: []string{"no blank line"}},
	{name: "CR only line endings", in: "Content-Type: text/plain\r\rbody", wantErr: []string{"no blank line"}},
	{name: "empty header section LF", in: "\nhello", wantErr: []string{"empty header section"}},
	{name: "empty header section CRLF", in: "\r\nhello", wantErr: []string{"empty header section"}},
	{name: "empty header section only", in: "\n\n", wantErr: []string{"empty header section"}},
	{name: "line without colon", in: "Content-Type text/plain\n\n", wantErr: []string{"line 1", "no colon", `"Content-Type text/plain"`}},
	{name: "second line without colon", in: "Content-Type: text/plain\nhello\n\n", wantErr: []string{"line 2", "no colon", `"hello"`}},
	{name: "folded continuation line", in: "X-A: b\n c\n\n", wantErr: []string{"line 2", "no colon"}},
	{name: "folded line with colon", in: "X-A: b\n Set-Cookie: x\n\n", wantErr: []string{"line 2", "invalid name", `" Set-Cookie"`}},
	{name: "space in name", in: "Content Type: text/plain\n\n", wantErr: []string{"line 1", "invalid name", `"Content Type"`}},
	{name: "space before colon", in: "Content-Type : text/plain\n\n", wantErr: []string{"invalid name", `"Content-Type "`}},
	{name: "empty name", in: ": value\n\n", wantErr: []string{"invalid name", `""`}},
	{name: "parenthesis in name", in: "X(A): b\n\n", wantErr: []string{"invalid name", `"X(A)"`}},
	{name: "at sign in name", in: "X@A: b\n\n", wantErr: []string{"invalid name", `"X@A"`}},
	{name: "quote in name", in: "X\"A: b\n\n", wantErr: []string{"invalid name"}},
	{name: "non-ASCII name", in: "Ünicode: b\n\n", wantErr: []string{"invalid name"}},
	{name: "NUL in name", in: "X\x00A: b\n\n", wantErr: []string{"invalid name"}},
	{name: "header injection by bare CR", in: "X-A: b\rSet-Cookie: x\n\n", wantErr: []string{"X-A", "control character"}},
	{name: "bare CR before CRLF", in: "X-A: b\r\r\n\r\n", wantErr: []string{"X-A", "control character"}},
	{name: "NUL in value", in: "X-A: a\x00b\n\n", wantErr: []string{"X-A", "control character"}},
	{name: "control char in value", in: "X-A: a\x01b\n\n", wantErr: []string{"X-A", "control character"}},
	{name: "DEL in value", in: "X-A: a\x7fb\n\n", wantErr: []string{"X-A", "control character"}},
	{name: "escape in value", in: "X-A: \x1b[31mred\n\n", wantErr: []string{"X-A", "control character"}},
	{name: "status two digits", in: "Status: 20\n\n", wantErr: []string{`Status "20"`, "200 to 599"}},
	{name: "status four digits", in: "Status: 2000\n\n", wantErr: []string{`Status "2000"`, "200 to 599"}},
	{name: "status leading zero", in: "Status: 0200\n\n", wantErr: []string{`Status "0200"`}},
	{name: "status below range", in: "Status: 199 Early\n\n", wantErr: []string{`Status "199 Early"`, "200 to 599"}},
	{name: "status 100", in: "Status: 100 Continue\n\n", wantErr: []string{`Status "100 Continue"`}},
	{name: "status above range", in: "Status: 600\n\n", wantErr: []string{`Status "600"`, "200 to 599"}},
	{name: "status non-numeric", in: "Status: OK\n\n", wantErr: []string{`Status "OK"`}},
	{name: "status empty", in: "Status:\n\n", wantErr: []string{`Status ""`}},
	{name: "status signed", in: "Status: +20\n\n", wantErr: []string{`Status "+20"`}},
	{name: "status negative", in: "Status: -200\n\n", wantErr: []string{`Status "-200"`}},
	{name: "status glued reason", in: "Status: 200OK\n\n", wantErr: []string{`Status "200OK"`}},
	{name: "status tab before reason", in: "Status: 200\tOK\n\n", wantErr: []string{`Status "200\tOK"`}},
	{name: "bad status after location", in: "Location: /x\nStatus: 999\n\n", wantErr: []string{`Status "999"`}},
	{
		name:    "more than MaxHeaders lines",
		in:      lines(cgi.MaxHeaders+1) + "\n\n",
		wantErr: []string{"101 header lines", "at most 100"},
	},
	{
		name:    "header section longer than MaxHeaderBytes without blank line",
		in:      longHeader(cgi.MaxHeaderBytes + 100),
		wantErr: []string{"longer than 65536 bytes"},
	},
	{
		name:    "blank line only after MaxHeaderBytes",
		in:      longHeader(cgi.MaxHeaderBytes+100) + "\n\nbody",
		wantErr: []string{"longer than 65536 bytes"},
	},
	{
		name:    "many short lines beyond MaxHeaderBytes",
		in:      strings.Repeat("X-A: "+strings.Repeat("b", 1000)+"\n", 70) + "\nbody",
		wantErr: []string{"longer than 65536 bytes"},
	},
}

func TestParseResponse(t *testing.T) {
	for _, tt := range responseTests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := cgi.ParseResponse([]byte(tt.in))
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("ParseResponse(%q) = status %d, header %v, want error containing %q", clip(tt.in), resp.Status, resp.Header, tt.wantErr)
				}
				for _, want := range tt.wantErr {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("ParseResponse(%q) error = %q, want it to contain %q", clip(tt.in), err, want)
					}
				}
				if resp != nil {
					t.Errorf("ParseResponse(%q) returned a response with its error: %+v", clip(tt.in), resp)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseResponse(%q) error = %v, want nil", clip(tt.in), err)
			}
			if resp.Status != tt.wantStatus {
				t.Errorf("ParseResponse(%q) status = %d, want %d", clip(tt.in), resp.Status, tt.wantStatus)
			}
			if !equalHeader(resp.Header, tt.wantHeader) {
				t.Errorf("ParseResponse(%q) header = %v, want %v", clip(tt.in), resp.Header, tt.wantHeader)
			}
			if string(resp.Body) != tt.wantBody {
				t.Errorf("ParseResponse(%q) body = %q, want %q", clip(tt.in), resp.Body, tt.wantBody)
			}
		})
	}
}

// TestParseResponseHeadLength checks that a response without a body keeps
// the length it declared (the answer to a HEAD), and that one with a body,
// or a length that is not one, declares none.
func TestParseResponseHeadLength(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
	}{
		{"Content-Type: text/plain\nContent-Length: 42\n\n", 42},
		{"Content-Length: 0\r\nStatus: 204\r\n\r\n", 0},
		{"Content-Type: text/plain\nContent-Length: 42\n\nbody", 0},
		{"Content-Type: text/plain\nContent-Length: -1\n\n", 0},
		{"Content-Type: text/plain\nContent-Length: 4x\n\n", 0},
		{"Content-Type: text/plain\nContent-Length: 99999999999999999999\n\n", 0},
	} {
		resp, err := cgi.ParseResponse([]byte(tt.in))
		if err != nil {
			t.Fatalf("ParseResponse(%q): %v", tt.in, err)
		}
		if resp.HeadLength != tt.want {
			t.Errorf("ParseResponse(%q).HeadLength = %d, want %d", tt.in, resp.HeadLength, tt.want)
		}
		if _, ok := resp.Header["Content-Length"]; ok {
			t.Errorf("ParseResponse(%q) kept the program's Content-Length: Gust sets its own", tt.in)
		}
	}
}

func TestParseResponseNil(t *testing.T) {
	resp, err := cgi.ParseResponse(nil)
	if err == nil || !strings.Contains(err.Error(), "response is empty") {
		t.Errorf("ParseResponse(nil) = %v, %v, want error containing %q", resp, err, "response is empty")
	}
}

// TestParseResponseHeaderBytesLimit checks the bound on the header section
// right at its edge: the header lines, without the newline that ends the last
// of them and without the blank line, may be at most MaxHeaderBytes long.
func TestParseResponseHeaderBytesLimit(t *testing.T) {
	for _, end := range []string{"\n\n", "\r\n\r\n", "\n\r\n", "\r\n\n"} {
		for extra := 1; extra <= 3; extra++ {
			in := longHeader(cgi.MaxHeaderBytes+extra) + end + "body"
			_, err := cgi.ParseResponse([]byte(in))
			if err == nil || !strings.Contains(err.Error(), "longer than") {
				t.Errorf("ParseResponse(header of MaxHeaderBytes+%d bytes + %q) error = %v, want error containing %q",
					extra, end, err, "longer than")
			}
		}
	}
}

// TestParseResponseBodyAliasesInput documents that the body is the tail of the
// guest's output itself, not a copy.
func TestParseResponseBodyAliasesInput(t *testing.T) {
	in := []byte("Content-Type: text/plain\r\n\r\nhello")
	resp, err := cgi.ParseResponse(in)
	if err != nil {
		t.Fatalf("ParseResponse(%q) error = %v", in, err)
	}
	if !bytes.HasSuffix(in, resp.Body) || len(resp.Body) != len("hello") {
		t.Errorf("ParseResponse(%q) body = %q, want %q", in, resp.Body, "hello")
	}
}

func TestEnv(t *testing.T) {
	base := func() runtime.Request {
		return runtime.Request{
			Method:     "POST",
			Path:       "/hello",
			RawQuery:   "a=1&b=2",
			Header:     http.Header{},
			Body:       []byte("abc"),
			RemoteAddr: "192.0.2.1:5555",
			Host:       "gust.example:8080",
			Tenant:     "acme",
			Function:   "greeter",
		}
	}
	tests := []struct {
		name   string
		edit   func(r *runtime.Request)
		want   map[string]string
		absent []string
	}{
		{
			name: "fixed and request variables",
			edit: func(r *runtime.Request) {},
			want: map[string]string{
				"GATEWAY_INTERFACE": "CGI/1.1",
				"SERVER_PROTOCOL":   "HTTP/1.1",
				"SERVER_SOFTWARE":   "gust",
				"REQUEST_METHOD":    "POST",
				"SCRIPT_NAME":       "/fn/acme/greeter",
				"PATH_INFO":         "/hello",
				"QUERY_STRING":      "a=1&b=2",
				"REQUEST_URI":       "/fn/acme/greeter/hello?a=1&b=2",
				"CONTENT_LENGTH":    "3",
				"REMOTE_ADDR":       "192.0.2.1",
				"SERVER_NAME":       "gust.example",
				"SERVER_PORT":       "8080",
			},
			absent: []string{"CONTENT_TYPE"},
		},
		{
			name: "no query",
			edit: func(r *runtime.Request) { r.RawQuery = ""; r.Path = "/" },
			want: map[string]string{
				"QUERY_STRING": "",
				"PATH_INFO":    "/",
				"REQUEST_URI":  "/fn/acme/greeter/",
			},
		},
		{
			name: "empty body",
			edit: func(r *runtime.Request) { r.Body = nil; r.Method = "GET" },
			want: map[string]string{"CONTENT_LENGTH": "0", "REQUEST_METHOD": "GET"},
		},
		{
			name:   "host without port",
			edit:   func(r *runtime.Request) { r.Host = "gust.example" },
			want:   map[string]string{"SERVER_NAME": "gust.example"},
			absent: []string{"SERVER_PORT"},
		},
		{
			name: "IPv6 addresses",
			edit: func(r *runtime.Request) { r.Host = "[::1]:8443"; r.RemoteAddr = "[2001:db8::1]:443" },
			want: map[string]string{"SERVER_NAME": "::1", "SERVER_PORT": "8443", "REMOTE_ADDR": "2001:db8::1"},
		},
		{
			name: "remote address without port kept",
			edit: func(r *runtime.Request) { r.RemoteAddr = "192.0.2.7" },
			want: map[string]string{"REMOTE_ADDR": "192.0.2.7"},
		},
		{
			name: "content type and HTTP_ variables",
			edit: func(r *runtime.Request) {
				r.Header.Set("Content-Type", "application/json")
				r.Header.Set("Content-Length", "999")
				r.Header.Set("X-Request-Id", "r-1")
				r.Header.Set("User-Agent", "curl/8")
				r.Header["Accept"] = []string{"text/html", "application/json"}
			},
			want: map[string]string{
				"CONTENT_TYPE":      "application/json",
				"CONTENT_LENGTH":    "3",
				"HTTP_X_REQUEST_ID": "r-1",
				"HTTP_USER_AGENT":   "curl/8",
				"HTTP_ACCEPT":       "text/html, application/json",
			},
			absent: []string{"HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"},
		},
		{
			name: "httpoxy and credentials not passed",
			edit: func(r *runtime.Request) {
				r.Header.Set("Proxy", "http://evil.example:3128")
				r.Header.Set("Authorization", "Bearer secret")
				r.Header.Set("X-Safe", "yes")
			},
			want:   map[string]string{"HTTP_X_SAFE": "yes"},
			absent: []string{"HTTP_PROXY", "HTTP_AUTHORIZATION"},
		},
		{
			name: "Gust's own variables, never the caller's",
			edit: func(r *runtime.Request) {
				r.InvocationID, r.Source = "inv-2", "inv-1"
				r.Header.Set("X-Gust-Source-Invocation", "forged")
				r.Header["x-gust-invocation-id"] = []string{"forged"}
			},
			want:   map[string]string{"GUST_INVOCATION_ID": "inv-2", "GUST_SOURCE_INVOCATION": "inv-1"},
			absent: []string{"HTTP_X_GUST_SOURCE_INVOCATION", "HTTP_X_GUST_INVOCATION_ID"},
		},
		{
			name:   "no source variable for an invocation nobody's destination",
			edit:   func(r *runtime.Request) { r.InvocationID = "inv-3" },
			want:   map[string]string{"GUST_INVOCATION_ID": "inv-3"},
			absent: []string{"GUST_SOURCE_INVOCATION"},
		},
		{
			name: "the connection's headers not passed",
			edit: func(r *runtime.Request) {
				for _, h := range []string{"Connection", "Keep-Alive", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Proxy-Connection", "Expect", "Content-Length"} {
					r.Header.Set(h, "x")
				}
				r.Header.Set("Host", "forged.example")
			},
			want:   map[string]string{"HTTP_HOST": "gust.example:8080"},
			absent: []string{"HTTP_CONNECTION", "HTTP_KEEP_ALIVE", "HTTP_TE", "HTTP_TRAILER", "HTTP_TRANSFER_ENCODING", "HTTP_UPGRADE", "HTTP_PROXY_CONNECTION", "HTTP_EXPECT", "HTTP_CONTENT_LENGTH"},
		},
		{
			name: "non-canonical header keys not passed either",
			edit: func(r *runtime.Request) {
				r.Header["proxy"] = []string{"http://evil.example:3128"}
				r.Header["authorization"] = []string{"Bearer secret"}
			},
			absent: []string{"HTTP_PROXY", "HTTP_AUTHORIZATION", "HTTP_proxy", "HTTP_authorization"},
		},
		{
			name: "NUL bytes stripped",
			edit: func(r *runtime.Request) {
				r.Header.Set("X-A", "a\x00b")
				r.Header.Set("Content-Type", "text/\x00plain")
				r.Path = "/p\x00ath"
				r.RawQuery = "q=\x00"
			},
			want: map[string]string{
				"HTTP_X_A":     "ab",
				"CONTENT_TYPE": "text/plain",
				"PATH_INFO":    "/path",
				"QUERY_STRING": "q=",
				"REQUEST_URI":  "/fn/acme/greeter/path?q=",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := base()
			tt.edit(&req)
			env := cgi.Env(&req)
			if !slices.IsSorted(env) {
				t.Errorf("Env(%+v) = %q, want it sorted", req, env)
			}
			got := map[string]string{}
			for _, kv := range env {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					t.Errorf("Env(%+v) has %q, want KEY=value", req, kv)
				}
				if _, dup := got[k]; dup {
					t.Errorf("Env(%+v) has %s twice", req, k)
				}
				if strings.ContainsRune(kv, 0) {
					t.Errorf("Env(%+v) has %q, want no NUL byte", req, kv)
				}
				got[k] = v
			}
			for k, want := range tt.want {
				if v, ok := got[k]; !ok || v != want {
					t.Errorf("Env(%+v)[%s] = %q (set: %v), want %q", req, k, v, ok, want)
				}
			}
			for _, k := range tt.absent {
				if v, ok := got[k]; ok {
					t.Errorf("Env(%+v)[%s] = %q, want it unset", req, k, v)
				}
			}
		})
	}
}

// TestEnvUnderscoreHeaders checks that a client cannot spoof a header a proxy
// in front of Gust sets (X-Forwarded-For) by sending the same name with
// underscores: both would become HTTP_X_FORWARDED_FOR.
func TestEnvUnderscoreHeaders(t *testing.T) {
	for range 20 {
		req := &runtime.Request{
			Method: "GET", Path: "/", Tenant: "t", Function: "f",
			Header: http.Header{
				"X-Forwarded-For": {"203.0.113.9"},
				"X_forwarded_for": {"127.0.0.1"},
			},
		}
		env := cgi.Env(req)
		if !slices.Contains(env, "HTTP_X_FORWARDED_FOR=203.0.113.9") {
			t.Fatalf("Env(%v) = %q, want HTTP_X_FORWARDED_FOR=203.0.113.9", req.Header, env)
		}
	}
}

// maxSeedBytes leaves the table's inputs of 64 KiB and more out of the fuzz
// corpus: the fuzzer cannot usefully mutate them, and minimizing one of them
// stalls every worker for the default minutes-long minimize time.
const maxSeedBytes = 4 << 10

func FuzzParseResponse(f *testing.F) {
	for _, tt := range responseTests {
		if len(tt.in) <= maxSeedBytes {
			f.Add([]byte(tt.in))
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		resp, err := cgi.ParseResponse(in)
		if err != nil {
			if resp != nil {
				t.Errorf("ParseResponse(%q) returned a response with error %v", clip(string(in)), err)
			}
			return
		}
		if resp.Status < 200 || resp.Status > 599 {
			t.Errorf("ParseResponse(%q) status = %d, want 200 to 599", clip(string(in)), resp.Status)
		}
		for name, values := range resp.Header {
			if !isToken(name) {
				t.Errorf("ParseResponse(%q) header name %q, want a token", clip(string(in)), name)
			}
			if canon := http.CanonicalHeaderKey(name); canon != name {
				t.Errorf("ParseResponse(%q) header name %q, want canonical %q", clip(string(in)), name, canon)
			}
			switch {
			case strings.HasPrefix(strings.ToLower(name), "x-gust-"):
				t.Errorf("ParseResponse(%q) kept Gust's own header %q", clip(string(in)), name)
			case slices.Contains(dropped, name):
				t.Errorf("ParseResponse(%q) kept hop-by-hop header %q", clip(string(in)), name)
			}
			for _, v := range values {
				if strings.ContainsAny(v, "\r\n\x00") {
					t.Errorf("ParseResponse(%q) header %s = %q, want no CR, LF or NUL", clip(string(in)), name, v)
				}
			}
		}
		if !bytes.HasSuffix(in, resp.Body) {
			t.Errorf("ParseResponse(%q) body = %q, want a suffix of the input", clip(string(in)), clip(string(resp.Body)))
		}
		if len(in)-len(resp.Body) > cgi.MaxHeaderBytes+8 {
			t.Errorf("ParseResponse(%q) accepted a %d-byte header section, want at most about %d",
				clip(string(in)), len(in)-len(resp.Body), cgi.MaxHeaderBytes)
		}
	})
}

// dropped are the headers a guest may not set; listed here, not taken from
// the package, so that removing one there fails the fuzz target.
var dropped = []string{
	"Status", "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding",
	"Upgrade", "Te", "Trailer", "Content-Length",
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' ||
			strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
		if !ok {
			return false
		}
	}
	return true
}

func equalHeader(got, want http.Header) bool {
	if len(got) != len(want) {
		return false
	}
	for k, w := range want {
		if !slices.Equal(got[k], w) {
			return false
		}
	}
	return true
}

// clip shortens s for a test message.
func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}
