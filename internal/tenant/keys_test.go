package tenant

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// A well-formed token that no service ever issued.
const (
	wellFormedID     = "abcdefghijklmnop"                                     // 16
	wellFormedSecret = "abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrst" // 52
	wellFormedToken  = "gust_" + wellFormedID + "_" + wellFormedSecret
)

// tokenTests are the inputs of ParseToken; they also seed FuzzParseToken.
var tokenTests = []struct {
	name string
	in   string
	ok   bool
}{
	{"well formed", wellFormedToken, true},
	{"all digits", "gust_" + strings.Repeat("2", 16) + "_" + strings.Repeat("7", 52), true},
	{"empty", "", false},
	{"prefix only", "gust_", false},
	{"space", " ", false},
	{"leading space", " " + wellFormedToken, false},
	{"trailing space", wellFormedToken + " ", false},
	{"trailing newline", wellFormedToken + "\n", false},
	{"no prefix", wellFormedID + "_" + wellFormedSecret, false},
	{"uppercase prefix", "GUST_" + wellFormedID + "_" + wellFormedSecret, false},
	{"other prefix", "gost_" + wellFormedID + "_" + wellFormedSecret, false},
	{"dash after prefix", "gust-" + wellFormedID + "_" + wellFormedSecret, false},
	{"dash separator", "gust_" + wellFormedID + "-" + wellFormedSecret, false},
	{"no separator", "gust_" + wellFormedID + wellFormedSecret + "a", false},
	{"id too short", "gust_" + wellFormedID[1:] + "_" + wellFormedSecret + "a", false},
	{"id too long", "gust_" + wellFormedID + "a_" + wellFormedSecret[1:], false},
	{"secret too short", "gust_" + wellFormedID + "_" + wellFormedSecret[1:], false},
	{"secret too long", wellFormedToken + "a", false},
	{"uppercase id", "gust_" + strings.ToUpper(wellFormedID) + "_" + wellFormedSecret, false},
	{"uppercase secret", "gust_" + wellFormedID + "_" + strings.ToUpper(wellFormedSecret), false},
	{"one uppercase letter", wellFormedToken[:len(wellFormedToken)-1] + "T", false},
	{"digit 0", "gust_" + wellFormedID[:15] + "0_" + wellFormedSecret, false},
	{"digit 1", "gust_" + wellFormedID + "_" + wellFormedSecret[:51] + "1", false},
	{"digit 8", "gust_" + wellFormedID + "_8" + wellFormedSecret[1:], false},
	{"digit 9", "gust_9" + wellFormedID[1:] + "_" + wellFormedSecret, false},
	{"padding", "gust_" + wellFormedID + "_" + wellFormedSecret[:51] + "=", false},
	{"underscore in secret", "gust_" + wellFormedID + "_" + wellFormedSecret[:51] + "_", false},
	{"space in secret", "gust_" + wellFormedID + "_" + wellFormedSecret[:20] + " " + wellFormedSecret[21:], false},
	{"NUL in id", "gust_" + wellFormedID[:8] + "\x00" + wellFormedID[9:] + "_" + wellFormedSecret, false},
	{"non-ASCII in secret", "gust_" + wellFormedID + "_é" + wellFormedSecret[2:], false},
	{"bearer header", "Bearer " + wellFormedToken, false},
}

