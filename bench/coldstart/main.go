// Command coldstart measures cold starts of a function deployed with
// max_requests 1 (so every request starts a new instance): request to
// response as the client sees it, and the instance start alone as Gust
// reports it in Server-Timing. Cold starts are measured one at a time,
// -gap apart, as they come when traffic grows or after idle, and then back
// to back, where each also shares the CPU with the teardown of the last
// instance and whatever the node starts ahead for the next. It also
// measures warm requests to the same function for the per-request
// overhead.
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"time"

	"github.com/gust-faas/gust/bench/internal/stats"
)

func main() {
	url := flag.String("url", "", "URL of the function deployed with max_requests: 1")
	warmURL := flag.String("warm-url", "", "URL of the same function without max_requests")
	n := flag.Int("n", 300, "requests to each URL")
	gap := flag.Duration("gap", 100*time.Millisecond, "pause between cold starts measured one at a time")
	flag.Parse()
	cold, inits, err := measure(*url, *n, true, *gap)
	if err != nil {
		fail(err)
	}
	burst, burstInits, err := measure(*url, *n, true, 0)
	if err != nil {
		fail(err)
	}
	warm, _, err := measure(*warmURL, *n, false, 0)
	if err != nil {
		fail(err)
	}
	fmt.Printf("cold start, request to response (%d, %s apart): p50 %s  p99 %s\n", len(cold), gap, pct(cold, 50), pct(cold, 99))
	fmt.Printf("cold start, instance start alone:      p50 %s  p99 %s\n", pct(inits, 50), pct(inits, 99))
	fmt.Printf("cold starts back to back (%d): request to response p50 %s  p99 %s, start alone p50 %s  p99 %s\n", len(burst), pct(burst, 50), pct(burst, 99), pct(burstInits, 50), pct(burstInits, 99))
	fmt.Printf("warm request, request to response (%d): p50 %s  p99 %s\n", len(warm), pct(warm, 50), pct(warm, 99))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "coldstart:", err)
	os.Exit(1)
}

var initRE = regexp.MustCompile(`init;dur=([0-9.]+)`)

func measure(url string, n int, wantCold bool, gap time.Duration) (lat, inits []time.Duration, err error) {
	client := &http.Client{}
	for i := 0; i < n+10; i++ {
		time.Sleep(gap)
		start := time.Now()
		resp, err := client.Get(url)
		if err != nil {
			return nil, nil, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		took := time.Since(start)
		if resp.StatusCode != 200 {
			return nil, nil, fmt.Errorf("%s answered %s", url, resp.Status)
		}
		if i < 10 {
			continue // warm the client's connection and the server's caches
		}
		cold := resp.Header.Get("X-Gust-Cold-Start") == "1"
		if cold != wantCold {
			return nil, nil, fmt.Errorf("request %d to %s: cold start %v, want %v", i, url, cold, wantCold)
		}
		lat = append(lat, took)
		if m := initRE.FindStringSubmatch(resp.Header.Get("Server-Timing")); m != nil {
			ms, _ := strconv.ParseFloat(m[1], 64)
			inits = append(inits, time.Duration(ms*float64(time.Millisecond)))
		}
	}
	return lat, inits, nil
}

func pct(d []time.Duration, p int) string {
	if len(d) == 0 {
		return "-"
	}
	return stats.Ms(stats.Percentile(d, p))
}
