package store_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gust-faas/gust/internal/store"
)

// openStore starts a real embedded server on dir and closes it when the test
// ends (Close may be called twice, so tests may also close it themselves).
func openStore(t *testing.T, cfg store.Config) *store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	s, err := store.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("Open(%+v) error = %v, want nil", cfg, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close() = %v, want nil", err)
		}
	})
	return s
}

func openKV(t *testing.T, s *store.Store, bucket string) *store.KV {
	t.Helper()
	kv, err := s.KV(t.Context(), bucket)
	if err != nil {
		t.Fatalf("KV(%q) error = %v, want nil", bucket, err)
	}
	return kv
}

func openObjects(t *testing.T, s *store.Store, bucket string) *store.Objects {
	t.Helper()
	obs, err := s.Objects(t.Context(), bucket)
	if err != nil {
		t.Fatalf("Objects(%q) error = %v, want nil", bucket, err)
	}
	return obs
}

func TestOpenRefusesBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  store.Config
	}{
		{"no data dir", store.Config{}},
		{"listen without port", store.Config{DataDir: "x", Listen: "127.0.0.1", Token: "t"}},
		{"listen with named port", store.Config{DataDir: "x", Listen: "127.0.0.1:nats", Token: "t"}},
		{"listen without a token", store.Config{DataDir: "x", Listen: "127.0.0.1:0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			if cfg.DataDir != "" {
				cfg.DataDir = t.TempDir()
			}
			s, err := store.Open(t.Context(), cfg)
			if err == nil {
				s.Close()
				t.Fatalf("Open(%+v) error = nil, want an error", cfg)
			}
		})
	}
}

func TestCloseTwice(t *testing.T) {
	s := openStore(t, store.Config{DataDir: t.TempDir()})
	for i := range 2 {
		if err := s.Close(); err != nil {
			t.Fatalf("Close() #%d = %v, want nil", i+1, err)
		}
	}
}

func TestDataSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	ctx := t.Context()
	blob := randomBytes(t, 64<<10)

	s := openStore(t, store.Config{DataDir: dir})
	kv := openKV(t, s, "survive")
	rev, err := kv.Create(ctx, "k", []byte("v1"))
	if err != nil {
		t.Fatalf("Create(k) error = %v", err)
	}
	rev, err = kv.Update(ctx, "k", []byte("v2"), rev)
	if err != nil {
		t.Fatalf("Update(k) error = %v", err)
	}
	if err := openObjects(t, s, "survive_obj").Put(ctx, "blob", blob); err != nil {
		t.Fatalf("Put(blob) error = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v, want nil", err)
	}

	s = openStore(t, store.Config{DataDir: dir})
	got, err := openKV(t, s, "survive").Get(ctx, "k")
	if err != nil {
		t.Fatalf("after reopen, Get(k) error = %v, want nil", err)
	}
	if string(got.Value) != "v2" || got.Revision != rev {
		t.Errorf("after reopen, Get(k) = %q at revision %d, want %q at revision %d", got.Value, got.Revision, "v2", rev)
	}
	data, err := openObjects(t, s, "survive_obj").Get(ctx, "blob")
	if err != nil {
		t.Fatalf("after reopen, object Get(blob) error = %v, want nil", err)
	}
	if !bytes.Equal(data, blob) {
		t.Errorf("after reopen, object Get(blob) = %d bytes that differ from the %d put", len(data), len(blob))
	}
}

// TestOpenDoesNotListen runs without t.Parallel so that no other test opens a
// socket while it compares this process's listening sockets.
func TestOpenDoesNotListen(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads the process's sockets from /proc")
	}
	// Make sure NATS's default port is taken, by us or by whatever already
	// holds it: a store that tried to listen there would fail to start.
	if l, err := net.Listen("tcp", "127.0.0.1:4222"); err == nil {
		defer l.Close()
	}
	before := listeningSockets(t)
	s := openStore(t, store.Config{DataDir: t.TempDir()})
	after := listeningSockets(t)
	if !slices.Equal(before, after) {
		t.Errorf("listening sockets of this process: before Open %v, after %v; want no new one", before, after)
	}
	kv := openKV(t, s, "quiet")
	if _, err := kv.Create(t.Context(), "k", []byte("v")); err != nil {
		t.Errorf("Create(k) on a store that does not listen: error = %v, want nil", err)
	}
}