func TestParseToken(t *testing.T) {
	for _, tt := range tokenTests {
		t.Run(tt.name, func(t *testing.T) {
			id, secret, err := ParseToken(tt.in)
			if !tt.ok {
				if err != ErrUnauthenticated || id != "" || secret != "" {
					t.Errorf("ParseToken(%q) = %q, %q, %v, want \"\", \"\", ErrUnauthenticated", tt.in, id, secret, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseToken(%q) error = %v, want nil", tt.in, err)
			}
			if got := "gust_" + id + "_" + secret; got != tt.in {
				t.Errorf("ParseToken(%q) = %q, %q, which join to %q", tt.in, id, secret, got)
			}
		})
	}
}

// bearerTests are the inputs of BearerToken; they also seed FuzzBearerToken.
var bearerTests = []struct {
	in, want string
}{
	{"Bearer " + wellFormedToken, wellFormedToken},
	{"bearer " + wellFormedToken, wellFormedToken},
	{"BEARER " + wellFormedToken, wellFormedToken},
	{"Bearer   " + wellFormedToken + "  ", wellFormedToken},
	{"Bearer " + wellFormedToken + "\r\n", wellFormedToken},
	{"Bearer a b", "a b"},
	{"Bearer ", ""},
	{"Bearer", ""},
	{"", ""},
	{" ", ""},
	{wellFormedToken, ""},
	{"Basic dXNlcjpwYXNz", ""},
	{"Token " + wellFormedToken, ""},
	{"Bearer\t" + wellFormedToken, ""},
	{"Bearer:" + wellFormedToken, ""},
	{" Bearer " + wellFormedToken, ""},
	{"Bearerx " + wellFormedToken, ""},
}

func TestBearerToken(t *testing.T) {
	for _, tt := range bearerTests {
		if got := BearerToken(tt.in); got != tt.want {
			t.Errorf("BearerToken(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func mustCreateKey(t testing.TB, s *Service, nk NewKey) (KeyInfo, string) {
	t.Helper()
	info, token, err := s.CreateKey(ctxT(t), nk)
	if err != nil {
		t.Fatalf("CreateKey(%+v) error = %v, want nil", nk, err)
	}
	return info, token
}

func TestCreateKeyAuthenticates(t *testing.T) {
	clock := newFakeClock()
	s := startService(t, openStore(t), serviceOpts{clock: clock})
	mustCreateTenant(t, s, "acme", Quotas{})
	tests := []NewKey{
		{Tenant: Default, Role: Admin, Name: "root"},
		{Tenant: Default, Role: Owner},
		{Tenant: "acme", Role: Owner, Name: "ops"},
		{Tenant: "acme", Role: Developer, Name: strings.Repeat("n", 128)},
		{Tenant: "acme", Role: Invoker, TTL: time.Hour},
	}
	seen := map[string]bool{}
	for _, nk := range tests {
		t.Run(string(nk.Role)+" in "+nk.Tenant, func(t *testing.T) {
			info, token := mustCreateKey(t, s, nk)
			if info.Tenant != nk.Tenant || info.Role != nk.Role || info.Name != nk.Name || info.Revoked != nil {
				t.Errorf("CreateKey(%+v) info = %+v, want its tenant, role and name, not revoked", nk, info)
			}
			if !info.Created.Equal(clock.Now()) {
				t.Errorf("CreateKey info.Created = %v, want %v", info.Created, clock.Now())
			}
			switch {
			case nk.TTL == 0 && info.Expires != nil:
				t.Errorf("CreateKey without TTL: Expires = %v, want nil", *info.Expires)
			case nk.TTL > 0 && (info.Expires == nil || !info.Expires.Equal(clock.Now().Add(nk.TTL))):
				t.Errorf("CreateKey with TTL %v: Expires = %v, want %v", nk.TTL, info.Expires, clock.Now().Add(nk.TTL))
			}
			id, _, err := ParseToken(token)
			if err != nil {
				t.Fatalf("ParseToken(new token %q) = %v, want nil", token, err)
			}
			if id != info.ID {
				t.Errorf("token id = %q, want the key's id %q", id, info.ID)
			}
			if seen[id] || seen[token] {
				t.Errorf("CreateKey returned id %q or its token twice", id)
			}
			seen[id], seen[token] = true, true

			p, err := s.Authenticate(token)
			want := Principal{KeyID: info.ID, Tenant: nk.Tenant, Role: nk.Role}
			if err != nil || p != want {
				t.Errorf("Authenticate(new token) = %+v, %v, want %+v, nil", p, err, want)
			}
		})
	}
}

func TestKeyRecordsHideTheSecret(t *testing.T) {
	var logs bytes.Buffer
	s := startService(t, openStore(t), serviceOpts{logger: slog.New(slog.NewTextHandler(&logs, nil))})
	mustCreateTenant(t, s, "acme", Quotas{})
	info, token := mustCreateKey(t, s, NewKey{Tenant: "acme", Role: Owner, Name: "ci"})
	_, secret, err := ParseToken(token)
	if err != nil {
		t.Fatalf("ParseToken(%q) = %v", token, err)
	}
	rec, ok := s.keys.Get(info.ID)
	if !ok || rec.Hash == "" {
		t.Fatalf("stored key %s = %+v, %v, want a record with a hash", info.ID, rec, ok)
	}

	// What the API shows: the returned info, Key and Keys.
	got, ok := s.Key(info.ID)
	if !ok || got != info {
		t.Errorf("Key(%q) = %+v, %v, want %+v, true", info.ID, got, ok, info)
	}
	shown := map[string]any{"created": info, "Key": got, "Keys(acme)": s.Keys("acme"), "Keys()": s.Keys("")}
	for what, v := range shown {
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("json.Marshal(%s): %v", what, err)
		}
		for _, leak := range []string{rec.Hash, secret, token, `"hash"`} {
			if bytes.Contains(data, []byte(leak)) {
				t.Errorf("JSON of %s = %s, contains %q", what, data, leak)
			}
		}
	}
	if keys := s.Keys("acme"); len(keys) != 1 || keys[0] != info {
		t.Errorf("Keys(acme) = %+v, want just %+v", keys, info)
	}
	if keys := s.Keys("nobody"); len(keys) != 0 {
		t.Errorf("Keys(nobody) = %+v, want none", keys)
	}
	if _, ok := s.Key("nosuchkey"); ok {
		t.Errorf("Key(nosuchkey) = _, true, want false")
	}

	// What is stored: the hash, never the token or its secret.
	entry, err := s.keysKV.Get(ctxT(t), info.ID)
	if err != nil {
		t.Fatalf("keys bucket Get(%q) error = %v", info.ID, err)
	}
	for _, leak := range []string{secret, token} {
		if bytes.Contains(entry.Value, []byte(leak)) {
			t.Errorf("stored record %s contains the token's secret", entry.Value)
		}
	}
	if !bytes.Contains(entry.Value, []byte(rec.Hash)) {
		t.Errorf("stored record %s does not contain the hash %q", entry.Value, rec.Hash)
	}

	// What is logged: the id, never the secret.
	if _, err := s.RevokeKey(ctxT(t), info.ID); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), info.ID) {
		t.Errorf("log = %q, want it to name key %s", logs.String(), info.ID)
	}
	if strings.Contains(logs.String(), secret) || strings.Contains(logs.String(), rec.Hash) {
		t.Errorf("log = %q, contains the key's secret or hash", logs.String())
	}
}

func TestAuthenticateRefusesBadTokens(t *testing.T) {
	s := newService(t)
	info, token := mustCreateKey(t, s, NewKey{Tenant: Default, Role: Owner})
	_, secret, _ := ParseToken(token)
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	tests := []struct {
		name, token string
	}{
		{"forged secret for a real id", "gust_" + info.ID + "_" + wellFormedSecret},
		{"real secret with one letter changed", "gust_" + info.ID + "_" + flip(secret, 0)},
		{"real secret with last letter changed", "gust_" + info.ID + "_" + flip(secret, secretLen-1)},
		{"real secret under another id", "gust_" + flip(info.ID, 3) + "_" + secret},
		{"unknown id", wellFormedToken},
		{"real token uppercase", strings.ToUpper(token)},
		{"real token with trailing space", token + " "},
		{"real token with leading space", " " + token},
		{"real token with newline", token + "\n"},
		{"real token truncated", token[:len(token)-1]},
		{"real token extended", token + "a"},
		{"real token without prefix", strings.TrimPrefix(token, "gust_")},
		{"real token as a bearer header", "Bearer " + token},
	}
	for _, tt := range tokenTests {
		if !tt.ok || tt.in != wellFormedToken {
			tests = append(tests, struct{ name, token string }{"malformed: " + tt.name, tt.in})
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := s.Authenticate(tt.token)
			if err != ErrUnauthenticated || p != (Principal{}) {
				t.Errorf("Authenticate(%q) = %+v, %v, want a zero Principal and exactly ErrUnauthenticated", tt.token, p, err)
			}
		})
	}
	if _, err := s.Authenticate(token); err != nil {
		t.Errorf("Authenticate(real token) after the bad ones = %v, want nil", err)
	}
}

func TestRevokeKeyTakesEffectAtOnce(t *testing.T) {
	clock := newFakeClock()
	s := startService(t, openStore(t), serviceOpts{clock: clock})
	ctx := ctxT(t)
	info, token := mustCreateKey(t, s, NewKey{Tenant: Default, Role: Developer})
	other, otherToken := mustCreateKey(t, s, NewKey{Tenant: Default, Role: Developer})

	revoked, err := s.RevokeKey(ctx, info.ID)
	if err != nil {
		t.Fatalf("RevokeKey(%q) error = %v, want nil", info.ID, err)
	}
	// No polling: RevokeKey returns once this node's view has the change.
	if p, err := s.Authenticate(token); err != ErrUnauthenticated {
		t.Errorf("Authenticate(revoked token) = %+v, %v, want ErrUnauthenticated", p, err)
	}
	if revoked.Revoked == nil || !revoked.Revoked.Equal(clock.Now()) {
		t.Errorf("RevokeKey info.Revoked = %v, want %v", revoked.Revoked, clock.Now())
	}
	if got, ok := s.Key(info.ID); !ok || got.Revoked == nil {
		t.Errorf("Key(%q) after revoking = %+v, %v, want it kept and marked revoked", info.ID, got, ok)
	}
	if _, err := s.Authenticate(otherToken); err != nil {
		t.Errorf("Authenticate(another key %s) = %v, want nil", other.ID, err)
	}

	// Revoking again keeps the first revocation time.
	first := *revoked.Revoked
	clock.Advance(time.Hour)
	again, err := s.RevokeKey(ctx, info.ID)
	if err != nil || again.Revoked == nil || !again.Revoked.Equal(first) {
		t.Errorf("RevokeKey again = %+v, %v, want Revoked kept at %v", again, err, first)
	}
	if _, err := s.RevokeKey(ctx, "nosuchkeyatall22"); !errors.Is(err, ErrNotFound) {
		t.Errorf("RevokeKey(unknown) = %v, want ErrNotFound", err)
	}
}

func TestExpiredKeyIsRefused(t *testing.T) {
	clock := newFakeClock()
	s := startService(t, openStore(t), serviceOpts{clock: clock})
	info, token := mustCreateKey(t, s, NewKey{Tenant: Default, Role: Invoker, TTL: time.Millisecond})
	if info.Expires == nil {
		t.Fatalf("CreateKey(TTL 1ms) Expires = nil, want a time")
	}
	steps := []struct {
		advance time.Duration
		ok      bool
	}{
		{0, true},
		{999 * time.Microsecond, true},
		{time.Microsecond, false}, // exactly at Expires
		{time.Hour, false},
	}
	for _, step := range steps {
		clock.Advance(step.advance)
		_, err := s.Authenticate(token)
		if step.ok && err != nil {
			t.Errorf("Authenticate at %v (expires %v) = %v, want nil", clock.Now(), *info.Expires, err)
		}
		if !step.ok && err != ErrUnauthenticated {
			t.Errorf("Authenticate at %v (expires %v) = %v, want ErrUnauthenticated", clock.Now(), *info.Expires, err)
		}
	}
}

func TestCreateKeyRefuses(t *testing.T) {
	s := newService(t)
	mustCreateTenant(t, s, "acme", Quotas{})
	tests := []struct {
		name    string
		nk      NewKey
		invalid bool // else ErrNotFound
	}{
		{"admin outside default", NewKey{Tenant: "acme", Role: Admin}, true},
		{"admin in a missing tenant", NewKey{Tenant: "nobody", Role: Admin}, true},
		{"unknown role", NewKey{Tenant: "acme", Role: "root"}, true},
		{"empty role", NewKey{Tenant: "acme"}, true},
		{"role in wrong case", NewKey{Tenant: Default, Role: "Admin"}, true},
		{"name too long", NewKey{Tenant: "acme", Role: Owner, Name: strings.Repeat("n", 129)}, true},
		{"negative ttl", NewKey{Tenant: "acme", Role: Owner, TTL: -time.Second}, true},
		{"missing tenant", NewKey{Tenant: "nobody", Role: Owner}, false},
		{"empty tenant", NewKey{Role: Invoker}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info, token, err := s.CreateKey(ctxT(t), tt.nk)
			if tt.invalid && !isInvalid(err) {
				t.Errorf("CreateKey(%+v) error = %v, want an *InvalidError", tt.nk, err)
			}
			if !tt.invalid && !errors.Is(err, ErrNotFound) {
				t.Errorf("CreateKey(%+v) error = %v, want ErrNotFound", tt.nk, err)
			}
			if token != "" || info != (KeyInfo{}) {
				t.Errorf("CreateKey(%+v) = %+v, %q, want nothing", tt.nk, info, token)
			}
		})
	}
	if keys := s.Keys(""); len(keys) != 0 {
		t.Errorf("Keys() after refused creates = %+v, want none", keys)
	}
}

