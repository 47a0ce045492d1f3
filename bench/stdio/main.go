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
	"slices"
	"strings"
	"time"
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
	fmt.Printf("stdio, bare fork/exec (%d):  p50 %s  p99 %s\n", len(bare), ms(pct(bare, 50)), ms(pct(bare, 99)))
	fmt.Printf("stdio, through gust (%d):    p50 %s  p99 %s\n", len(gust), ms(pct(gust, 50)), ms(pct(gust, 99)))
	fmt.Printf("stdio overhead: p50 +%s, p99 +%s\n", ms(pct(gust, 50)-pct(bare, 50)), ms(pct(gust, 99)-pct(bare, 99)))
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

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[max(0, min(len(s)-1, (len(s)*p+99)/100-1))]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d.Microseconds())/1000) }

func fail(err error) {
	fmt.Fprintln(os.Stderr, "stdio:", err)
	os.Exit(1)
}
