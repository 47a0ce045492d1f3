package registry_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gust-faas/gust/internal/registry"
	"github.com/gust-faas/gust/internal/store"
)

// errNotOK is what okChecker returns for an artifact it refuses.
var errNotOK = errors.New("artifact does not start with \"ok\"")

// checkFunc adapts a function to registry.Checker. The real checker compiles
// WebAssembly and is tested with the runtime; here the seam is a function.
type checkFunc func(ctx context.Context, spec registry.Spec, digest string, artifact []byte) error

func (f checkFunc) Check(ctx context.Context, spec registry.Spec, digest string, artifact []byte) error {
	return f(ctx, spec, digest, artifact)
}

// okChecker accepts artifacts that start with "ok" and counts its calls.
type okChecker struct{ calls atomic.Int64 }

func (c *okChecker) Check(ctx context.Context, spec registry.Spec, digest string, artifact []byte) error {
	c.calls.Add(1)
	if digest != registry.Digest(artifact) {
		return fmt.Errorf("Check got digest %s, want %s", digest, registry.Digest(artifact))
	}
	if !bytes.HasPrefix(artifact, []byte("ok")) {
		return errNotOK
	}
	return nil
}

var _ registry.Checker = checkFunc(nil)
var _ registry.Checker = (*okChecker)(nil)

// openRegistryStore starts a real embedded NATS store on dir and closes it
// when the test ends.
func openRegistryStore(t *testing.T, dir string) *store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	s, err := store.Open(ctx, store.Config{DataDir: dir})
	if err != nil {
		t.Fatalf("store.Open(%s) error = %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

type node struct {
	reg       *registry.Registry
	artifacts *registry.Artifacts
	checker   *okChecker
	stop      context.CancelFunc // stops the registry's watch
	mu        sync.Mutex
	removed   []string // names passed to OnRemove
}

func (n *node) removedNames() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.removed)
}

// startNode builds a registry on s, as one Gust node would, and starts it.
// Its watch stops when the test ends, before the store closes.
func startNode(t *testing.T, s *store.Store) *node {
	t.Helper()
	c := &okChecker{}
	n := startNodeWith(t, s, c)
	n.checker = c
	return n
}

// startNodeWith is startNode with the given checker.
func startNodeWith(t *testing.T, s *store.Store, c registry.Checker) *node {
	t.Helper()
	ctx := t.Context()
	arts, err := registry.OpenArtifacts(ctx, s)
	if err != nil {
		t.Fatalf("OpenArtifacts() error = %v", err)
	}
	n := &node{artifacts: arts}
	n.reg, err = registry.New(ctx, registry.Deps{Store: s, Artifacts: arts, Checker: c})
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	n.reg.OnRemove(func(f registry.Function) {
		n.mu.Lock()
		defer n.mu.Unlock()
		n.removed = append(n.removed, f.Tenant+"/"+f.Name)
	})
	if n.reg.Ready() {
		t.Errorf("Ready() before Start = true, want false")
	}
	watchCtx, stop := context.WithCancel(context.Background())
	n.stop = stop
	t.Cleanup(stop)
	startCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := n.reg.Start(startCtx, watchCtx); err != nil {
		t.Fatalf("Start() error = %v", err)
	}
	if !n.reg.Ready() {
		t.Errorf("Ready() after Start = false, want true")
	}
	return n
}

func deploy(t *testing.T, r *registry.Registry, tenant, name, artifact string) registry.DeployResult {
	t.Helper()
	res, err := r.Deploy(t.Context(), tenant, "", registry.Spec{Name: name}, []byte(artifact))
	if err != nil {
		t.Fatalf("Deploy(%s, %s, %q) error = %v, want nil", tenant, name, artifact, err)
	}
	return res
}

// eventually polls cond until it holds or five seconds pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 5s, still not: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestNewRequiresDeps(t *testing.T) {
	s := openRegistryStore(t, t.TempDir())
	arts, err := registry.OpenArtifacts(t.Context(), s)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		deps registry.Deps
	}{
		{"no store", registry.Deps{Artifacts: arts, Checker: &okChecker{}}},
		{"no artifacts", registry.Deps{Store: s, Checker: &okChecker{}}},
		{"no checker", registry.Deps{Store: s, Artifacts: arts}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := registry.New(t.Context(), tt.deps); err == nil {
				t.Errorf("New(%s) error = nil, want one", tt.name)
			}
		})
	}
}

