// Command hello is the smallest Gust function: an ordinary http.Handler,
// served by the Go SDK. It greets whoever the request body names.
package main

import (
	"io"
	"net/http"
	"strings"

	gust "github.com/gust-faas/gust/sdk/go"
)

func hello(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<10))
	if err != nil {
		http.Error(w, "reading the request: "+err.Error(), http.StatusBadRequest)
		return
	}
	name := strings.TrimSpace(string(body))
	if name == "" {
		name = "world"
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "Hello, "+name+"!\n")
}

func main() { gust.Serve(http.HandlerFunc(hello)) }
