// Command stdio measures what a stdio process function adds to a request:
// it runs the same program bare, with fork and exec and the body on stdin,
// and through Gust, one request at a time, and prints the p50 and p99 of
// each and their difference.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/gust-faas/gust/bench/internal/stats"
)

func main() {
	url := flag.String("url", "", "URL of the stdio function")
	prog := flag.String("prog", "", "the same program, run bare")
	n := flag.Int("n", 300, "requests to each")
	flag.Parse()
	bare, err := measure(*n, func() error {
		cmd := exec.Command(*prog)
		cmd.Stdin = strings.NewReader("gust")
		cmd.Env = []string{"REQUEST_METHOD=POST", "PATH_INFO=/"}
		out, err := cmd.Output()
		if err == nil && !bytes.Contains(out, []byte("Hello, gust!")) {
			err = fmt.Errorf("bare program printed %q", out)
		}
		return err
	})
	if err != nil {
		fail(err)
	}
	client := &http.Client{}
	gust, err := measure(*n, func() error {
		resp, err := client.Post(*url, "text/plain", strings.NewReader("gust"))
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Contains(body, []byte("Hello, gust!")) {
			return fmt.Errorf("%s answered %s %q", *url, resp.Status, body)
		}
		return nil
	})
	if err != nil {
		fail(err)
	}
	fmt.Printf("stdio, bare fork/exec (%d):  p50 %s  p99 %s\n", len(bare), stats.Ms(stats.Percentile(bare, 50)), stats.Ms(stats.Percentile(bare, 99)))
	fmt.Printf("stdio, through gust (%d):    p50 %s  p99 %s\n", len(gust), stats.Ms(stats.Percentile(gust, 50)), stats.Ms(stats.Percentile(gust, 99)))
	fmt.Printf("stdio overhead: p50 +%s, p99 +%s\n", stats.Ms(stats.Percentile(gust, 50)-stats.Percentile(bare, 50)), stats.Ms(stats.Percentile(gust, 99)-stats.Percentile(bare, 99)))
}

func measure(n int, once func() error) ([]time.Duration, error) {
	var lat []time.Duration
	for i := range n + 10 {
		start := time.Now()
		if err := once(); err != nil {
			return nil, err
		}
		if i >= 10 { // the first warm the caches and the connection
			lat = append(lat, time.Since(start))
		}
	}
	return lat, nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "stdio:", err)
	os.Exit(1)
}