func TestOpenListens(t *testing.T) {
	addr := freeAddr(t)
	s := openStore(t, store.Config{DataDir: t.TempDir(), Listen: addr, Token: "the-token"})

	// Clients must give the token; Gust's own connection does.
	if nc, err := nats.Connect("nats://"+addr, nats.Timeout(5*time.Second)); err == nil {
		nc.Close()
		t.Errorf("a NATS client without the token connected to %s, want it refused", addr)
	} else if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Errorf("a NATS client without the token: %v, want an authorization error", err)
	}
	nc, err := nats.Connect("nats://"+addr, nats.Token("the-token"), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("a NATS client with the token: %v", err)
	}
	nc.Close()
	kv := openKV(t, s, "listening")
	if _, err := kv.Create(t.Context(), "k", []byte("v")); err != nil {
		t.Errorf("Create(k) on a store that listens: %v", err)
	}

	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("Dial(%s) with Listen %q: %v, want a connection", addr, addr, err)
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	conn.Close()
	if err != nil || !strings.HasPrefix(line, "INFO ") {
		t.Errorf("first line from %s = %q, %v; want a NATS INFO line", addr, line, err)
	}

	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v, want nil", err)
	}
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		conn.Close()
		t.Errorf("Dial(%s) after Close succeeded, want the port closed", addr)
	}
}

// TestOpenListenPortTaken: Open must fail at once, with the cause, when the
// Listen port is taken, rather than wait out its deadline.
func TestOpenListenPortTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addr := l.Addr().String()

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	start := time.Now()
	s, err := store.Open(ctx, store.Config{DataDir: t.TempDir(), Listen: addr, Token: "t"})
	elapsed := time.Since(start)
	if err == nil {
		s.Close()
		t.Fatalf("Open with Listen %s already taken: error = nil, want one", addr)
	}
	if !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("Open with Listen %s already taken: error = %q, want it to give the cause", addr, err)
	}
	if elapsed > 2*time.Second {
		t.Errorf("Open with Listen %s already taken returned after %v, want it to fail at once", addr, elapsed)
	}
}