func TestDeployAddsVersions(t *testing.T) {
	n := startNode(t, openRegistryStore(t, t.TempDir()))
	tenant := "default"

	res := deploy(t, n.reg, tenant, "hello", "ok-1")
	if !res.Created || res.Version.Number != 1 || res.Function.Latest != 1 {
		t.Errorf("first deploy: Created %v, version %d, latest %d; want true, 1, 1",
			res.Created, res.Version.Number, res.Function.Latest)
	}
	if got, want := res.Version.Digest, registry.Digest([]byte("ok-1")); got != want {
		t.Errorf("first deploy: digest %s, want %s", got, want)
	}
	if res.Version.Size != int64(len("ok-1")) {
		t.Errorf("first deploy: size %d, want %d", res.Version.Size, len("ok-1"))
	}
	if want := (registry.Spec{Name: "hello"}).WithDefaults(); !specEqual(res.Version.Spec, want) {
		t.Errorf("first deploy: spec %+v, want the defaults %+v", res.Version.Spec, want)
	}

	res = deploy(t, n.reg, tenant, "hello", "ok-2")
	if !res.Created || res.Version.Number != 2 || res.Function.Latest != 2 {
		t.Errorf("second deploy: Created %v, version %d, latest %d; want true, 2, 2",
			res.Created, res.Version.Number, res.Function.Latest)
	}

	f, ok := n.reg.Get(tenant, "hello")
	if !ok {
		t.Fatalf("Get(hello) after deploys: missing")
	}
	if f.Tenant != tenant || f.Name != "hello" || f.Latest != 2 || len(f.Versions) != 2 {
		t.Fatalf("Get(hello) = %s/%s latest %d with %d versions, want %s/hello latest 2 with 2",
			f.Tenant, f.Name, f.Latest, len(f.Versions), tenant)
	}
	for _, tt := range []struct {
		n        int
		artifact string
	}{{1, "ok-1"}, {2, "ok-2"}, {0, "ok-2"}} {
		v, ok := f.Version(tt.n)
		if want := registry.Digest([]byte(tt.artifact)); !ok || v.Digest != want {
			t.Errorf("Version(%d) = %s, %v; want %s, true", tt.n, v.Digest, ok, want)
		}
	}
	if _, ok := f.Version(3); ok {
		t.Errorf("Version(3) found, want none")
	}
	if f.Updated.Before(f.Created) {
		t.Errorf("Updated %v is before Created %v", f.Updated, f.Created)
	}
	digests := n.reg.Digests()
	for _, a := range []string{"ok-1", "ok-2"} {
		if !digests[registry.Digest([]byte(a))] {
			t.Errorf("Digests() = %v, want it to hold the digest of %q", digests, a)
		}
	}
}

// TestDeployKeepsRecentVersions: a function keeps its latest MaxVersions
// versions and those its aliases route to; a spec too large to keep even
// one more version is refused, and the function is unchanged.
func TestDeployKeepsRecentVersions(t *testing.T) {
	n := startNode(t, openRegistryStore(t, t.TempDir()))
	ctx := t.Context()
	deploy(t, n.reg, "default", "many", "ok1")
	if _, err := n.reg.SetAlias(ctx, "default", "many", "pinned", registry.Alias{Routes: []registry.Route{{Version: 1, Weight: 100}}}); err != nil {
		t.Fatal(err)
	}
	total := registry.MaxVersions + 5
	for i := 2; i <= total; i++ {
		deploy(t, n.reg, "default", "many", fmt.Sprintf("ok%d", i))
	}
	f, _ := n.reg.Get("default", "many")
	if len(f.Versions) != registry.MaxVersions || f.Latest != total {
		t.Fatalf("after %d deploys: %d versions, latest %d; want %d, latest %d", total, len(f.Versions), f.Latest, registry.MaxVersions, total)
	}
	if _, ok := f.Version(1); !ok {
		t.Errorf("version 1, which an alias routes to, was dropped")
	}
	if _, ok := f.Version(total - registry.MaxVersions + 1); ok {
		t.Errorf("version %d was kept; want the oldest unrouted versions dropped", total-registry.MaxVersions+1)
	}
	if _, ok := f.Version(total - registry.MaxVersions + 2); !ok {
		t.Errorf("version %d, one of the latest, was dropped", total-registry.MaxVersions+2)
	}

	// Specs with 60 KiB of environment: some 68 versions fill a record of
	// 4 MiB; the oldest go first.
	big := func(i int) registry.Spec {
		return registry.Spec{Name: "big", Env: map[string]string{"PAD": strings.Repeat(strconv.Itoa(i%10), 60<<10)}}
	}
	for i := 1; i <= 80; i++ {
		if _, err := n.reg.Deploy(ctx, "default", "", big(i), []byte("ok")); err != nil {
			t.Fatalf("deploy %d of a large spec: %v", i, err)
		}
	}
	f, _ = n.reg.Get("default", "big")
	if len(f.Versions) >= 80 || len(f.Versions) < 50 || f.Latest != 80 || f.Versions[len(f.Versions)-1].Number != 80 {
		t.Errorf("large specs: %d versions, latest %d; want the latest 50 to 79 of 80 kept", len(f.Versions), f.Latest)
	}
}

