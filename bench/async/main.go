// Command async measures asynchronous invocations of a function: how fast
// Gust answers 202 (p50, p99, and of that the durable write as the server
// times it in Server-Timing) while n invocations are queued by c clients,
// and how many invocations per second go from accepted to completed (from
// the first 202 to the last record marked succeeded, as the server records
// it). First it queues -warmup invocations the same way and waits for them
// to finish, so that connections, instances and the store are warm. For
// comparison it runs the same n invocations synchronously.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gust-faas/gust/bench/internal/stats"
)

func main() {
	url := flag.String("url", "", "server URL, e.g. http://127.0.0.1:18180")
	fn := flag.String("fn", "/fn/default/hello", "path of the function")
	n := flag.Int("n", 5000, "invocations")
	c := flag.Int("c", 32, "concurrent clients")
	rate := flag.Int("rate", 0, "offered invocations per second (0: as fast as the clients go)")
	warmup := flag.Int("warmup", 1000, "invocations queued and finished before the measured ones, and not counted")
	flag.Parse()
	key := os.Getenv("GUST_KEY")
	host, _, err := request("GET", *url, nil, "")
	if err != nil {
		fail(err)
	}

	// enqueue queues count invocations, offered at rate, and returns their
	// ids, how long each 202 took, and when the first was offered.
	var queued []time.Duration // as the server timed it
	enqueue := func(count int) (ids []string, lat []time.Duration, start time.Time) {
		ids, lat = make([]string, count), make([]time.Duration, count)
		queued = make([]time.Duration, count)
		start = time.Now()
		_, req, err := request("POST", *url+*fn, [][2]string{{"Prefer", "respond-async"}, {"Authorization", "Bearer " + key}}, "async")
		if err != nil {
			fail(err)
		}
		run(count, *c, host, func(c *conn, i int) error {
			if *rate > 0 {
				// Invocation i is offered at start + i/rate.
				time.Sleep(time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(*rate))))
			}
			t0 := time.Now()
			resp, err := c.do(req)
			if err != nil {
				return err
			}
			lat[i] = time.Since(t0)
			if resp.status != http.StatusAccepted {
				return fmt.Errorf("enqueue answered %d: %s", resp.status, resp.body)
			}
			queued[i] = serverTiming(resp.serverTiming, "queue")
			var acc struct {
				InvocationID string `json:"invocation_id"`
			}
			if err := json.Unmarshal(resp.body, &acc); err != nil {
				return fmt.Errorf("enqueue answered %s: %w", resp.body, err)
			}
			ids[i] = acc.InvocationID
			return nil
		})
		return ids, lat, start
	}
	// finished waits until every invocation of ids has succeeded and
	// returns when the last of them did, as the server recorded it. Since
	// the server's own times count, it asks gently: a few clients, each
	// waiting a while before it asks about an invocation again. Many
	// clients asking fast, while a backlog is still queued, took CPU from
	// the workers that drain it, and slowed what they measured tenfold.
	finished := func(ids []string) time.Time {
		var last time.Time
		var mu sync.Mutex
		auth := [][2]string{{"Authorization", "Bearer " + key}}
		run(len(ids), min(*c, 4), host, func(c *conn, i int) error {
			_, req, err := request("GET", *url+"/v1/invocations/"+ids[i], auth, "")
			if err != nil {
				return err
			}
			for {
				resp, err := c.do(req)
				if err != nil {
					return err
				}
				var rec struct {
					State   string
					Updated time.Time
				}
				if err := json.Unmarshal(resp.body, &rec); err != nil || resp.status != http.StatusOK {
					return fmt.Errorf("invocation %s: %d %s", ids[i], resp.status, resp.body)
				}
				switch rec.State {
				case "succeeded":
					mu.Lock()
					if rec.Updated.After(last) {
						last = rec.Updated
					}
					mu.Unlock()
					return nil
				case "dead":
					return fmt.Errorf("invocation %s failed", ids[i])
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
		return last
	}
	if *warmup > 0 {
		ids, _, _ := enqueue(*warmup)
		finished(ids)
	}
	cpu0 := cpuTime()
	ids, lat, start := enqueue(*n)
	accepted := time.Since(start)
	clientCPU := float64(cpuTime()-cpu0) / float64(accepted)
	completed := finished(ids).Sub(start)

	_, syncReq, err := request("POST", *url+*fn, [][2]string{{"Authorization", "Bearer " + key}}, "sync")
	if err != nil {
		fail(err)
	}
	syncStart := time.Now()
	run(*n, *c, host, func(c *conn, i int) error {
		resp, err := c.do(syncReq)
		if err == nil && resp.status != http.StatusOK {
			err = fmt.Errorf("invocation answered %d: %s", resp.status, resp.body)
		}
		return err
	})
	syncTook := time.Since(syncStart)

	fmt.Printf("async: %d invocations by %d clients (after %d to warm up), offered at %s\n", *n, *c, *warmup, map[bool]string{true: fmt.Sprint(*rate, "/s"), false: "full speed"}[*rate > 0])
	fmt.Printf("  202 answered: p50 %s  p99 %s  (%.0f accepted/s)\n", stats.Ms(stats.Percentile(lat, 50)), stats.Ms(stats.Percentile(lat, 99)), float64(*n)/accepted.Seconds())
	fmt.Printf("  the load generator itself used %.0f%% of a core while queueing\n", 100*clientCPU)
	fmt.Printf("  of which the durable write, as the server timed it: p50 %s  p99 %s\n", stats.Ms(stats.Percentile(queued, 50)), stats.Ms(stats.Percentile(queued, 99)))
	fmt.Printf("  accepted to completed: %.0f invocations/s (%s for all)\n", float64(*n)/completed.Seconds(), completed.Round(time.Millisecond))
	fmt.Printf("sync, same load: %.0f invocations/s\n", float64(*n)/syncTook.Seconds())
}

// run calls do(c, i) for i in [0, n) on c goroutines, each with a
// connection to addr of its own, and exits on an error.
func run(n, c int, addr string, do func(c *conn, i int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn := &conn{addr: addr}
			defer conn.close()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				if err := do(conn, i); err != nil {
					fail(err)
				}
			}
		}()
	}
	wg.Wait()
}

// cpuTime is the CPU time this process has used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "async:", err)
	os.Exit(1)
}

// serverTiming returns the duration of metric in a Server-Timing header
// ("queue;dur=0.123"), or zero.
func serverTiming(header, metric string) time.Duration {
	for _, m := range strings.Split(header, ",") {
		name, dur, ok := strings.Cut(strings.TrimSpace(m), ";dur=")
		if ok && name == metric {
			ms, err := strconv.ParseFloat(dur, 64)
			if err == nil {
				return time.Duration(ms * float64(time.Millisecond))
			}
		}
	}
	return 0
}
