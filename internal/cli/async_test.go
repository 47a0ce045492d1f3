package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gust-faas/gust/internal/async"
	"github.com/gust-faas/gust/internal/audit"
	"github.com/gust-faas/gust/internal/runtime/wasm/wasmtest"
	"github.com/gust-faas/gust/internal/server"
)

// enqueue sends an asynchronous invocation and returns its id.
func (n *node) enqueue(t *testing.T, path, body, idemKey string) (string, answer) {
	t.Helper()
	req, _ := http.NewRequest("POST", n.url+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+n.key)
	req.Header.Set("Prefer", "respond-async")
	if idemKey != "" {
		req.Header.Set("Idempotency-Key", idemKey)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header, body: buf.String()}
	var acc struct {
		InvocationID string `json:"invocation_id"`
	}
	json.Unmarshal(buf.Bytes(), &acc)
	return acc.InvocationID, a
}

// enqueueMany sends count asynchronous invocations and returns their ids.
func (n *node) enqueueMany(t *testing.T, path string, count int) []string {
	t.Helper()
	var ids []string
	for range count {
		id, a := n.enqueue(t, path, "", "")
		if a.status != 202 {
			t.Fatalf("enqueue: %d %s", a.status, a.body)
		}
		ids = append(ids, id)
	}
	return ids
}

// record polls an invocation until done says it is finished.
func (n *node) record(t *testing.T, id string, done func(async.Record) bool) async.Record {
	t.Helper()
	var rec async.Record
	waitFor(t, func() bool {
		a := n.do(t, "GET", "/v1/invocations/"+id, "", nil)
		if a.status != 200 {
			return false
		}
		rec = async.Record{}
		json.Unmarshal([]byte(a.body), &rec)
		return done(rec)
	})
	return rec
}

func finished(r async.Record) bool { return r.State == async.Succeeded || r.State == async.Dead }

func TestAsyncInvocation(t *testing.T) {
	n := startNode(t, t.TempDir())
	n.deploySpec(t, "work", reactorPath, "")
	id, a := n.enqueue(t, "/fn/default/work/job", "payload", "")
	if a.status != 202 || a.header.Get("Location") != "/v1/invocations/"+id || len(id) != 26 {
		t.Fatalf("async invoke: %d %v %s, want 202 with the id and its Location", a.status, a.header, a.body)
	}
	if st := a.header.Get("Server-Timing"); !strings.HasPrefix(st, "queue;dur=") {
		t.Errorf("202 Server-Timing = %q, want queue;dur=<ms>", st)
	}
	rec := n.record(t, id, finished)
	if rec.State != async.Succeeded || rec.Response == nil || rec.Response.Status != 201 || string(rec.Response.Body) != "POST /job payload" || len(rec.Attempts) != 1 {
		t.Errorf("record = %+v, want succeeded with the function's answer after one attempt", rec)
	}
	if out := n.mustGust(t, "invocations", "get", id); !strings.Contains(out, "succeeded") || !strings.Contains(out, "POST /job payload") {
		t.Errorf("gust invocations get printed %q", out)
	}

	// An invocation that takes a while says so while it runs.
	slow, _ := n.enqueue(t, "/fn/default/work/slow", "", "")
	n.record(t, slow, func(r async.Record) bool { return r.State == async.Running && len(r.Attempts) == 1 })
	if rec := n.record(t, slow, finished); rec.State != async.Succeeded || string(rec.Response.Body) != "slow done" || len(rec.Attempts) != 1 {
		t.Errorf("slow invocation: %+v, want succeeded after one attempt", rec)
	}

	// With one instance for async work (half of max_instances 2), an
	// invocation waits its turn, and says queued meanwhile.
	n.deploySpec(t, "one", reactorPath, `"max_instances":2`)
	one, _ := n.enqueue(t, "/fn/default/one/slow", "", "")
	other, _ := n.enqueue(t, "/fn/default/one/slow", "", "")
	// Either may take the instance first; the other waits.
	state := func(id string) async.State {
		return n.record(t, id, func(async.Record) bool { return true }).State
	}
	var waiting string
	waitFor(t, func() bool {
		switch {
		case state(one) == async.Running:
			waiting = other
		case state(other) == async.Running:
			waiting = one
		}
		return waiting != ""
	})
	if rec := n.record(t, waiting, func(async.Record) bool { return true }); rec.State != async.Queued || rec.Function != "one" || len(rec.Attempts) != 0 || rec.Created.IsZero() {
		t.Errorf("waiting invocation: %+v, want queued with no attempt", rec)
	}
	n.record(t, waiting, finished)
	for _, bad := range []string{"a.b", "a*", "x%20y", strings.Repeat("a", 65), "..%2f.."} {
		if a := n.do(t, "GET", "/v1/invocations/"+bad, "", nil); a.status != 404 {
			t.Errorf("GET /v1/invocations/%s: %d %s, want 404", bad, a.status, a.body)
		}
	}

	// The same Idempotency-Key gives one invocation.
	first, _ := n.enqueue(t, "/fn/default/work/once", "x", "key-1")
	second, a2 := n.enqueue(t, "/fn/default/work/once", "x", "key-1")
	if first != second || !strings.Contains(a2.body, `"duplicate": true`) {
		t.Errorf("same Idempotency-Key: ids %s and %s (%s), want one invocation", first, second, a2.body)
	}
	if rec := n.record(t, first, finished); len(rec.Attempts) != 1 {
		t.Errorf("idempotent invocation ran %d times", len(rec.Attempts))
	}

	// Oversized payloads are refused and nothing is queued.
	_, big := n.enqueue(t, "/fn/default/work/big", strings.Repeat("x", async.MaxPayloadBytes+1), "")
	if big.status != 413 {
		t.Errorf("oversized async payload: %d, want 413", big.status)
	}

	// Another tenant cannot read the invocation.
	n.createTenant(t, "other", "")
	_, otherKey := n.createKey(t, "other", "owner")
	if a := n.doAs(t, otherKey, "GET", "/v1/invocations/"+id, "", nil); a.status != 404 {
		t.Errorf("another tenant reading the invocation: %d, want 404", a.status)
	}
	if a := n.do(t, "GET", "/v1/invocations/nope", "", nil); a.status != 404 {
		t.Errorf("unknown invocation: %d, want 404", a.status)
	}
}

