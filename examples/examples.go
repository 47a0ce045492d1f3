// Package examples embeds the sources of the example functions, so that
// `gust server --demo` can build and deploy them wherever the binary runs.
// Each subdirectory is one function: a gust.yaml and a Go main package.
package examples

import "embed"

// FS holds hello/ and echo/.
//
//go:embed hello/main.go hello/gust.yaml echo/main.go echo/gust.yaml
var FS embed.FS

// Names lists the example functions in FS.
var Names = []string{"hello", "echo"}