func TestDeletedTenantKeysStopAuthenticating(t *testing.T) {
	s := newService(t)
	ctx := ctxT(t)
	mustCreateTenant(t, s, "acme", Quotas{})
	_, token := mustCreateKey(t, s, NewKey{Tenant: "acme", Role: Owner})
	_, keep := mustCreateKey(t, s, NewKey{Tenant: Default, Role: Owner})
	if _, err := s.Authenticate(token); err != nil {
		t.Fatalf("Authenticate before delete = %v, want nil", err)
	}
	if err := s.DeleteTenant(ctx, "acme"); err != nil {
		t.Fatalf("DeleteTenant(acme) = %v", err)
	}
	if _, err := s.Authenticate(token); err != ErrUnauthenticated {
		t.Errorf("Authenticate(key of deleted tenant) = %v, want ErrUnauthenticated", err)
	}
	// DeleteTenant does not wait for its own keys view (see
	// TestDeleteTenantReadsItsOwnWrites), so poll for it here.
	eventually(t, 2*time.Second, "Keys(acme) empty after deleting acme", func() bool {
		return len(s.Keys("acme")) == 0
	})
	// A new tenant of the same name does not bring the old keys back.
	mustCreateTenant(t, s, "acme", Quotas{})
	if _, err := s.Authenticate(token); err != ErrUnauthenticated {
		t.Errorf("Authenticate(old key) after re-creating the tenant = %v, want ErrUnauthenticated", err)
	}
	if _, err := s.Authenticate(keep); err != nil {
		t.Errorf("Authenticate(key of another tenant) = %v, want nil", err)
	}
}

