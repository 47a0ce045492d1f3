package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gust-faas/gust/internal/async"
	"github.com/gust-faas/gust/internal/server"
)

func TestAsyncCallbacks(t *testing.T) {
	n := startNode(t, t.TempDir(), func(c *server.Config) {
		c.CallbackAllow = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	})
	n.deploySpec(t, "work", reactorPath, "")
	var mu sync.Mutex
	var got []async.Record
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var rec async.Record
		body, _ := io.ReadAll(r.Body)
		json.Unmarshal(body, &rec)
		mu.Lock()
		got = append(got, rec)
		mu.Unlock()
	}))
	defer hook.Close()

	req, _ := http.NewRequest("POST", n.url+"/fn/default/work/cb", strings.NewReader("x"))
	req.Header.Set("Authorization", "Bearer "+n.key)
	req.Header.Set("Prefer", "respond-async")
	req.Header.Set("X-Callback-Url", hook.URL)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 1 })
	if got[0].State != async.Succeeded || string(got[0].Response.Body) != "POST /cb x" {
		t.Errorf("callback got %+v, want the succeeded record", got[0])
	}

	// A callback URL that is down is retried, then given up with a log
	// line; the invocation stays succeeded.
	down := freeAddr(t)
	req, _ = http.NewRequest("POST", n.url+"/fn/default/work/cb", strings.NewReader("y"))
	req.Header.Set("Authorization", "Bearer "+n.key)
	req.Header.Set("Prefer", "respond-async")
	req.Header.Set("X-Callback-Url", "http://"+down+"/hook")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var acc struct {
		InvocationID string `json:"invocation_id"`
	}
	json.NewDecoder(resp.Body).Decode(&acc)
	resp.Body.Close()
	waitFor(t, func() bool { return strings.Contains(n.logs.String(), "gave up posting the invocation's callback") })
	if rec := n.record(t, acc.InvocationID, finished); rec.State != async.Succeeded {
		t.Errorf("state after a failed callback = %s, want succeeded", rec.State)
	}

	if _, a := n.enqueueWith(t, "/fn/default/work", map[string]string{"X-Callback-Url": "ftp://x"}); a.status != 400 {
		t.Errorf("bad callback URL: %d, want 400", a.status)
	}
}

// TestAsyncCallbacksStayOutside: by default a callback cannot reach the
// server's own loopback or private networks, named by address (refused at
// once) or by a name that resolves there (refused when dialled).
func TestAsyncCallbacksStayOutside(t *testing.T) {
	n := startNode(t, t.TempDir())
	n.deploySpec(t, "work", reactorPath, "")
	var hits atomic.Int32
	hook := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	defer hook.Close()
	_, port, _ := net.SplitHostPort(hook.Listener.Addr().String())
	for _, u := range []string{hook.URL, "http://[::1]:" + port + "/", "http://169.254.169.254/latest/meta-data/", "http://10.1.2.3/", "http://[::ffff:127.0.0.1]:" + port + "/"} {
		if _, a := n.enqueueWith(t, "/fn/default/work", map[string]string{"X-Callback-Url": u}); a.status != 400 || !strings.Contains(a.body, "may not reach") || !strings.Contains(a.body, "--callback-allow") {
			t.Errorf("X-Callback-Url %s: %d %s, want 400 saying callbacks may not reach it", u, a.status, a.body)
		}
	}
	id, a := n.enqueueWith(t, "/fn/default/work", map[string]string{"X-Callback-Url": "http://localhost:" + port + "/hook"})
	if a.status != 202 {
		t.Fatalf("X-Callback-Url naming localhost: %d %s, want 202 (checked when dialled)", a.status, a.body)
	}
	if rec := n.record(t, id, finished); rec.State != async.Succeeded {
		t.Errorf("invocation: %s, want succeeded whatever its callback does", rec.State)
	}
	waitFor(t, func() bool {
		return strings.Contains(n.logs.String(), "gave up posting the invocation's callback") && strings.Contains(n.logs.String(), "may not reach")
	})
	if hits.Load() != 0 {
		t.Errorf("the loopback hook was posted %d times, want never", hits.Load())
	}
}

func (n *node) enqueueWith(t *testing.T, path string, headers map[string]string) (string, answer) {
	t.Helper()
	req, _ := http.NewRequest("POST", n.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+n.key)
	req.Header.Set("Prefer", "respond-async")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var acc struct {
		InvocationID string `json:"invocation_id"`
	}
	json.Unmarshal(body, &acc)
	return acc.InvocationID, answer{status: resp.StatusCode, body: string(body)}
}

