// Command reactor is a test fixture: a Go SDK function (a warm reactor) that
// misbehaves on request. The path picks the behaviour.
package main

import (
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime/debug"
	"strings"
	"time"

	gust "github.com/gust-faas/gust/sdk/go"
)

var (
	served int // requests this instance has served: shows warm reuse
	sink   [][]byte
	// token is made when the instance starts: instances started from one
	// snapshot share it.
	token = rand.Text()
)

func handle(w http.ResponseWriter, r *http.Request) {
	served++
	switch r.URL.Path {
	case "/count":
		fmt.Fprintf(w, "%d", served)
	case "/token":
		io.WriteString(w, token)
	case "/loop":
		for {
		}
	case "/sleep":
		time.Sleep(time.Hour)
	case "/slow":
		time.Sleep(300 * time.Millisecond)
		fmt.Fprint(w, "slow done")
	case "/oom":
		for {
			sink = append(sink, make([]byte, 1<<20))
		}
	case "/panic":
		panic("reactor panicked on purpose")
	case "/exit":
		fmt.Fprintln(os.Stderr, "exiting mid-request")
		os.Exit(4)
	case "/exit0": // a whole response, then an exit that closes the instance
		io.WriteString(w, "bye")
		w.(http.Flusher).Flush()
		os.Exit(0)
	case "/env":
		fmt.Fprintf(w, "GREETING=%s ID=%s", os.Getenv("GREETING"), r.Header.Get("X-Gust-Invocation-Id"))
	case "/headers":
		w.Header().Set("X-Gust-Error", "spoofed") // Gust's own: dropped
		fmt.Fprintf(w, "auth=%q test=%q", r.Header.Get("Authorization"), r.Header.Get("X-Test"))
	case "/bigheader":
		w.Header().Set("X-Big", strings.Repeat("a", 7<<20))
		w.WriteHeader(http.StatusOK)
	case "/big":
		w.Write(make([]byte, 7<<20))
	case "/request":
		// What the SDK made of the request.
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "uri=%s len=%d nobody=%t body=%q x-test=%q many=%d x-h9=%q",
			r.RequestURI, r.ContentLength, r.Body == http.NoBody, body,
			r.Header.Values("X-Test"), len(r.Header), r.Header.Get("X-H9"))
	case "/sniff-string":
		io.WriteString(w, "<html><body>hi</body></html>")
	case "/sniff-bytes":
		w.Write([]byte("<html><body>hi</body></html>"))
	case "/typed-string":
		w.Header().Set("Content-Type", "application/x-custom")
		io.WriteString(w, "<html><body>hi</body></html>")
	case "/inject": // a header value from the request, as handlers do
		w.Header().Set("X-Echo", r.URL.Query().Get("v"))
		w.Header()["Bad Name"] = []string{"x"}
		w.WriteHeader(http.StatusEarlyHints) // informational: not the response's status
		w.WriteHeader(http.StatusSwitchingProtocols)
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, "<!DOCTYPE html><html>missing</html>")
	case "/gc":
		gc := debug.SetGCPercent(-1)
		debug.SetGCPercent(gc)
		fmt.Fprintf(w, "gogc=%d limit=%d", gc, debug.SetMemoryLimit(-1))
	default:
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Reactor", "yes")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, body)
		if s := r.Header.Get("X-Gust-Source-Invocation"); s != "" {
			fmt.Fprintf(w, " source=%s", s)
		}
	}
}

func main() { gust.Serve(http.HandlerFunc(handle)) }