func specEqual(a, b registry.Spec) bool {
	return a.Name == b.Name && a.Runtime == b.Runtime && a.MemoryMB == b.MemoryMB &&
		a.Timeout == b.Timeout && a.MaxBodyBytes == b.MaxBodyBytes && fmt.Sprint(a.Env) == fmt.Sprint(b.Env)
}

func TestDeployUnchangedRecordsNothing(t *testing.T) {
	n := startNode(t, openRegistryStore(t, t.TempDir()))
	ctx := t.Context()
	tenant := "default"
	withEnv := registry.Spec{Name: "hello", Env: map[string]string{"GREETING": "hi"}}

	steps := []struct {
		name        string
		spec        registry.Spec
		artifact    string
		wantCreated bool
		wantVersion int
	}{
		{"first", registry.Spec{Name: "hello"}, "ok-a", true, 1},
		{"same artifact and spec", registry.Spec{Name: "hello"}, "ok-a", false, 1},
		{"defaults written out", registry.Spec{Name: "hello"}.WithDefaults(), "ok-a", false, 1},
		{"same artifact, new spec", withEnv, "ok-a", true, 2},
		{"same again", withEnv, "ok-a", false, 2},
		{"new artifact", withEnv, "ok-b", true, 3},
		{"back to an older version's artifact", withEnv, "ok-a", true, 4},
	}
	for _, st := range steps {
		res, err := n.reg.Deploy(ctx, tenant, "", st.spec, []byte(st.artifact))
		if err != nil {
			t.Fatalf("%s: Deploy error = %v, want nil", st.name, err)
		}
		if res.Created != st.wantCreated || res.Version.Number != st.wantVersion {
			t.Errorf("%s: Deploy = Created %v, version %d; want %v, %d",
				st.name, res.Created, res.Version.Number, st.wantCreated, st.wantVersion)
		}
		f, _ := n.reg.Get(tenant, "hello")
		if f.Latest != st.wantVersion || len(f.Versions) != st.wantVersion {
			t.Errorf("%s: Get = latest %d with %d versions, want %d with %d",
				st.name, f.Latest, len(f.Versions), st.wantVersion, st.wantVersion)
		}
	}
}

func TestDeployCheckFailureChangesNothing(t *testing.T) {
	n := startNode(t, openRegistryStore(t, t.TempDir()))
	ctx := t.Context()
	tenant := "default"
	deploy(t, n.reg, tenant, "hello", "ok-1")

	for _, name := range []string{"hello", "fresh"} {
		_, err := n.reg.Deploy(ctx, tenant, "", registry.Spec{Name: name}, []byte("bad"))
		if !errors.Is(err, errNotOK) {
			t.Errorf("Deploy(%s, %q) error = %v, want the checker's %v", name, "bad", err, errNotOK)
		}
	}
	f, ok := n.reg.Get(tenant, "hello")
	if !ok || f.Latest != 1 || len(f.Versions) != 1 {
		t.Errorf("Get(hello) after a refused deploy = latest %d with %d versions (found %v), want 1 with 1",
			f.Latest, len(f.Versions), ok)
	}
	if _, ok := n.reg.Get(tenant, "fresh"); ok {
		t.Errorf("Get(fresh) after its only deploy was refused: found, want missing")
	}
	if got := len(n.reg.List(tenant)); got != 1 {
		t.Errorf("len(List) after a refused deploy = %d, want 1", got)
	}
	digest := registry.Digest([]byte("bad"))
	if _, err := n.artifacts.Get(ctx, digest); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("Artifacts.Get(refused artifact) error = %v, want %v", err, registry.ErrNotFound)
	}
	if n.reg.Digests()[digest] {
		t.Errorf("Digests() holds the refused artifact's digest")
	}
}