// TestAsyncRecordsBounded: a server keeps at most --max-invocation-records
// records; past it the oldest go first, and GET says why one is gone.
// TestRetriesOutliveTheirRecord: an invocation waiting to be retried whose
// record the bound drops meanwhile is retried as many times as its spec
// says, not once more each time its record goes.
func TestRetriesOutliveTheirRecord(t *testing.T) {
	n := startNode(t, t.TempDir(), func(c *server.Config) { c.MaxInvocationRecords = 3 })
	n.deploySpec(t, "fails", reactorPath, `"retries":1,"retry_delay":"1s"`)
	n.deploySpec(t, "work", reactorPath, "")
	id, _ := n.enqueue(t, "/fn/default/fails/panic", "", "")
	retrying := func() int {
		return strings.Count(n.logs.String(), `msg="async invocation failed; retrying" invocation_id=`+id)
	}
	waitFor(t, func() bool { return retrying() == 1 })
	for range 4 { // the bound drops the failed invocation's record
		n.record(t, n.enqueueMany(t, "/fn/default/work/job", 1)[0], finished)
	}
	waitFor(t, func() bool { return strings.Contains(n.mustGust(t, "dlq", "ls", "fails"), id) })
	if got := retrying(); got != 1 {
		t.Errorf("retried %d times, want once (retries: 1)", got)
	}
}

func TestAsyncRecordsBounded(t *testing.T) {
	n := startNode(t, t.TempDir(), func(c *server.Config) { c.MaxInvocationRecords = 3 })
	n.deploySpec(t, "work", reactorPath, "")
	var ids []string
	for i := range 5 {
		id, a := n.enqueue(t, "/fn/default/work/job", fmt.Sprint(i), "")
		if a.status != 202 {
			t.Fatalf("async invoke %d: %d %s", i, a.status, a.body)
		}
		n.record(t, id, finished) // one at a time: records are written in order
		ids = append(ids, id)
	}
	for i, id := range ids {
		var a answer
		if i < 2 {
			// Gone, once its message has left the queue too (a few
			// milliseconds after the invocation succeeded).
			waitFor(t, func() bool {
				a = n.do(t, "GET", "/v1/invocations/"+id, "", nil)
				return a.status == 404
			})
			if !strings.Contains(a.body, "bound of records") {
				t.Errorf("invocation %d of 5 with a bound of 3: %d %s, want 404 saying records are bounded", i, a.status, a.body)
			}
			continue
		}
		a = n.do(t, "GET", "/v1/invocations/"+id, "", nil)
		var rec async.Record
		json.Unmarshal([]byte(a.body), &rec)
		if a.status != 200 || rec.State != async.Succeeded || rec.Response == nil || string(rec.Response.Body) != fmt.Sprintf("POST /job %d", i) {
			t.Errorf("invocation %d of 5 with a bound of 3: %d %s, want its record", i, a.status, a.body)
		}
	}
	var stderr bytes.Buffer
	if code := Run(t.Context(), []string{"server", "--max-invocation-records", "-1"}, nil, io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), "-1 is negative") {
		t.Errorf("gust server --max-invocation-records -1: exit %d, %q; want a usage error", code, stderr.String())
	}
}

