// Package gust holds, embedded, the sources that `gust server --demo` builds
// wherever the binary runs: the example functions and the Go SDK they use.
// Function authors import the SDK, github.com/gust-faas/gust/sdk/go, not
// this package.
package gust

import "embed"

// Source holds examples/ and sdk/go/.
//
//go:embed examples/hello examples/echo examples/hello-cgi sdk/go/*.go
var Source embed.FS

// Examples lists the example functions in Source, under examples/.
var Examples = []string{"hello", "echo", "hello-cgi"}

// SDKPath is the import path of the Go SDK.
const SDKPath = "github.com/gust-faas/gust/sdk/go"