func TestDeployInvalid(t *testing.T) {
	n := startNode(t, openRegistryStore(t, t.TempDir()))
	tests := []struct {
		name     string
		spec     registry.Spec
		artifact []byte
	}{
		{"empty name", registry.Spec{}, []byte("ok")},
		{"bad name", registry.Spec{Name: "Hello_World"}, []byte("ok")},
		{"unknown runtime", registry.Spec{Name: "hello", Runtime: "docker"}, []byte("ok")},
		{"too much memory", registry.Spec{Name: "hello", MemoryMB: registry.MaxMemoryMB + 1}, []byte("ok")},
		{"negative timeout", registry.Spec{Name: "hello", Timeout: -1}, []byte("ok")},
		{"reserved env", registry.Spec{Name: "hello", Env: map[string]string{"GUST_X": "1"}}, []byte("ok")},
		{"empty artifact", registry.Spec{Name: "hello"}, []byte{}},
		{"nil artifact", registry.Spec{Name: "hello"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := n.checker.calls.Load()
			_, err := n.reg.Deploy(t.Context(), "default", "", tt.spec, tt.artifact)
			var invalid *registry.InvalidError
			if !errors.As(err, &invalid) {
				t.Errorf("Deploy(%+v, %q) error = %#v, want a *registry.InvalidError", tt.spec, tt.artifact, err)
			}
			if calls := n.checker.calls.Load() - before; calls != 0 {
				t.Errorf("Deploy(%+v, %q) called the checker %d times, want 0", tt.spec, tt.artifact, calls)
			}
		})
	}
	if got := n.reg.List("default"); len(got) != 0 {
		t.Errorf("List after invalid deploys = %d functions, want 0", len(got))
	}
}

// TestReadYourWrites: once Deploy returns, the same node's view has it, with
// no waiting.
func TestReadYourWrites(t *testing.T) {
	n := startNode(t, openRegistryStore(t, t.TempDir()))
	tenant := "default"
	for i := range 10 {
		name := fmt.Sprintf("fn-%d", i)
		for v := 1; v <= 3; v++ {
			deploy(t, n.reg, tenant, name, fmt.Sprintf("ok-%d-%d", i, v))
			f, ok := n.reg.Get(tenant, name)
			if !ok || f.Latest != v {
				t.Fatalf("Get(%s) right after deploying version %d = latest %d (found %v), want %d", name, v, f.Latest, ok, v)
			}
			list := n.reg.List(tenant)
			if len(list) != i+1 {
				t.Fatalf("List right after deploying %s = %d functions, want %d", name, len(list), i+1)
			}
		}
	}
}

func TestListPerTenantSorted(t *testing.T) {
	n := startNode(t, openRegistryStore(t, t.TempDir()))
	for _, d := range []struct{ tenant, name string }{
		{"acme", "zeta"}, {"acme", "alpha"}, {"other", "beta"}, {"acme", "mid"},
		{"acme-corp", "gamma"}, {"acm", "delta"},
	} {
		deploy(t, n.reg, d.tenant, d.name, "ok-"+d.tenant+"-"+d.name)
	}
	tests := []struct {
		tenant string
		want   []string
	}{
		{"acme", []string{"alpha", "mid", "zeta"}},
		{"other", []string{"beta"}},
		{"acme-corp", []string{"gamma"}},
		{"acm", []string{"delta"}},
		{"nobody", nil},
	}
	for _, tt := range tests {
		t.Run(tt.tenant, func(t *testing.T) {
			var got []string
			for _, f := range n.reg.List(tt.tenant) {
				if f.Tenant != tt.tenant {
					t.Errorf("List(%s) holds %s/%s", tt.tenant, f.Tenant, f.Name)
				}
				got = append(got, f.Name)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("List(%s) = %q, want %q", tt.tenant, got, tt.want)
			}
		})
	}
}

// TestTenantMustBeAName: a tenant is a key component in the store, so a
// tenant with a dot must not make its functions appear in another tenant.
func TestTenantMustBeAName(t *testing.T) {
	n := startNode(t, openRegistryStore(t, t.TempDir()))
	for _, tenant := range []string{"a.b", "A", "", "a*", "a>"} {
		_, err := n.reg.Deploy(t.Context(), tenant, "", registry.Spec{Name: "c"}, []byte("ok"))
		var invalid *registry.InvalidError
		if !errors.As(err, &invalid) {
			t.Errorf("Deploy(tenant %q) error = %v, want a *registry.InvalidError", tenant, err)
		}
	}
	for _, f := range n.reg.List("a") {
		t.Errorf("List(a) holds %s/%s, want only tenant a's functions", f.Tenant, f.Name)
	}
}