// TestAsyncHeldToQuotas: queued invocations count towards their tenant's
// concurrency quota as they run, as synchronous requests do; one that finds
// the quota taken waits its turn without losing an attempt.
func TestAsyncHeldToQuotas(t *testing.T) {
	n := startNode(t, t.TempDir())
	n.createTenant(t, "tight", `{"max_concurrency":1}`)
	_, dev := n.createKey(t, "tight", "developer")
	if a := n.deployAs(t, dev, "slow", ""); a.status != 201 {
		t.Fatalf("deploy: %d %s", a.status, a.body)
	}
	admin := n.key
	n.key = dev
	ids := n.enqueueMany(t, "/fn/tight/slow/slow", 3)
	var runs []async.Attempt
	for _, id := range ids {
		rec := n.record(t, id, finished)
		if rec.State != async.Succeeded || len(rec.Attempts) != 1 {
			t.Fatalf("invocation %s: %s after %d attempts, want succeeded after one", id, rec.State, len(rec.Attempts))
		}
		runs = append(runs, rec.Attempts[0])
	}
	for i, a := range runs {
		for _, b := range runs[i+1:] {
			if a.Started.Before(b.Ended) && b.Started.Before(a.Ended) {
				t.Errorf("attempts %v-%v and %v-%v ran at once under max_concurrency 1", a.Started, a.Ended, b.Started, b.Ended)
			}
		}
	}

	// A function that can never fit its tenant's memory quota is not
	// retried for ever: it goes to the dead letters, saying why.
	n.key = admin
	n.createTenant(t, "small", `{"max_memory_mb":64}`)
	_, smallDev := n.createKey(t, "small", "developer")
	if a := n.deployAs(t, smallDev, "big", `"memory_mb":128`); a.status != 201 {
		t.Fatalf("deploy: %d %s", a.status, a.body)
	}
	n.key = smallDev
	id, _ := n.enqueue(t, "/fn/small/big/slow", "", "")
	if rec := n.record(t, id, finished); rec.State != async.Dead || len(rec.Attempts) != 0 {
		t.Errorf("invocation over the memory quota: %s after %d attempts, want dead after none", rec.State, len(rec.Attempts))
	}
	if out := n.mustGust(t, "dlq", "ls", "big"); !strings.Contains(out, "more than its tenant's memory quota") {
		t.Errorf("dlq ls does not say why:\n%s", out)
	}
	if a := n.do(t, "GET", "/fn/small/big/x", "", nil); a.status != 403 || a.code != "quota_exceeded" || a.header.Get("Retry-After") != "" {
		t.Errorf("sync invocation over the memory quota: %d %s Retry-After %q, want 403 quota_exceeded without Retry-After", a.status, a.code, a.header.Get("Retry-After"))
	}
}

// TestAsyncBusyFunctionDoesNotBlockOthers: a hundred queued invocations of
// a slow function that has one instance for async work must not hold every
// worker waiting for it: another function's invocation runs at once.
func TestAsyncBusyFunctionDoesNotBlockOthers(t *testing.T) {
	n := startNode(t, t.TempDir())
	n.deploySpec(t, "narrow", reactorPath, `"max_instances":1`)
	n.deploySpec(t, "other", reactorPath, "")
	slow := n.enqueueMany(t, "/fn/default/narrow/slow", 100)
	id, _ := n.enqueue(t, "/fn/default/other/count", "", "")
	quick := n.record(t, id, finished)
	if quick.State != async.Succeeded {
		t.Fatalf("the other function's invocation: %s", quick.State)
	}
	before := 0
	for _, id := range slow {
		var rec async.Record
		json.Unmarshal([]byte(n.do(t, "GET", "/v1/invocations/"+id, "", nil).body), &rec)
		if rec.State == async.Succeeded && rec.Attempts[len(rec.Attempts)-1].Ended.Before(quick.Updated) {
			before++
		}
	}
	// One at a time, 300 ms each: the other function's invocation should
	// not wait for more than a few of them.
	if before > 10 {
		t.Errorf("the other function's invocation finished after %d of the slow function's (of 100): it waited for them", before)
	}
}

