// Command stdiohello is the stdio benchmark's program: the hello function
// as a CGI program, reading the name on stdin.
package main

import (
	"io"
	"os"
	"strings"
)

func main() {
	body, _ := io.ReadAll(io.LimitReader(os.Stdin, 1<<10))
	name := strings.TrimSpace(string(body))
	if name == "" {
		name = "world"
	}
	io.WriteString(os.Stdout, "Content-Type: text/plain; charset=utf-8\n\nHello, "+name+"!\n")
}