// TestGetReturnsCopy: Get and List promise copies; changing one must not
// change the view.
func TestGetReturnsCopy(t *testing.T) {
	n := startNode(t, openRegistryStore(t, t.TempDir()))
	tenant := "default"
	deploy(t, n.reg, tenant, "hello", "ok-1")
	want := registry.Digest([]byte("ok-1"))

	f, _ := n.reg.Get(tenant, "hello")
	f.Versions[0].Digest = "changed by Get's caller"
	n.reg.List(tenant)[0].Versions[0].Digest = "changed by List's caller"
	if f, _ := n.reg.Get(tenant, "hello"); f.Versions[0].Digest != want {
		t.Errorf("after a caller changed its copy, Get(hello).Versions[0].Digest = %q, want %q",
			f.Versions[0].Digest, want)
	}
}

func TestDelete(t *testing.T) {
	n := startNode(t, openRegistryStore(t, t.TempDir()))
	ctx := t.Context()
	tenant := "default"
	deploy(t, n.reg, tenant, "keep", "ok-keep")
	deploy(t, n.reg, tenant, "gone", "ok-gone-1")
	deploy(t, n.reg, tenant, "gone", "ok-gone-2")

	if err := n.reg.Delete(ctx, tenant, "gone"); err != nil {
		t.Fatalf("Delete(gone) error = %v, want nil", err)
	}
	if _, ok := n.reg.Get(tenant, "gone"); ok {
		t.Errorf("Get(gone) right after Delete: found, want missing")
	}
	var names []string
	for _, f := range n.reg.List(tenant) {
		names = append(names, f.Name)
	}
	if want := []string{"keep"}; !slices.Equal(names, want) {
		t.Errorf("List after Delete(gone) = %q, want %q", names, want)
	}
	if d := n.reg.Digests(); d[registry.Digest([]byte("ok-gone-2"))] || !d[registry.Digest([]byte("ok-keep"))] {
		t.Errorf("Digests() after Delete(gone) = %v, want only keep's digest", d)
	}
	want := []string{tenant + "/gone"}
	eventually(t, fmt.Sprintf("OnRemove called with %q", want), func() bool {
		return slices.Equal(n.removedNames(), want)
	})

	for _, name := range []string{"gone", "never-was"} {
		if err := n.reg.Delete(ctx, tenant, name); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("Delete(%s) error = %v, want %v", name, err, registry.ErrNotFound)
		}
	}
	if err := n.reg.Delete(ctx, "other", "keep"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("Delete(other/keep) error = %v, want %v", err, registry.ErrNotFound)
	}
	if _, ok := n.reg.Get(tenant, "keep"); !ok {
		t.Errorf("Get(keep) after deleting other functions: missing")
	}

	// A function deleted and deployed again starts afresh.
	res := deploy(t, n.reg, tenant, "gone", "ok-gone-3")
	if !res.Created || res.Version.Number != 1 || len(res.Function.Versions) != 1 {
		t.Errorf("deploy after Delete = Created %v, version %d with %d versions; want true, 1 with 1",
			res.Created, res.Version.Number, len(res.Function.Versions))
	}
	if f, ok := n.reg.Get(tenant, "gone"); !ok || f.Latest != 1 {
		t.Errorf("Get(gone) after deploying it again = latest %d (found %v), want 1", f.Latest, ok)
	}
	if got := n.removedNames(); !slices.Equal(got, want) {
		t.Errorf("OnRemove calls = %q, want %q", got, want)
	}
}

func TestArtifacts(t *testing.T) {
	s := openRegistryStore(t, t.TempDir())
	ctx := t.Context()
	arts, err := registry.OpenArtifacts(ctx, s)
	if err != nil {
		t.Fatalf("OpenArtifacts() error = %v", err)
	}
	data := bytes.Repeat([]byte("ok-artifact "), 200_000) // 2.4 MB, several chunks
	digest := registry.Digest(data)

	for i := range 2 { // a second Put of the same artifact is a no-op
		if err := arts.Put(ctx, digest, data); err != nil {
			t.Fatalf("Put #%d error = %v, want nil", i+1, err)
		}
	}
	got, err := arts.Get(ctx, digest)
	if err != nil {
		t.Fatalf("Get(%s) error = %v, want nil", digest, err)
	}
	if !bytes.Equal(got, data) {
		t.Errorf("Get(%s) = %d bytes that differ from the %d put", digest, len(got), len(data))
	}

	unknown := registry.Digest([]byte("never stored"))
	if _, err := arts.Get(ctx, unknown); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("Get(unknown digest) error = %v, want %v", err, registry.ErrNotFound)
	}
	if err := arts.Put(ctx, unknown, []byte("other bytes")); err == nil {
		t.Errorf("Put(digest of other bytes) error = nil, want a digest mismatch")
	}
	if _, err := arts.Get(ctx, unknown); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("Get(digest) after a refused Put: error = %v, want %v", err, registry.ErrNotFound)
	}
}