// TestTenantNameReused: a tenant deleted and created again under its name
// starts empty: no dead letters, invocation records, idempotency keys or
// audit entries of its predecessor.
func TestTenantNameReused(t *testing.T) {
	n := startNode(t, t.TempDir())
	admin := n.key
	n.createTenant(t, "reborn", "")
	_, owner := n.createKey(t, "reborn", "owner")
	n.key = owner
	n.deploySpec(t, "f", reactorPath, `"retries":0`)
	dead, _ := n.enqueue(t, "/fn/reborn/f/panic", "customer card 4111", "")
	n.record(t, dead, finished)
	keyed, _ := n.enqueue(t, "/fn/reborn/f/ok", "", "same-key")
	n.record(t, keyed, finished)
	if a := n.do(t, "DELETE", "/v1/functions/f", "", nil); a.status >= 300 {
		t.Fatalf("delete function: %d %s", a.status, a.body)
	}
	n.key = admin
	if a := n.do(t, "DELETE", "/v1/tenants/reborn", "", nil); a.status != 204 {
		t.Fatalf("delete tenant: %d %s", a.status, a.body)
	}
	recreated := time.Now()
	n.createTenant(t, "reborn", "")
	_, owner = n.createKey(t, "reborn", "owner")
	n.key = owner
	n.deploySpec(t, "f", reactorPath, `"retries":0`)
	if out := n.mustGust(t, "dlq", "ls", "f"); strings.Contains(out, dead) {
		t.Errorf("the new tenant's dlq ls shows its predecessor's dead letter:\n%s", out)
	}
	for _, id := range []string{dead, keyed} {
		if a := n.do(t, "GET", "/v1/invocations/"+id, "", nil); a.status != 404 {
			t.Errorf("the predecessor's invocation %s: %d %s, want 404", id, a.status, a.body)
		}
	}
	if again, a := n.enqueue(t, "/fn/reborn/f/ok", "", "same-key"); a.status != 202 || again == keyed {
		t.Errorf("the predecessor's Idempotency-Key: %d, invocation %s (the old one %s), want a new invocation", a.status, again, keyed)
	}
	var log struct{ Entries []audit.Entry }
	json.Unmarshal([]byte(n.do(t, "GET", "/v1/audit", "", nil).body), &log)
	for _, e := range log.Entries {
		if e.Time.Before(recreated) {
			t.Errorf("the new tenant's audit log shows its predecessor's entry %+v", e)
		}
	}
	if len(log.Entries) == 0 {
		t.Errorf("the new tenant's audit log is empty; want its own deploy at least")
	}
}

