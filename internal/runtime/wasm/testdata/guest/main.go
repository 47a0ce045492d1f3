// Command guest is a test fixture: a WASI command module that misbehaves on
// request. PATH_INFO picks the behaviour; the tests of the wasm runtime and
// the end-to-end tests deploy it.
package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

var sink [][]byte

func main() {
	body, _ := io.ReadAll(os.Stdin)
	switch path := os.Getenv("PATH_INFO"); path {
	case "/loop": // never returns: the deadline must stop it
		for {
		}
	case "/sleep": // sleeps far past any deadline
		time.Sleep(time.Hour)
	case "/slow": // takes a while, then answers
		time.Sleep(500 * time.Millisecond)
		fmt.Print("Content-Type: text/plain\n\nslow done\n")
	case "/oom": // allocates until memory runs out
		for {
			sink = append(sink, make([]byte, 1<<20))
		}
	case "/big-alloc": // one allocation far beyond any limit
		sink = append(sink, make([]byte, 1<<30))
	case "/panic":
		panic("guest panicked on purpose")
	case "/exit3":
		fmt.Fprintln(os.Stderr, "about to exit with code 3")
		os.Exit(3)
	case "/raw": // writes the request body as its whole CGI output
		os.Stdout.Write(body)
	case "/huge-output": // writes more than any response limit
		fmt.Print("Content-Type: text/plain\n\n")
		chunk := strings.Repeat("x", 1<<20)
		for i := 0; i < 64; i++ {
			fmt.Print(chunk)
		}
	case "/stderr-flood":
		for i := 0; i < 10000; i++ {
			fmt.Fprintf(os.Stderr, "line %d\n", i)
		}
		fmt.Print("Content-Type: text/plain\n\nflooded\n")
	case "/env":
		fmt.Print("Content-Type: text/plain\n\n")
		for _, kv := range os.Environ() {
			fmt.Println(kv)
		}
	case "/secret": // uses DB_PASSWORD without revealing it: answers its SHA-256
		sum := sha256.Sum256([]byte(os.Getenv("DB_PASSWORD")))
		fmt.Printf("Content-Type: text/plain\n\n%x\n", sum)
	case "/files": // a guest must see no host filesystem
		fmt.Print("Content-Type: text/plain\n\n")
		for _, p := range []string{"/", "/etc/passwd", "."} {
			_, err := os.Stat(p)
			fmt.Printf("%s: %v\n", p, err)
		}
	default:
		fmt.Print("Status: 201 Created\nContent-Type: text/plain\nX-Guest: yes\n\n")
		fmt.Printf("%s %s %s", os.Getenv("REQUEST_METHOD"), path, body)
	}
}