// TestSweepArtifacts: the artifacts of deleted functions are deleted, but
// only once they were unused at two sweeps and not stored for the grace
// period; an artifact a deploy stored again or uses again stays.
func TestSweepArtifacts(t *testing.T) {
	n := startNode(t, openRegistryStore(t, t.TempDir()))
	ctx := t.Context()
	deploy(t, n.reg, "default", "keep", "ok-keep")
	deploy(t, n.reg, "default", "gone", "ok-gone-1")
	deploy(t, n.reg, "default", "gone", "ok-gone-2")
	deploy(t, n.reg, "default", "back", "ok-back")
	for _, name := range []string{"gone", "back"} {
		if err := n.reg.Delete(ctx, "default", name); err != nil {
			t.Fatal(err)
		}
	}
	digest := func(s string) string { return registry.Digest([]byte(s)) }
	const grace = time.Second
	n.artifacts.Grace = grace
	sweep := func(now time.Time) []string {
		t.Helper()
		deleted, err := n.artifacts.Sweep(ctx, n.reg.Digests, now)
		if err != nil {
			t.Fatalf("Sweep() error = %v", err)
		}
		return deleted
	}
	if got := sweep(time.Now().Add(time.Hour)); len(got) != 0 {
		t.Errorf("first Sweep deleted %v, want nothing: unused once is not enough", got)
	}
	time.Sleep(grace + 200*time.Millisecond)
	// "back" is deployed again under another name before the next sweep,
	// and ok-gone-2 is put again by a deploy that has not recorded its
	// version yet: both stay.
	deploy(t, n.reg, "default", "again", "ok-back")
	if err := n.artifacts.Put(ctx, digest("ok-gone-2"), []byte("ok-gone-2")); err != nil {
		t.Fatal(err)
	}
	if got, want := sweep(time.Now()), []string{digest("ok-gone-1")}; !slices.Equal(got, want) {
		t.Errorf("second Sweep deleted %v, want %v: unused twice and untouched for the grace period", got, want)
	}
	for _, s := range []string{"ok-keep", "ok-back", "ok-gone-2"} {
		if got, err := n.artifacts.Get(ctx, digest(s)); err != nil || string(got) != s {
			t.Errorf("Get(%s) after the sweeps = %q, %v; want it kept", s, got, err)
		}
	}
	if _, err := n.artifacts.Get(ctx, digest("ok-gone-1")); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("Get(ok-gone-1) after the sweep: error = %v, want %v", err, registry.ErrNotFound)
	}
	if got, want := sweep(time.Now().Add(2*grace)), []string{digest("ok-gone-2")}; !slices.Equal(got, want) {
		t.Errorf("third Sweep deleted %v, want %v once its grace is over", got, want)
	}
	// A swept artifact deployed again is stored again.
	res := deploy(t, n.reg, "default", "gone", "ok-gone-1")
	if got, err := n.artifacts.Get(ctx, res.Version.Digest); err != nil || string(got) != "ok-gone-1" {
		t.Errorf("Get after deploying a swept artifact again = %q, %v", got, err)
	}
}

func TestDeployStoresArtifact(t *testing.T) {
	n := startNode(t, openRegistryStore(t, t.TempDir()))
	res := deploy(t, n.reg, "default", "hello", "ok-stored")
	got, err := n.artifacts.Get(t.Context(), res.Version.Digest)
	if err != nil || string(got) != "ok-stored" {
		t.Errorf("Artifacts.Get(deployed digest) = %q, %v; want %q, nil", got, err, "ok-stored")
	}
}

// TestTwoNodes runs two registries on one store, as two Gust nodes share
// one cluster: each sees the other's writes.
func TestTwoNodes(t *testing.T) {
	s := openRegistryStore(t, t.TempDir())
	a, b := startNode(t, s), startNode(t, s)
	tenant := "default"

	deploy(t, a.reg, tenant, "hello", "ok-1")
	eventually(t, "node b sees hello version 1", func() bool {
		f, ok := b.reg.Get(tenant, "hello")
		return ok && f.Latest == 1
	})
	res := deploy(t, b.reg, tenant, "hello", "ok-2")
	if res.Version.Number != 2 {
		t.Errorf("deploy through node b = version %d, want 2", res.Version.Number)
	}
	eventually(t, "node a sees hello version 2", func() bool {
		f, ok := a.reg.Get(tenant, "hello")
		return ok && f.Latest == 2
	})

	if err := b.reg.Delete(t.Context(), tenant, "hello"); err != nil {
		t.Fatalf("Delete through node b error = %v", err)
	}
	eventually(t, "node a drops hello and calls OnRemove", func() bool {
		_, ok := a.reg.Get(tenant, "hello")
		return !ok && slices.Equal(a.removedNames(), []string{tenant + "/hello"})
	})
}