func TestKeysAcrossTwoNodes(t *testing.T) {
	st := openStore(t)
	a := startService(t, st, serviceOpts{})
	b := startService(t, st, serviceOpts{})
	ctx := ctxT(t)
	mustCreateTenant(t, a, "acme", Quotas{})

	info, token := mustCreateKey(t, a, NewKey{Tenant: "acme", Role: Developer})
	want := Principal{KeyID: info.ID, Tenant: "acme", Role: Developer}
	eventually(t, 5*time.Second, "key created on A authenticates on B", func() bool {
		p, err := b.Authenticate(token)
		return err == nil && p == want
	})

	if _, err := a.RevokeKey(ctx, info.ID); err != nil {
		t.Fatalf("RevokeKey on A = %v", err)
	}
	eventually(t, 2*time.Second, "key revoked on A refused on B", func() bool {
		_, err := b.Authenticate(token)
		return err == ErrUnauthenticated
	})

	// And the other way round, for a tenant deleted on B.
	_, token2 := mustCreateKey(t, b, NewKey{Tenant: "acme", Role: Invoker})
	eventually(t, 5*time.Second, "key created on B authenticates on A", func() bool {
		_, err := a.Authenticate(token2)
		return err == nil
	})
	if err := b.DeleteTenant(ctx, "acme"); err != nil {
		t.Fatalf("DeleteTenant on B = %v", err)
	}
	eventually(t, 2*time.Second, "key of a tenant deleted on B refused on A", func() bool {
		_, err := a.Authenticate(token2)
		return err == ErrUnauthenticated
	})
}

