// Command echo answers with what it was sent, as JSON: the method, path,
// query, headers and body of the request. It shows how a WASI command module
// reads a request through CGI's environment variables.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"sort"
	"strings"
)

type echo struct {
	Method  string              `json:"method"`
	Path    string              `json:"path"`
	Query   map[string][]string `json:"query"`
	Headers map[string]string   `json:"headers"`
	Body    string              `json:"body"`
}

func main() {
	body, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "reading the request:", err)
		os.Exit(1)
	}
	query, _ := url.ParseQuery(os.Getenv("QUERY_STRING"))
	e := echo{
		Method:  os.Getenv("REQUEST_METHOD"),
		Path:    os.Getenv("PATH_INFO"),
		Query:   query,
		Headers: headers(),
		Body:    string(body),
	}
	out, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		fmt.Fprintln(os.Stderr, "encoding the answer:", err)
		os.Exit(1)
	}
	fmt.Print("Content-Type: application/json\n\n")
	fmt.Println(string(out))
}

// headers rebuilds the request headers from CGI's HTTP_* variables.
func headers() map[string]string {
	h := map[string]string{}
	if ct := os.Getenv("CONTENT_TYPE"); ct != "" {
		h["Content-Type"] = ct
	}
	env := os.Environ()
	sort.Strings(env)
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		if name, ok := strings.CutPrefix(k, "HTTP_"); ok {
			h[canonical(name)] = v
		}
	}
	return h
}

// canonical turns USER_AGENT into User-Agent.
func canonical(s string) string {
	parts := strings.Split(strings.ToLower(s), "_")
	for i, p := range parts {
		if p != "" {
			parts[i] = strings.ToUpper(p[:1]) + p[1:]
		}
	}
	return strings.Join(parts, "-")
}
