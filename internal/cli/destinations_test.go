package cli

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/gust-faas/gust/internal/async"
)

func TestAsyncCallbacks(t *testing.T) {
	n := startNode(t, t.TempDir())
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
	return "", answer{status: resp.StatusCode, body: string(body)}
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
	sink := n.record(t, id+"-succeeded", finished)
	if sink.State != async.Succeeded || !strings.Contains(string(sink.Response.Body), `"state":"succeeded"`) || !strings.Contains(string(sink.Response.Body), id) {
		t.Errorf("on_success destination ran with %+v, want the source's record as its body", sink)
	}

	id, _ = n.enqueue(t, "/fn/default/src/panic", "", "")
	data := <-events
	var rec async.Record
	json.Unmarshal(data, &rec)
	if rec.ID != id || rec.State != async.Dead {
		t.Errorf("on_failure subject got %s, want the dead record of %s", data, id)
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
