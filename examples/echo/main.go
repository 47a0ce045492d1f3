// Command echo answers with what it was sent, as JSON: the method, path,
// query, headers and body of the request. It is an ordinary http.Handler,
// served by the Go SDK.
package main

import (
	"encoding/json"
	"io"
	"net/http"

	gust "github.com/gust-faas/gust/sdk/go"
)

type echo struct {
	Method  string              `json:"method"`
	Path    string              `json:"path"`
	Query   map[string][]string `json:"query"`
	Headers map[string]string   `json:"headers"`
	Body    string              `json:"body"`
}

func handle(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "reading the request: "+err.Error(), http.StatusBadRequest)
		return
	}
	e := echo{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Headers: map[string]string{}, Body: string(body)}
	for name := range r.Header {
		e.Headers[name] = r.Header.Get(name)
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(e)
}

func main() { gust.Serve(http.HandlerFunc(handle)) }
