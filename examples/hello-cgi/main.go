// Command hello-cgi is the hello example without the SDK: a plain WASI
// command module that greets whoever the request body names. Gust runs a
// fresh instance for each request; the body arrives on stdin and the CGI
// response goes to stdout.
package main

import (
	"fmt"
	"io"
	"os"
	"strings"
)

func main() {
	body, err := io.ReadAll(io.LimitReader(os.Stdin, 1<<10))
	if err != nil {
		fmt.Fprintln(os.Stderr, "reading the request:", err)
		os.Exit(1)
	}
	name := strings.TrimSpace(string(body))
	if name == "" {
		name = "world"
	}
	fmt.Print("Content-Type: text/plain; charset=utf-8\n\n")
	fmt.Printf("Hello, %s!\n", name)
}
