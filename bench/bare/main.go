// Command bare is the benchmarks' baseline: the same hello function as
// examples/hello, as a plain net/http server with nothing in between. Run
// with $PORT set, it is also a Go process function (runtime: process,
// protocol: http), the one the process benchmarks deploy.
package main

import (
	"flag"
	"io"
	"log"
	"net/http"
	"os"
	"strings"
)

func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func main() {
	addr := flag.String("addr", "127.0.0.1:18181", "listen address (default 127.0.0.1:$PORT when PORT is set)")
	flag.Parse()
	if port := os.Getenv("PORT"); port != "" && !flagSet("addr") {
		*addr = "127.0.0.1:" + port
	}
	log.Fatal(http.ListenAndServe(*addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<10))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		name := strings.TrimSpace(string(body))
		if name == "" {
			name = "world"
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "Hello, "+name+"!\n")
	})))
}