// TestDeployHammer: concurrent deploys of one function through two nodes each
// get their own version; none is lost or numbered twice.
func TestDeployHammer(t *testing.T) {
	s := openRegistryStore(t, t.TempDir())
	nodes := []*node{startNode(t, s), startNode(t, s)}
	tenant := "default"
	const deploys = 20

	results := make([]registry.DeployResult, deploys)
	errs := make([]error, deploys)
	var wg sync.WaitGroup
	for i := range deploys {
		wg.Go(func() {
			results[i], errs[i] = nodes[i%2].reg.Deploy(t.Context(), tenant, "",
				registry.Spec{Name: "hot"}, fmt.Appendf(nil, "ok-%d", i))
		})
	}
	wg.Wait()

	byNumber := map[int]string{} // version number -> digest
	for i, res := range results {
		if errs[i] != nil {
			t.Errorf("deploy %d error = %v", i, errs[i])
			continue
		}
		digest := registry.Digest(fmt.Appendf(nil, "ok-%d", i))
		if !res.Created || res.Version.Digest != digest {
			t.Errorf("deploy %d = Created %v, digest %s; want true, %s", i, res.Created, res.Version.Digest, digest)
		}
		if prev, dup := byNumber[res.Version.Number]; dup {
			t.Errorf("deploy %d got version %d, which %s already had", i, res.Version.Number, prev)
		}
		byNumber[res.Version.Number] = digest
	}
	for v := 1; v <= deploys; v++ {
		if _, ok := byNumber[v]; !ok {
			t.Errorf("no deploy got version %d", v)
		}
	}

	for i, n := range nodes {
		eventually(t, fmt.Sprintf("node %d sees %d versions", i, deploys), func() bool {
			f, ok := n.reg.Get(tenant, "hot")
			return ok && f.Latest == deploys
		})
		f, _ := n.reg.Get(tenant, "hot")
		if len(f.Versions) != deploys {
			t.Errorf("node %d: %d versions recorded, want %d", i, len(f.Versions), deploys)
		}
		for j, v := range f.Versions {
			if v.Number != j+1 || v.Digest != byNumber[v.Number] {
				t.Errorf("node %d: Versions[%d] = version %d digest %s, want version %d digest %s",
					i, j, v.Number, v.Digest, j+1, byNumber[j+1])
			}
		}
	}
}

// TestRestart: functions and artifacts survive closing the store; a new
// registry on the reopened store has them once Start returns.
func TestRestart(t *testing.T) {
	dir := t.TempDir()
	tenant := "default"

	s := openRegistryStore(t, dir)
	n := startNode(t, s)
	deploy(t, n.reg, tenant, "hello", "ok-1")
	deploy(t, n.reg, tenant, "hello", "ok-2")
	deploy(t, n.reg, "other", "world", "ok-world")
	deploy(t, n.reg, tenant, "gone", "ok-gone")
	if err := n.reg.Delete(t.Context(), tenant, "gone"); err != nil {
		t.Fatalf("Delete(gone) error = %v", err)
	}
	n.stop()
	if err := s.Close(); err != nil {
		t.Fatalf("Close() error = %v", err)
	}

	n = startNode(t, openRegistryStore(t, dir))
	f, ok := n.reg.Get(tenant, "hello")
	if !ok || f.Latest != 2 || len(f.Versions) != 2 {
		t.Fatalf("after restart, Get(hello) = latest %d with %d versions (found %v), want 2 with 2",
			f.Latest, len(f.Versions), ok)
	}
	if _, ok := n.reg.Get("other", "world"); !ok {
		t.Errorf("after restart, Get(other/world): missing")
	}
	if _, ok := n.reg.Get(tenant, "gone"); ok {
		t.Errorf("after restart, Get(gone), deleted before: found, want missing")
	}
	if got := n.removedNames(); len(got) != 0 {
		t.Errorf("after restart, OnRemove calls = %q, want none", got)
	}
	for _, v := range f.Versions {
		data, err := n.artifacts.Get(t.Context(), v.Digest)
		if err != nil || registry.Digest(data) != v.Digest {
			t.Errorf("after restart, Artifacts.Get(version %d) = %q, %v; want its artifact", v.Number, data, err)
		}
	}
	// The function's numbering carries on.
	if res := deploy(t, n.reg, tenant, "hello", "ok-3"); res.Version.Number != 3 {
		t.Errorf("after restart, deploy = version %d, want 3", res.Version.Number)
	}
}