func adminKeys(s *Service) []KeyInfo {
	var out []KeyInfo
	for _, k := range s.Keys("") {
		if k.Role == Admin {
			out = append(out, k)
		}
	}
	return out
}

func TestBootstrapCreatesOneAdminKey(t *testing.T) {
	st := openStore(t)
	a := startService(t, st, serviceOpts{})
	ctx := ctxT(t)
	path := filepath.Join(t.TempDir(), "admin.key")

	token, err := a.Bootstrap(ctx, path)
	if err != nil || token == "" {
		t.Fatalf("Bootstrap() = %q, %v, want a token", token, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("Stat(%s) = %v", path, err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("admin key file mode = %v, want 0600", mode)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(data)); got != token {
		t.Errorf("admin key file holds %q, want %q", got, token)
	}
	p, err := a.Authenticate(token)
	if err != nil || p.Role != Admin || p.Tenant != Default {
		t.Errorf("Authenticate(bootstrap token) = %+v, %v, want an admin of %q", p, err, Default)
	}

	// Again on the same node: nothing.
	if again, err := a.Bootstrap(ctx, path); again != "" || err != nil {
		t.Errorf("Bootstrap() again = %q, %v, want \"\", nil", again, err)
	}
	// On another node, with the file gone: still nothing, and no file.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	b := startService(t, st, serviceOpts{})
	if again, err := b.Bootstrap(ctx, path); again != "" || err != nil {
		t.Errorf("Bootstrap() on a second node = %q, %v, want \"\", nil", again, err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat(%s) after a second Bootstrap = %v, want it not to exist", path, err)
	}
	if keys := adminKeys(a); len(keys) != 1 {
		t.Errorf("admin keys = %+v, want exactly one", keys)
	}
	if _, err := b.Authenticate(token); err != nil {
		t.Errorf("Authenticate(bootstrap token) on the second node = %v, want nil", err)
	}
}

func TestBootstrapRacingNodes(t *testing.T) {
	st := openStore(t)
	nodes := []*Service{startService(t, st, serviceOpts{}), startService(t, st, serviceOpts{}), startService(t, st, serviceOpts{})}
	dir := t.TempDir()
	ctx := ctxT(t)
	tokens := make([]string, len(nodes))
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() {
			tokens[i], errs[i] = n.Bootstrap(ctx, filepath.Join(dir, string(rune('a'+i))))
		})
	}
	wg.Wait()
	created := 0
	for i := range nodes {
		if errs[i] != nil {
			t.Errorf("node %d Bootstrap error = %v, want nil", i, errs[i])
		}
		if tokens[i] != "" {
			created++
		}
	}
	if created != 1 {
		t.Errorf("%d nodes created an admin key, want exactly 1", created)
	}
	eventually(t, 5*time.Second, "every node sees one admin key", func() bool {
		for _, n := range nodes {
			if len(adminKeys(n)) != 1 {
				return false
			}
		}
		return true
	})
}

// TestBootstrapFileIsPrivateEvenIfItExisted checks the token never lands in a
// file others can read.
func TestBootstrapFileIsPrivateEvenIfItExisted(t *testing.T) {
	s := newService(t)
	path := filepath.Join(t.TempDir(), "admin.key")
	if err := os.WriteFile(path, []byte("stale\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Bootstrap(ctxT(t), path); err != nil {
		t.Fatalf("Bootstrap() error = %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("admin key file mode = %v, want 0600", mode)
	}
}

// TestBootstrapRetriesAfterAFailure checks that a failed first start does not
// lock every node out of ever getting an admin key.
func TestBootstrapRetriesAfterAFailure(t *testing.T) {
	s := newService(t)
	ctx := ctxT(t)
	bad := filepath.Join(t.TempDir(), "missing-dir", "admin.key")
	if token, err := s.Bootstrap(ctx, bad); err == nil {
		t.Fatalf("Bootstrap(%s) = %q, nil, want an error", bad, token)
	}
	good := filepath.Join(t.TempDir(), "admin.key")
	token, err := s.Bootstrap(ctx, good)
	if err != nil || token == "" {
		t.Errorf("Bootstrap(%s) after a failed attempt = %q, %v, want a token", good, token, err)
	}
}

func TestRevokeWhileAuthenticating(t *testing.T) {
	st := openStore(t)
	a := startService(t, st, serviceOpts{})
	b := startService(t, st, serviceOpts{})
	var infos []KeyInfo
	var tokens []string
	for range 8 {
		info, token := mustCreateKey(t, a, NewKey{Tenant: Default, Role: Invoker})
		infos, tokens = append(infos, info), append(tokens, token)
	}
	eventually(t, 5*time.Second, "node B sees every key", func() bool { return len(b.Keys(Default)) == len(infos) })

	ctx := ctxT(t)
	var wg sync.WaitGroup
	for _, n := range []*Service{a, b} {
		for _, token := range tokens {
			wg.Go(func() {
				for range 200 {
					if _, err := n.Authenticate(token); err != nil && err != ErrUnauthenticated {
						t.Errorf("Authenticate() = %v, want nil or ErrUnauthenticated", err)
						return
					}
				}
			})
		}
	}
	for i, info := range infos {
		n := []*Service{a, b}[i%2]
		wg.Go(func() {
			if _, err := n.RevokeKey(ctx, info.ID); err != nil {
				t.Errorf("RevokeKey(%s) = %v, want nil", info.ID, err)
			}
		})
	}
	wg.Wait()
	eventually(t, 2*time.Second, "every revoked key refused on both nodes", func() bool {
		for _, n := range []*Service{a, b} {
			for _, token := range tokens {
				if _, err := n.Authenticate(token); err != ErrUnauthenticated {
					return false
				}
			}
		}
		return true
	})
}

// TestKeyDoesNotOutliveItsTenant replays, deterministically, a race between
// CreateKey on one node and DeleteTenant on another: CreateKey checks the
// tenant in its view, DeleteTenant lists and deletes the tenant's keys, and
// then CreateKey's write lands. The key left behind must never authenticate,
// nor be listed, not even once a new tenant of the same name is created.
func TestKeyDoesNotOutliveItsTenant(t *testing.T) {
	clock := newFakeClock()
	s := startService(t, openStore(t), serviceOpts{clock: clock})
	ctx := ctxT(t)
	mustCreateTenant(t, s, "acme", Quotas{})
	if err := s.DeleteTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	// The other node's CreateKey, which saw acme in its view, writes now.
	const id = "orphanorphanorph"
	secret := wellFormedSecret
	rev, err := createJSON(ctx, s.keysKV, id, Key{KeyInfo: KeyInfo{ID: id, Tenant: "acme", Role: Owner, Created: clock.Now().UTC()}, Hash: hashSecret(id, secret)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.keys.WaitApplied(ctx, id, rev); err != nil {
		t.Fatal(err)
	}
	token := "gust_" + id + "_" + secret
	if _, err := s.Authenticate(token); err != ErrUnauthenticated {
		t.Errorf("Authenticate(orphan key) = %v, want ErrUnauthenticated", err)
	}
	clock.Advance(time.Hour)
	mustCreateTenant(t, s, "acme", Quotas{})
	if p, err := s.Authenticate(token); err != ErrUnauthenticated {
		t.Errorf("Authenticate(key of the deleted acme) in the new acme = %+v, %v, want ErrUnauthenticated", p, err)
	}
	// Nor do the new acme's owners see it, to revoke or rename it as theirs.
	if keys := s.Keys("acme"); len(keys) != 0 {
		t.Errorf("Keys(acme) in the new acme = %+v, want none: the key is the deleted acme's", keys)
	}
	if k, ok := s.Key(id); ok {
		t.Errorf("Key(%s) in the new acme = %+v, want none", id, k)
	}
}

// TestDeleteTenantReadsItsOwnWrites checks that once DeleteTenant returns,
// this node no longer shows the tenant's keys and secrets, as every other
// write of the service does (CreateKey, RevokeKey, SetSecret, DeleteSecret
// wait for their own view). It repeats the race so that it shows reliably.
func TestDeleteTenantReadsItsOwnWrites(t *testing.T) {
	s := newService(t)
	ctx := ctxT(t)
	for round := range 200 {
		mustCreateTenant(t, s, "acme", Quotas{})
		_, token := mustCreateKey(t, s, NewKey{Tenant: "acme", Role: Owner})
		mustSetSecret(t, s, "acme", "OLD", "old-value")
		if err := s.DeleteTenant(ctx, "acme"); err != nil {
			t.Fatal(err)
		}
		if keys, secrets := s.Keys("acme"), s.Secrets("acme"); len(keys) != 0 || len(secrets) != 0 || s.HasSecret("acme", "OLD") {
			t.Fatalf("round %d: right after DeleteTenant(acme): Keys = %d, Secrets = %d, HasSecret(OLD) = %v, want none",
				round, len(keys), len(secrets), s.HasSecret("acme", "OLD"))
		}
		mustCreateTenant(t, s, "acme", Quotas{})
		if got, err := s.Resolve("acme", []string{"OLD"}); err == nil {
			t.Fatalf("round %d: Resolve(OLD) in the re-created acme = %v, want a *MissingSecretError", round, got)
		}
		if _, err := s.Authenticate(token); err != ErrUnauthenticated {
			t.Fatalf("round %d: Authenticate(old key) in the re-created acme = %v, want ErrUnauthenticated", round, err)
		}
		if err := s.DeleteTenant(ctx, "acme"); err != nil {
			t.Fatal(err)
		}
		eventually(t, 2*time.Second, "views catch up", func() bool {
			return len(s.Keys("acme")) == 0 && len(s.Secrets("acme")) == 0
		})
	}
}

// TestBootstrapAfterAFirstStartDied: a first start killed after it marked
// the bootstrap and before the key's file existed left no admin key
// anywhere, and nothing but a new data dir helped. A later start, once the
// mark is older than another node's bootstrap could take, creates the key;
// a start while it is fresh, or while an admin key can be used, does not.
func TestBootstrapAfterAFirstStartDied(t *testing.T) {
	clock := newFakeClock()
	s := startService(t, openStore(t), serviceOpts{clock: clock})
	ctx := ctxT(t)
	path := filepath.Join(t.TempDir(), "admin.key")
	// The first start marked it, and died.
	if _, err := s.metaKV.Create(ctx, bootstrapKey, []byte(`{"at":"`+clock.Now().UTC().Format(time.RFC3339Nano)+`"}`)); err != nil {
		t.Fatal(err)
	}
	if token, err := s.Bootstrap(ctx, path); token != "" || err != nil {
		t.Errorf("Bootstrap while the mark is fresh = %q, %v; want nothing (another node may be creating the key)", token, err)
	}
	clock.Advance(2 * bootstrapGrace)
	token, err := s.Bootstrap(ctx, path)
	if err != nil || token == "" {
		t.Fatalf("Bootstrap after the first start died = %q, %v; want a new admin key", token, err)
	}
	if p, err := s.Authenticate(token); err != nil || p.Role != Admin {
		t.Errorf("Authenticate(the new key) = %+v, %v; want an admin", p, err)
	}
	if b, _ := os.ReadFile(path); strings.TrimSpace(string(b)) != token {
		t.Errorf("admin.key holds %q, want the new key", b)
	}
	clock.Advance(2 * bootstrapGrace)
	if again, err := s.Bootstrap(ctx, path); again != "" || err != nil {
		t.Errorf("Bootstrap with an admin key = %q, %v; want nothing", again, err)
	}
}