func TestAsyncRetriesAndDeadLetters(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, dir)
	n.deploySpec(t, "fails", reactorPath, `"retries":2,"retry_delay":"100ms"`)
	// The caller's API key is for Gust: neither the queue nor the dead
	// letters keep it.
	admin := n.key
	_, caller := n.createKey(t, "default", "developer")
	n.key = caller
	id, _ := n.enqueue(t, "/fn/default/fails/panic", "", "")
	n.key = admin
	rec := n.record(t, id, finished)
	// Wait for the dead letter to reach the disk: a queued job, with its
	// request, where a record has none. In the store's form of a job
	// (internal/async/codec.go), its id, tenant, function and version are
	// followed by the request's method, each string after its length.
	waitFor(t, func() bool {
		return len(filesContaining(t, dir, id+"\x07default\x05fails\x02\x04POST")) > 0
	})
	if leaked := filesContaining(t, dir, caller); len(leaked) > 0 {
		t.Errorf("the caller's API key is stored in %v", leaked)
	}
	if rec.State != async.Dead || len(rec.Attempts) != 3 {
		t.Fatalf("always-failing invocation: state %s after %d attempts, want dead after 3 (retries 2 + 1)", rec.State, len(rec.Attempts))
	}
	for i := 1; i < len(rec.Attempts); i++ {
		gap := rec.Attempts[i].Started.Sub(rec.Attempts[i-1].Ended)
		want := 80 * time.Millisecond << (i - 1) // 100ms, 200ms, less 20% of jitter
		if gap < want {
			t.Errorf("retry %d came %v after the failure, want at least %v of backoff", i, gap, want)
		}
		if !strings.Contains(rec.Attempts[i].Error, "trapped") {
			t.Errorf("attempt %d error = %q", i, rec.Attempts[i].Error)
		}
	}
	out := n.mustGust(t, "dlq", "ls", "fails")
	if !strings.Contains(out, id) {
		t.Fatalf("dlq ls does not list %s:\n%s", id, out)
	}
	if out := n.mustGust(t, "dlq", "replay", "fails", id); !strings.Contains(out, "queued 1") {
		t.Errorf("dlq replay printed %q", out)
	}
	rec = n.record(t, id, func(r async.Record) bool { return r.State == async.Dead && len(r.Attempts) == 3 })
	if out := n.mustGust(t, "dlq", "ls", "fails"); strings.Count(out, id) != 1 {
		t.Errorf("after the replay failed again, dlq ls lists %s %d times, want once:\n%s", id, strings.Count(out, id), out)
	}
	code, _, errOut := n.gust(t, "", "dlq", "replay", "fails", "no-such-id")
	if code != 1 || !strings.Contains(errOut, "not found") {
		t.Errorf("replay of an unknown id: %d %q", code, errOut)
	}
}