// TestDeployChecksOneAtATimePerTenant: while one of a tenant's artifacts is
// checked (compiled, which may take seconds), the tenant's next deploy
// waits for it, and gives up with a clear error when its caller does;
// another tenant's deploy goes ahead.
func TestDeployChecksOneAtATimePerTenant(t *testing.T) {
	s := openRegistryStore(t, t.TempDir())
	entered, gate := make(chan string, 4), make(chan struct{})
	n := startNodeWith(t, s, checkFunc(func(ctx context.Context, spec registry.Spec, digest string, artifact []byte) error {
		entered <- string(artifact)
		if bytes.HasPrefix(artifact, []byte("slow")) {
			<-gate
		}
		return nil
	}))
	ctx := t.Context()
	slow := make(chan error, 1)
	go func() {
		_, err := n.reg.Deploy(ctx, "a", "", registry.Spec{Name: "slow"}, []byte("slow module"))
		slow <- err
	}()
	if got := <-entered; got != "slow module" {
		t.Fatalf("checked %q first, want the slow module", got)
	}

	waitCtx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	_, err := n.reg.Deploy(waitCtx, "a", "", registry.Spec{Name: "other"}, []byte("quick module"))
	if err == nil || !strings.Contains(err.Error(), "waiting for this tenant's other deploys") {
		t.Errorf("tenant a's second deploy while its first is checked = %v, want an error saying it waited", err)
	}
	if _, err := n.reg.Deploy(ctx, "b", "", registry.Spec{Name: "fn"}, []byte("b's module")); err != nil {
		t.Errorf("tenant b's deploy while tenant a's is checked = %v, want nil", err)
	}
	if got := <-entered; got != "b's module" {
		t.Errorf("checked %q, want only tenant b's module while a's first is checked", got)
	}

	close(gate)
	if err := <-slow; err != nil {
		t.Fatalf("the slow deploy = %v", err)
	}
	if _, err := n.reg.Deploy(ctx, "a", "", registry.Spec{Name: "other"}, []byte("quick module")); err != nil {
		t.Errorf("tenant a's deploy once its first is done = %v, want nil", err)
	}
	if fns := n.reg.List("a"); len(fns) != 2 {
		t.Errorf("tenant a has %d functions, want 2 (slow and other)", len(fns))
	}
}

// TestDeployKeepsToItsTenant: a function belongs to the tenant (by ID) that
// created it. A deploy that began in a tenant deleted and created again
// since adds no version to the new tenant's function of that name (it once
// could, and the new tenant's secrets reached its code), and deletes it
// only if it is the old tenant's.
func TestDeployKeepsToItsTenant(t *testing.T) {
	ctx := t.Context()
	n := startNode(t, openRegistryStore(t, t.TempDir()))
	res, err := n.reg.Deploy(ctx, "shop", "new-id", registry.Spec{Name: "app"}, []byte("ok: the new tenant's"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Function.TenantID != "new-id" {
		t.Errorf("the function belongs to %q, want new-id", res.Function.TenantID)
	}
	_, err = n.reg.Deploy(ctx, "shop", "old-id", registry.Spec{Name: "app"}, []byte("ok: the old tenant's"))
	if !errors.Is(err, registry.ErrTenantChanged) {
		t.Errorf("a deploy of the old tenant = %v, want ErrTenantChanged", err)
	}
	if err := n.reg.DeleteOf(ctx, "shop", "old-id", "app"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("the old tenant's delete = %v, want ErrNotFound", err)
	}
	if f, ok := n.reg.Get("shop", "app"); !ok || f.Latest != 1 || f.Versions[0].Digest != registry.Digest([]byte("ok: the new tenant's")) {
		t.Fatalf("the new tenant's function: %+v, %t; want its own version 1 alone", f, ok)
	}
	if _, err := n.reg.Deploy(ctx, "shop", "new-id", registry.Spec{Name: "app"}, []byte("ok: its second")); err != nil {
		t.Errorf("the new tenant's second deploy: %v", err)
	}
	if err := n.reg.DeleteOf(ctx, "shop", "new-id", "app"); err != nil {
		t.Errorf("the new tenant's delete: %v", err)
	}
	if _, ok := n.reg.Get("shop", "app"); ok {
		t.Error("the function is still there after its tenant's delete")
	}
}