func TestAsyncDestinations(t *testing.T) {
	n := startNode(t, t.TempDir())
	n.deploySpec(t, "sink", reactorPath, "")
	n.deploySpec(t, "src", reactorPath, `"retries":0,"on_success":{"function":"sink"},"on_failure":{"subject":"failures"}`)
	events := make(chan []byte, 4)
	unsubscribe, err := n.srv.Store().Subscribe(async.EventsPrefix+"default.failures", func(data []byte) { events <- data })
	if err != nil {
		t.Fatal(err)
	}
	defer unsubscribe()

	id, _ := n.enqueue(t, "/fn/default/src/ok", "hello", "")
	sink := n.record(t, id+"-s", finished)
	if sink.State != async.Succeeded || !strings.Contains(string(sink.Response.Body), `"state":"succeeded"`) || !strings.Contains(string(sink.Response.Body), id) {
		t.Errorf("on_success destination ran with %+v, want the source's record as its body", sink)
	}
	if body := string(sink.Response.Body); !strings.HasSuffix(body, " source="+id) {
		t.Errorf("on_success destination answered %q, want it to have seen X-Gust-Source-Invocation: %s", body, id)
	}
	// A caller cannot pass for a source invocation.
	forged, _ := http.NewRequest("POST", n.url+"/fn/default/sink/", strings.NewReader("x"))
	forged.Header.Set("Authorization", "Bearer "+n.key)
	forged.Header.Set("X-Gust-Source-Invocation", "forged")
	resp, err := http.DefaultClient.Do(forged)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 || strings.Contains(string(body), "source=") {
		t.Errorf("a caller's X-Gust-Source-Invocation: %d %q, want 201 without it reaching the function", resp.StatusCode, body)
	}

	id, _ = n.enqueue(t, "/fn/default/src/panic", "", "")
	data := <-events
	var rec async.Record
	json.Unmarshal(data, &rec)
	if rec.ID != id || rec.State != async.Dead {
		t.Errorf("on_failure subject got %s, want the dead record of %s", data, id)
	}

	// A replay that fails again reaches its on_failure destination again.
	n.deploySpec(t, "src2", reactorPath, `"retries":0,"on_failure":{"function":"sink"}`)
	id, _ = n.enqueue(t, "/fn/default/src2/panic", "", "")
	first := n.record(t, id+"-d", finished)
	if first.State != async.Succeeded {
		t.Fatalf("on_failure destination: %s", first.State)
	}
	n.mustGust(t, "dlq", "replay", "src2", id)
	// The replay's destination is an invocation of its own: the first
	// run's keeps its record.
	again := n.record(t, id+"-d1", finished)
	if again.State != async.Succeeded || !strings.Contains(string(again.Response.Body), `"state":"dead"`) {
		t.Errorf("on_failure destination of the replay: %+v", again)
	}
	if rec := n.record(t, id+"-d", finished); !rec.Created.Equal(first.Created) {
		t.Errorf("the first run's destination record was replaced: created %s, was %s", rec.Created, first.Created)
	}

	// A function that is its own destination stops after 19 hops, when
	// the id would grow past 64 characters.
	n.deploySpec(t, "loop", reactorPath, `"on_success":{"function":"loop"}`)
	id, _ = n.enqueue(t, "/fn/default/loop/ok", "", "")
	waitFor(t, func() bool { return strings.Contains(n.logs.String(), "a chain of destinations went too deep") })
	last := id + strings.Repeat("-s", 19)
	if rec := n.record(t, last, finished); rec.State != async.Succeeded {
		t.Errorf("hop 19 of the loop: %s, want succeeded", rec.State)
	}
	if a := n.do(t, "GET", "/v1/invocations/"+last+"-s", "", nil); a.status != 404 {
		t.Errorf("hop 20 of the loop: %d, want 404 (never queued)", a.status)
	}

	for _, bad := range []string{
		`"on_success":{"function":"a","subject":"b"}`,
		`"on_success":{}`,
		`"on_failure":{"subject":"a.*"}`,
		`"on_failure":{"function":"Bad"}`,
	} {
		if a := n.deployRaw(t, "bad", "{"+bad+"}", helloWasm); a.status != 400 {
			t.Errorf("destination %s: %d %s, want 400", bad, a.status, a.body)
		}
	}
}

func TestParsePrefixes(t *testing.T) {
	got, err := parsePrefixes(" 10.0.0.0/8, 127.0.0.1 ,fd00::/8,,192.168.1.7/16")
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("fd00::/8"), netip.MustParsePrefix("192.168.0.0/16")}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("parsePrefixes = %v, %v; want %v", got, err, want)
	}
	if got, err := parsePrefixes(""); err != nil || len(got) != 0 {
		t.Errorf("parsePrefixes(\"\") = %v, %v; want none", got, err)
	}
	var stderr bytes.Buffer
	if code := Run(context.Background(), []string{"server", "--callback-allow", "10.0.0.0/8,intranet"}, nil, io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), `"intranet" is neither a network`) {
		t.Errorf("gust server --callback-allow intranet: exit %d, %q; want a usage error naming it", code, stderr.String())
	}
}