func TestKVErrors(t *testing.T) {
	s := openStore(t, store.Config{DataDir: t.TempDir()})
	kv := openKV(t, s, "errors")
	tests := []struct {
		name string
		// do runs against a fresh key that holds "v" at revision rev.
		do   func(ctx context.Context, key string, rev uint64) error
		want error
	}{
		{"create existing", func(ctx context.Context, key string, rev uint64) error {
			_, err := kv.Create(ctx, key, []byte("again"))
			return err
		}, store.ErrConflict},
		{"update with stale revision", func(ctx context.Context, key string, rev uint64) error {
			if _, err := kv.Update(ctx, key, []byte("v2"), rev); err != nil {
				return fmt.Errorf("first update: %w", err)
			}
			_, err := kv.Update(ctx, key, []byte("v3"), rev)
			return err
		}, store.ErrConflict},
		{"update with future revision", func(ctx context.Context, key string, rev uint64) error {
			_, err := kv.Update(ctx, key, []byte("v2"), rev+1000)
			return err
		}, store.ErrConflict},
		{"delete with stale revision", func(ctx context.Context, key string, rev uint64) error {
			if _, err := kv.Update(ctx, key, []byte("v2"), rev); err != nil {
				return fmt.Errorf("update: %w", err)
			}
			return kv.Delete(ctx, key, rev)
		}, store.ErrConflict},
		{"get missing", func(ctx context.Context, key string, rev uint64) error {
			_, err := kv.Get(ctx, key+"-missing")
			return err
		}, store.ErrNotFound},
		{"get deleted", func(ctx context.Context, key string, rev uint64) error {
			if err := kv.Delete(ctx, key, rev); err != nil {
				return fmt.Errorf("delete: %w", err)
			}
			_, err := kv.Get(ctx, key)
			return err
		}, store.ErrNotFound},
		{"create after delete", func(ctx context.Context, key string, rev uint64) error {
			if err := kv.Delete(ctx, key, rev); err != nil {
				return fmt.Errorf("delete: %w", err)
			}
			if _, err := kv.Create(ctx, key, []byte("again")); err != nil {
				return fmt.Errorf("create: %w", err)
			}
			e, err := kv.Get(ctx, key)
			if err == nil && string(e.Value) != "again" {
				return fmt.Errorf("get = %q, want %q", e.Value, "again")
			}
			return err
		}, nil},
		{"update with current revision", func(ctx context.Context, key string, rev uint64) error {
			rev2, err := kv.Update(ctx, key, []byte("v2"), rev)
			if err != nil {
				return err
			}
			if rev2 <= rev {
				return fmt.Errorf("update returned revision %d, want more than %d", rev2, rev)
			}
			e, err := kv.Get(ctx, key)
			if err == nil && (string(e.Value) != "v2" || e.Revision != rev2) {
				return fmt.Errorf("get = %q at %d, want %q at %d", e.Value, e.Revision, "v2", rev2)
			}
			return err
		}, nil},
		{"put over any revision", func(ctx context.Context, key string, rev uint64) error {
			rev2, err := kv.Put(ctx, key, []byte("put"))
			if err != nil {
				return err
			}
			e, err := kv.Get(ctx, key)
			if err == nil && (string(e.Value) != "put" || e.Revision != rev2 || rev2 <= rev) {
				return fmt.Errorf("get = %q at %d after a put at %d over %d", e.Value, e.Revision, rev2, rev)
			}
			return err
		}, nil},
		{"put of a key the bucket refuses", func(ctx context.Context, key string, rev uint64) error {
			for _, bad := range []string{"", ".x", "x.", "a..b", "a b", "a*", "a>", "ä"} {
				if _, err := kv.Put(ctx, bad, []byte("x")); !errors.Is(err, jetstream.ErrInvalidKey) {
					return fmt.Errorf("put %q: %v, want an invalid key", bad, err)
				}
			}
			e, err := kv.Get(ctx, key)
			if err == nil && (string(e.Value) != "v" || e.Revision != rev) {
				return fmt.Errorf("the bucket's key changed to %q at %d", e.Value, e.Revision)
			}
			return err
		}, nil},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			key := fmt.Sprintf("key%d", i)
			rev, err := kv.Create(ctx, key, []byte("v"))
			if err != nil {
				t.Fatalf("Create(%s) error = %v, want nil", key, err)
			}
			err = tt.do(ctx, key, rev)
			if tt.want == nil && err != nil {
				t.Errorf("error = %v, want nil", err)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("error = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestKVHammer increments one counter from many goroutines with
// read-modify-write and retry on ErrConflict: no increment may be lost.
func TestKVHammer(t *testing.T) {
	s := openStore(t, store.Config{DataDir: t.TempDir()})
	kv := openKV(t, s, "hammer")
	ctx := t.Context()
	if _, err := kv.Create(ctx, "n", []byte("0")); err != nil {
		t.Fatalf("Create(n) error = %v", err)
	}
	const workers, each = 16, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for range each {
				for {
					e, err := kv.Get(ctx, "n")
					if err != nil {
						errs <- err
						return
					}
					n, err := strconv.Atoi(string(e.Value))
					if err != nil {
						errs <- err
						return
					}
					_, err = kv.Update(ctx, "n", []byte(fmt.Sprint(n+1)), e.Revision)
					if errors.Is(err, store.ErrConflict) {
						continue
					}
					if err != nil {
						errs <- err
						return
					}
					break
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("increment: %v", err)
	}
	e, err := kv.Get(ctx, "n")
	if err != nil {
		t.Fatalf("Get(n) error = %v", err)
	}
	if got, want := string(e.Value), fmt.Sprint(workers*each); got != want {
		t.Errorf("counter = %s, want %s", got, want)
	}
}

// event is what a watch delivered: an entry, or synced.
type event struct {
	store.Entry
	synced bool
}

func (e event) String() string {
	if e.synced {
		return "synced"
	}
	return fmt.Sprintf("%s=%q deleted=%v", e.Key, e.Value, e.Deleted)
}

func TestKVWatch(t *testing.T) {
	s := openStore(t, store.Config{DataDir: t.TempDir()})
	kv := openKV(t, s, "watch")
	ctx := t.Context()

	revA, err := kv.Create(ctx, "a", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, "b", []byte("2")); err != nil {
		t.Fatal(err)
	}

	events := make(chan event, 100)
	watchCtx, stop := context.WithCancel(ctx)
	defer stop()
	err = kv.Watch(watchCtx,
		func(e store.Entry) { events <- event{Entry: e} },
		func() { events <- event{synced: true} })
	if err != nil {
		t.Fatalf("Watch() error = %v, want nil", err)
	}

	want := []string{`a="1" deleted=false`, `b="2" deleted=false`, "synced"}
	got := nextEvents(t, events, len(want))
	if !slices.Equal(got, want) {
		t.Fatalf("events before changes = %q, want %q", got, want)
	}

	revA, err = kv.Update(ctx, "a", []byte("3"), revA)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, "c", []byte("4")); err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, "b", e.Revision); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, "a", revA); err != nil {
		t.Fatal(err)
	}
	// Every change arrives, in revision order, except that a watch
	// restarted under load (an ordered consumer's reset) may skip a value
	// replaced meanwhile: what it shows converges to the bucket's state.
	want = []string{`a="3" deleted=false`, `c="4" deleted=false`, `b="" deleted=true`, `a="" deleted=true`}
	final := map[string]string{"a": `a="" deleted=true`, "b": `b="" deleted=true`, "c": `c="4" deleted=false`}
	state := map[string]string{}
	var got2 []string
	var last uint64
	deadline := time.After(5 * time.Second)
	for !maps.Equal(state, final) {
		select {
		case e := <-events:
			if e.synced {
				continue
			}
			if e.Revision <= last {
				t.Errorf("event %s at revision %d came after revision %d", e, e.Revision, last)
			}
			last = e.Revision
			state[e.Key] = e.String()
			got2 = append(got2, e.String())
		case <-deadline:
			t.Fatalf("after 5s the watch showed %q, want it to reach %q", got2, want)
		}
	}
	if !slices.Equal(got2, want) {
		t.Logf("the watch skipped a replaced value: %q (want, without a restart: %q)", got2, want)
	}
}

func TestKVWatchEmptyBucketSyncs(t *testing.T) {
	s := openStore(t, store.Config{DataDir: t.TempDir()})
	kv := openKV(t, s, "empty")
	events := make(chan event, 10)
	err := kv.Watch(t.Context(),
		func(e store.Entry) { events <- event{Entry: e} },
		func() { events <- event{synced: true} })
	if err != nil {
		t.Fatalf("Watch() error = %v, want nil", err)
	}
	if got, want := nextEvents(t, events, 1), []string{"synced"}; !slices.Equal(got, want) {
		t.Errorf("events on an empty bucket = %q, want %q", got, want)
	}
}

func nextEvents(t *testing.T, events <-chan event, n int) []string {
	t.Helper()
	var got []string
	deadline := time.After(5 * time.Second)
	for len(got) < n {
		select {
		case e := <-events:
			got = append(got, e.String())
		case <-deadline:
			t.Fatalf("after 5s got events %q, want %d events", got, n)
		}
	}
	return got
}

func TestObjects(t *testing.T) {
	s := openStore(t, store.Config{DataDir: t.TempDir()})
	obs := openObjects(t, s, "objects")
	ctx := t.Context()
	blob := randomBytes(t, 3<<20)

	if _, err := obs.Info(ctx, "big"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Info(big) before Put: error = %v, want ErrNotFound", err)
	}
	before := time.Now()
	if err := obs.Put(ctx, "big", blob); err != nil {
		t.Fatalf("Put(big, 3 MiB) error = %v, want nil", err)
	}
	if info, err := obs.Info(ctx, "big"); err != nil || info.Name != "big" || info.Modified.Before(before.Add(-time.Second)) {
		t.Errorf("Info(big) after Put = %+v, %v; want it, modified now", info, err)
	}
	if list, err := obs.List(ctx); err != nil || len(list) != 1 || list[0].Name != "big" {
		t.Errorf("List() = %+v, %v; want big alone", list, err)
	}
	got, err := obs.Get(ctx, "big")
	if err != nil {
		t.Fatalf("Get(big) error = %v, want nil", err)
	}
	if !bytes.Equal(got, blob) {
		t.Errorf("Get(big) = %d bytes that differ from the %d put", len(got), len(blob))
	}

	if _, err := obs.Get(ctx, "missing"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get(missing) error = %v, want %v", err, store.ErrNotFound)
	}

	// Putting again under the same name replaces the object.
	if err := obs.Put(ctx, "big", []byte("small")); err != nil {
		t.Fatalf("Put(big) again error = %v, want nil", err)
	}
	if got, err := obs.Get(ctx, "big"); err != nil || string(got) != "small" {
		t.Errorf("Get(big) after replacing = %d bytes, %v; want %q", len(got), err, "small")
	}

	for i := range 2 { // deleting what is gone is no error
		if err := obs.Delete(ctx, "big"); err != nil {
			t.Errorf("Delete(big) #%d error = %v, want nil", i+1, err)
		}
	}
	if _, err := obs.Get(ctx, "big"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get(big) after Delete: error = %v, want %v", err, store.ErrNotFound)
	}
	if list, err := obs.List(ctx); err != nil || len(list) != 0 {
		t.Errorf("List() after Delete = %+v, %v; want nothing", list, err)
	}
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// jetStreamClient connects to the NATS port of a store at addr, as another
// program would, for a test to reach behind the store's back. The
// connection closes when the test ends.
func jetStreamClient(t *testing.T, addr, token string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect("nats://"+addr, nats.Token(token))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// listeningSockets returns the local addresses of the TCP sockets this
// process is listening on, sorted.
func listeningSockets(t *testing.T) []string {
	t.Helper()
	inodes := map[string]bool{}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot list this process's files: %v", err)
	}
	for _, fd := range fds {
		link, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	var out []string
	for _, table := range []string{"/proc/self/net/tcp", "/proc/self/net/tcp6"} {
		data, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			const listen = "0A"
			if len(f) >= 10 && f[3] == listen && inodes[f[9]] {
				out = append(out, f[1])
			}
		}
	}
	slices.Sort(out)
	return out
}

func TestStreamLast(t *testing.T) {
	s := openStore(t, store.Config{DataDir: t.TempDir()})
	ctx := t.Context()
	st, err := s.Stream(ctx, "log", []string{"log.>"}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := st.Last(ctx, 5, "log.a"); err != nil || len(got) != 0 {
		t.Fatalf("Last of an empty stream = %v, %v; want none", got, err)
	}
	// 2000 messages, one in four on log.a: enough that Last searches for
	// where to start instead of reading them all.
	var seqOf []uint64 // seqOf[i] is the sequence of message i
	for i := range 2000 {
		subject := "log.b"
		if i%4 == 0 {
			subject = "log.a"
		}
		if err := st.Publish(ctx, subject, []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
		seqOf = append(seqOf, uint64(i+1))
	}
	// Deleted messages are not counted.
	if err := st.Delete(ctx, seqOf[1996]); err != nil {
		t.Fatal(err)
	}
	// A message gone already, or never there, is no error to delete.
	for _, seq := range []uint64{seqOf[1996], 1 << 40} {
		if err := st.Delete(ctx, seq); err != nil {
			t.Errorf("Delete(%d) of a message that is not there: %v, want nil", seq, err)
		}
	}
	want := func(is ...int) []string {
		var out []string
		for _, i := range is {
			out = append(out, fmt.Sprintf("%d@%d", i, seqOf[i]))
		}
		return out
	}
	got := func(filter string, n int, more ...string) []string {
		t.Helper()
		msgs, err := st.Last(ctx, n, append([]string{filter}, more...)...)
		if err != nil {
			t.Fatalf("Last(%q, %d) error = %v", filter, n, err)
		}
		var out []string
		for _, m := range msgs {
			out = append(out, fmt.Sprintf("%s@%d", m.Data, m.Seq))
		}
		return out
	}
	for _, tc := range []struct {
		filter string
		n      int
		want   []string
	}{
		{"log.a", 5, want(1976, 1980, 1984, 1988, 1992)},
		{"log.a", 1, want(1992)},
		{"log.>", 3, want(1997, 1998, 1999)},
		{"log.b", 2, want(1998, 1999)},
		{"log.none", 5, nil},
		{"log.a", 0, nil},
	} {
		if g := got(tc.filter, tc.n); !slices.Equal(g, tc.want) {
			t.Errorf("Last(%q, %d) = %v, want %v", tc.filter, tc.n, g, tc.want)
		}
	}
	// Several filters: the last n matching any of them.
	if g := got("log.a", 5, "log.b"); !slices.Equal(g, want(1994, 1995, 1997, 1998, 1999)) {
		t.Errorf("Last(log.a + log.b, 5) = %v, want %v", g, want(1994, 1995, 1997, 1998, 1999))
	}
	if g := got("log.a", 300, "log.none"); len(g) != 300 || g[299] != want(1992)[0] || g[0] != want(796)[0] {
		t.Errorf("Last(log.a + log.none, 300) = %d messages from %v, want 300 from %v to %v", len(g), g[:min(len(g), 1)], want(796), want(1992))
	}
	// Asking for more than match returns every match, oldest first.
	all := got("log.a", 1000)
	if len(all) != 499 || all[0] != want(0)[0] || all[498] != want(1992)[0] {
		t.Errorf("Last(log.a, 1000) = %d messages from %v to %v, want 499 from %v to %v", len(all), all[0], all[len(all)-1], want(0), want(1992))
	}
	// Between the two ways of reading: n plus a little.
	if g := got("log.a", 300); len(g) != 300 || g[299] != want(1992)[0] || g[0] != want(796)[0] {
		t.Errorf("Last(log.a, 300) = %d messages from %v to %v, want 300 from %v", len(g), g[0], g[len(g)-1], want(796))
	}
}

// TestKVWithTTLMaxKeys: a bucket bounded to n keys drops the key written
// least recently, however young, instead of refusing the write; a reopened
// bucket takes its new bound, and the data within it survives.
func TestKVWithTTLMaxKeys(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	open := func(s *store.Store, maxKeys int64) *store.KV {
		t.Helper()
		kv, err := s.KVWithTTL(ctx, "bounded", time.Hour, maxKeys)
		if err != nil {
			t.Fatalf("KVWithTTL(max %d) error = %v, want nil", maxKeys, err)
		}
		return kv
	}
	put := func(kv *store.KV, keys ...string) {
		t.Helper()
		for _, k := range keys {
			if _, err := kv.Put(ctx, k, []byte("v-"+k)); err != nil {
				t.Fatalf("Put(%q) error = %v, want nil (a bounded bucket drops its oldest key)", k, err)
			}
		}
	}
	want := func(kv *store.KV, present, gone string) {
		t.Helper()
		for _, k := range strings.Fields(present) {
			if e, err := kv.Get(ctx, k); err != nil || string(e.Value) != "v-"+k {
				t.Errorf("Get(%q) = %q, %v; want %q", k, e.Value, err, "v-"+k)
			}
		}
		for _, k := range strings.Fields(gone) {
			if e, err := kv.Get(ctx, k); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("Get(%q) = %q, %v; want ErrNotFound: the bound drops it", k, e.Value, err)
			}
		}
	}

	s := openStore(t, store.Config{DataDir: dir})
	kv := open(s, 3)
	put(kv, "a", "b", "c", "d", "e")
	want(kv, "c d e", "a b")
	put(kv, "c", "f") // c is written again, so d is now the oldest
	want(kv, "c e f", "a b d")
	if _, err := kv.Create(ctx, "g", []byte("v-g")); err != nil {
		t.Fatalf("Create(g) in a full bucket error = %v, want nil", err)
	}
	want(kv, "c f g", "e")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, store.Config{DataDir: dir})
	kv = open(s, 2) // a lower bound drops the oldest at once
	want(kv, "f g", "c")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, store.Config{DataDir: dir})
	kv = open(s, 0) // unbounded again
	put(kv, "h", "i", "j")
	want(kv, "f g h i j", "")
}

// TestObjectGetEndsWithItsContext: reading an object whose chunks never
// come (here purged behind the store's back) ends when the caller's
// context does: the client's read looked at its context only every five
// seconds, and with no context to end it (a deploy's compile, a pool's
// preparation) read on for ever, holding the server's shutdown.
func TestObjectGetEndsWithItsContext(t *testing.T) {
	addr := freeAddr(t)
	s := openStore(t, store.Config{DataDir: t.TempDir(), Listen: addr, Token: "secret-token"})
	ctx := t.Context()
	objs, err := s.Objects(ctx, "arts")
	if err != nil {
		t.Fatal(err)
	}
	if err := objs.Put(ctx, "a", bytes.Repeat([]byte("x"), 1<<20)); err != nil {
		t.Fatal(err)
	}
	js := jetStreamClient(t, addr, "secret-token")
	st, err := js.Stream(ctx, "OBJ_arts")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSubject("$O.arts.C.>")); err != nil {
		t.Fatal(err)
	}
	getCtx, cancel := context.WithCancel(ctx) // no deadline: a shutdown's
	done := make(chan error, 1)
	go func() {
		_, err := objs.Get(getCtx, "a")
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Get = %v, want it canceled", err)
		}
	case <-time.After(2 * time.Second): // the client's read looks at its context every 5 s
		t.Fatal("Get of an object whose chunks never come went on after its context ended")
	}
}