// TestAsyncSurvivesAKill queues 500 invocations, kills the server hard in
// the middle, starts it again on the same data dir, and checks that every
// invocation succeeds; only those in flight at the kill may run twice.
func TestAsyncSurvivesAKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process twice")
	}
	bin := buildGust(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	srv := startProcess(t, bin, addr, dir)
	n := &node{url: "http://" + addr, key: readKey(t, dir)}
	n.deploySpec(t, "sleepy", reactorPath, `"max_instances":32`)
	const total = 500
	ids := make([]string, total)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first string // the first accepted: among the first to run
	)
	for i := range total {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, a := n.enqueue(t, "/fn/default/sleepy/slow", "", "")
			if a.status != 202 {
				t.Errorf("enqueue %d: %d %s", i, a.status, a.body)
			}
			ids[i] = id
			mu.Lock()
			if first == "" {
				first = id
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	// Let some finish and some be in flight, then kill without a drain.
	// (Not ids[0]: the goroutines enqueue in any order, and the last one
	// queued may come after all the others have run.)
	waitFor(t, func() bool {
		a := n.do(t, "GET", "/v1/invocations/"+first, "", nil)
		return strings.Contains(a.body, `"succeeded"`)
	})
	srv.Process.Kill()
	srv.Wait()

	startProcess(t, bin, addr, dir)
	deadline := time.Now().Add(3 * time.Minute)
	twice := 0
	for _, id := range ids {
		for {
			a := n.do(t, "GET", "/v1/invocations/"+id, "", nil)
			var rec async.Record
			json.Unmarshal([]byte(a.body), &rec)
			if rec.State == async.Succeeded {
				if len(rec.Attempts) > 1 {
					twice++
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("invocation %s is %q after the restart, want succeeded", id, rec.State)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	t.Logf("all %d invocations succeeded; %d ran more than once (those in flight at the kill)", total, twice)
	if twice > async.Workers {
		t.Errorf("%d invocations ran twice, more than could have been in flight (%d)", twice, async.Workers)
	}
}

var (
	gustOnce sync.Once
	gustBin  string
	gustErr  error
)

// buildGust builds the gust binary once per test run.
func buildGust(t *testing.T) string {
	t.Helper()
	gustOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gust-bin-")
		if err != nil {
			gustErr = err
			return
		}
		gustBin = filepath.Join(dir, "gust")
		cmd := exec.Command("go", "build", "-o", gustBin, "./cmd/gust")
		root, _ := wasmtest.ModuleRoot()
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			gustErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if gustErr != nil {
		t.Fatal(gustErr)
	}
	return gustBin
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startProcess(t *testing.T, bin, addr, dir string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "server", "--addr", addr, "--data-dir", dir, "--log-level", "warn")
	cmd.Env = append(os.Environ(), "GUST_CONFIG="+filepath.Join(dir, "no-config.json"))
	var logs syncBuffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	waitFor(t, func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return cmd
}

func readKey(t *testing.T, dir string) string {
	data, err := os.ReadFile(filepath.Join(dir, "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

// filesContaining returns the files under dir that contain s.
func filesContaining(t *testing.T, dir, s string) []string {
	t.Helper()
	var found []string
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if data, err := os.ReadFile(path); err == nil && bytes.Contains(data, []byte(s)) {
			found = append(found, path)
		}
		return nil
	})
	return found
}

// TestFunctionNameReused: a function deleted and deployed again under its
// name inherits none of its predecessor's async work: no dead letters to
// list or replay onto the new code, no result for an Idempotency-Key, and
// no retry queued before the delete, neither run nor buried.
func TestFunctionNameReused(t *testing.T) {
	n := startNode(t, t.TempDir())
	n.deploySpec(t, "f", reactorPath, `"retries":0`)
	dead, _ := n.enqueue(t, "/fn/default/f/panic", "", "")
	n.record(t, dead, finished)
	keyed, _ := n.enqueue(t, "/fn/default/f/ok", "", "same-key")
	n.record(t, keyed, finished)
	n.deploySpec(t, "r", reactorPath, `"retries":1,"retry_delay":"1s"`)
	retried, _ := n.enqueue(t, "/fn/default/r/panic", "", "")
	n.record(t, retried, func(r async.Record) bool { return r.State == async.Failed })
	for _, name := range []string{"f", "r"} {
		if a := n.do(t, "DELETE", "/v1/functions/"+name, "", nil); a.status != 204 {
			t.Fatalf("delete function %s: %d %s", name, a.status, a.body)
		}
	}
	n.deploySpec(t, "f", reactorPath, `"retries":0`)
	n.deploySpec(t, "r", reactorPath, `"retries":0`)
	if out := n.mustGust(t, "dlq", "ls", "f"); strings.Contains(out, dead) {
		t.Errorf("the new function's dlq ls shows its predecessor's dead letter:\n%s", out)
	}
	if a := n.do(t, "POST", "/v1/functions/f/dlq/replay", "", nil); strings.Contains(a.body, `"replayed":1`) {
		t.Errorf("a replay of the new function replayed its predecessor's letter: %s", a.body)
	}
	if again, a := n.enqueue(t, "/fn/default/f/ok", "", "same-key"); a.status != 202 || again == keyed {
		t.Errorf("the predecessor's Idempotency-Key: %d, invocation %s (the old one %s), want a new invocation", a.status, again, keyed)
	}
	// The predecessor's retry comes due and is dropped, not run on the new
	// code: its record ends dead.
	if rec := n.record(t, retried, func(r async.Record) bool { return r.State != async.Failed }); rec.State != async.Dead || len(rec.Attempts) != 1 {
		t.Errorf("the predecessor's queued retry: %s after %d attempts, want it dead after its 1, neither run on the new function nor buried in its dead letters", rec.State, len(rec.Attempts))
	}
	if out := n.mustGust(t, "dlq", "ls", "r"); strings.Contains(out, retried) {
		t.Errorf("the new function's dlq ls shows its predecessor's retry:\n%s", out)
	}
}

// TestShutdownCutDoesNotSpendAnAttempt: an async invocation that a
// server's shutdown cut off (it ran past the shutdown's deadline) is
// recorded as not attempted before the store closes: with retries 0 it
// runs again after the restart, instead of going to the dead letters for
// "the worker running it stopped".
func TestShutdownCutDoesNotSpendAnAttempt(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, dir)
	n.deploySpec(t, "long", reactorPath, `"retries":0`)
	id, a := n.enqueue(t, "/fn/default/long/sleep", "", "")
	if a.status != 202 {
		t.Fatalf("enqueue: %d %s", a.status, a.body)
	}
	n.record(t, id, func(r async.Record) bool { return r.State == async.Running })
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	n.srv.Stop(ctx) // the invocation sleeps an hour: cut off
	n = startNode(t, dir)
	rec := n.record(t, id, func(r async.Record) bool { return r.State == async.Running || r.State == async.Dead })
	if rec.State != async.Running || len(rec.Attempts) != 1 {
		t.Errorf("after the restart: %s with attempts %+v; want it running again, its cut attempt not counted", rec.State, rec.Attempts)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	n.srv.Stop(ctx) // cut off again: a guest left running in a closed runtime once crashed this test binary later
}
