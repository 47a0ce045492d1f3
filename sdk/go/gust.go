// Package gust is the Go SDK for Gust functions. A function is an ordinary
// http.Handler handed to Serve from main:
//
//	func main() { gust.Serve(http.HandlerFunc(hello)) }
//
// Built with GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared, the module
// is a reactor: Gust keeps an instance warm and calls the handler for request
// after request through the host ABI described in docs/abi.md. Built without
// -buildmode=c-shared, the same program is a WASI command module that serves
// one request as CGI. Built for the machine you develop on, Serve listens on
// $PORT (default 8080), so `go run .` serves the function locally.
package gust

import "net/http"

// Serve serves h. In a reactor it registers h and never returns; as a CGI
// command it serves the one request and returns; natively it serves HTTP on
// $PORT until the process ends.
func Serve(h http.Handler) {
	if h == nil {
		h = http.DefaultServeMux
	}
	serve(h)
}
