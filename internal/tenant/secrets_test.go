package tenant

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func mustSetSecret(t *testing.T, s *Service, tenant, name, value string) SecretInfo {
	t.Helper()
	info, err := s.SetSecret(ctxT(t), tenant, name, []byte(value))
	if err != nil {
		t.Fatalf("SetSecret(%q, %q) error = %v, want nil", tenant, name, err)
	}
	return info
}

func TestSecretLifecycle(t *testing.T) {
	clock := newFakeClock()
	s := startService(t, openStore(t), serviceOpts{clock: clock})
	ctx := ctxT(t)
	mustCreateTenant(t, s, "acme", Quotas{})

	created := clock.Now()
	info := mustSetSecret(t, s, "acme", "DB_PASSWORD", "hunter2")
	if want := (SecretInfo{Name: "DB_PASSWORD", Created: created, Updated: created}); info != want {
		t.Errorf("SetSecret() = %+v, want %+v", info, want)
	}
	if !s.HasSecret("acme", "DB_PASSWORD") {
		t.Errorf("HasSecret(acme, DB_PASSWORD) = false, want true")
	}
	got, err := s.Resolve("acme", []string{"DB_PASSWORD"})
	if err != nil || got["DB_PASSWORD"] != "hunter2" || len(got) != 1 {
		t.Errorf("Resolve(acme, DB_PASSWORD) = %v, %v, want map[DB_PASSWORD:hunter2]", got, err)
	}

	// Rotate: the value changes, Created stays, Updated moves.
	clock.Advance(time.Minute)
	info = mustSetSecret(t, s, "acme", "DB_PASSWORD", "correct horse")
	if want := (SecretInfo{Name: "DB_PASSWORD", Created: created, Updated: clock.Now()}); info != want {
		t.Errorf("SetSecret() to rotate = %+v, want %+v", info, want)
	}
	got, err = s.Resolve("acme", []string{"DB_PASSWORD"})
	if err != nil || got["DB_PASSWORD"] != "correct horse" {
		t.Errorf("Resolve after rotating = %v, %v, want the new value", got, err)
	}

	// Empty values and values at the limit are kept exactly.
	mustSetSecret(t, s, "acme", "EMPTY", "")
	big := strings.Repeat("x", MaxSecretBytes)
	mustSetSecret(t, s, "acme", "BIG", big)
	got, err = s.Resolve("acme", []string{"EMPTY", "BIG", "DB_PASSWORD"})
	if err != nil || len(got) != 3 || got["EMPTY"] != "" || got["BIG"] != big {
		t.Errorf("Resolve(EMPTY, BIG, DB_PASSWORD) = %d values, %v, want 3 with exact values", len(got), err)
	}
	if got, err := s.Resolve("acme", nil); err != nil || len(got) != 0 {
		t.Errorf("Resolve(acme, nil) = %v, %v, want an empty map", got, err)
	}

	if err := s.DeleteSecret(ctx, "acme", "DB_PASSWORD"); err != nil {
		t.Fatalf("DeleteSecret() = %v, want nil", err)
	}
	if s.HasSecret("acme", "DB_PASSWORD") {
		t.Errorf("HasSecret after delete = true, want false")
	}
	var missing *MissingSecretError
	if _, err := s.Resolve("acme", []string{"DB_PASSWORD"}); !errors.As(err, &missing) || missing.Name != "DB_PASSWORD" {
		t.Errorf("Resolve(deleted) = %v, want a *MissingSecretError naming DB_PASSWORD", err)
	}
	if err := s.DeleteSecret(ctx, "acme", "DB_PASSWORD"); !errors.Is(err, ErrNotFound) {
		t.Errorf("DeleteSecret() again = %v, want ErrNotFound", err)
	}
}

func TestSecretsListNamesNotValues(t *testing.T) {
	s := newService(t)
	mustCreateTenant(t, s, "acme", Quotas{})
	values := map[string]string{"A_TOKEN": "s3cr3t-value-one", "B": "s3cr3t-value-two", "_c9": "s3cr3t-value-three"}
	for name, v := range values {
		mustSetSecret(t, s, "acme", name, v)
	}
	list := s.Secrets("acme")
	var names []string
	for _, sec := range list {
		names = append(names, sec.Name)
	}
	if want := []string{"A_TOKEN", "B", "_c9"}; strings.Join(names, ",") != strings.Join(want, ",") {
		t.Errorf("Secrets(acme) names = %v, want %v", names, want)
	}
	data, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range values {
		if bytes.Contains(data, []byte(v)) {
			t.Errorf("JSON of Secrets(acme) = %s, contains the value %q", data, v)
		}
	}
	var fields []map[string]any
	if err := json.Unmarshal(data, &fields); err != nil {
		t.Fatal(err)
	}
	for _, f := range fields {
		for k := range f {
			if k != "name" && k != "created" && k != "updated" {
				t.Errorf("Secrets JSON has field %q, want only name, created and updated", k)
			}
		}
	}
	if got := s.Secrets(Default); len(got) != 0 {
		t.Errorf("Secrets(default) = %+v, want none", got)
	}
}

func TestValidSecretName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"A", true},
		{"_", true},
		{"db_password", true},
		{"API_KEY_2", true},
		{"_1", true},
		{strings.Repeat("a", 128), true},
		{strings.Repeat("a", 129), false},
		{"", false},
		{"1ABC", false},
		{"A-B", false},
		{"A.B", false},
		{"A B", false},
		{"A/B", false},
		{"A*", false},
		{">", false},
		{"A\n", false},
		{"Ä", false},
		{"A=B", false},
	}
	for _, tt := range tests {
		if got := ValidSecretName(tt.name); got != tt.ok {
			t.Errorf("ValidSecretName(%q) = %v, want %v", tt.name, got, tt.ok)
		}
	}
}

func TestSetSecretRefuses(t *testing.T) {
	s := newService(t)
	mustCreateTenant(t, s, "acme", Quotas{})
	tests := []struct {
		name, tenant, secret string
		size                 int
		invalid              bool // else ErrNotFound
	}{
		{"empty name", "acme", "", 1, true},
		{"leading digit", "acme", "1X", 1, true},
		{"dash", "acme", "A-B", 1, true},
		{"dot", "acme", "A.B", 1, true},
		{"wildcard", "acme", "A*", 1, true},
		{"too long name", "acme", strings.Repeat("A", 129), 1, true},
		{"oversized value", "acme", "BIG", MaxSecretBytes + 1, true},
		{"missing tenant", "nobody", "X", 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info, err := s.SetSecret(ctxT(t), tt.tenant, tt.secret, bytes.Repeat([]byte("v"), tt.size))
			if tt.invalid && !isInvalid(err) {
				t.Errorf("SetSecret(%q, %q, %d bytes) = %+v, %v, want an *InvalidError", tt.tenant, tt.secret, tt.size, info, err)
			}
			if !tt.invalid && !errors.Is(err, ErrNotFound) {
				t.Errorf("SetSecret(%q, %q) = %+v, %v, want ErrNotFound", tt.tenant, tt.secret, info, err)
			}
		})
	}
	if got := s.Secrets("acme"); len(got) != 0 {
		t.Errorf("Secrets(acme) after refused sets = %+v, want none", got)
	}
}

func TestResolveNamesTheMissingSecret(t *testing.T) {
	s := newService(t)
	mustCreateTenant(t, s, "acme", Quotas{})
	mustSetSecret(t, s, "acme", "PRESENT", "v")
	got, err := s.Resolve("acme", []string{"PRESENT", "ABSENT"})
	var missing *MissingSecretError
	if !errors.As(err, &missing) || missing.Name != "ABSENT" || got != nil {
		t.Fatalf("Resolve(PRESENT, ABSENT) = %v, %v, want nil and a *MissingSecretError naming ABSENT", got, err)
	}
	if !strings.Contains(err.Error(), "ABSENT") {
		t.Errorf("error %q does not name ABSENT", err)
	}
}

func TestSecretsIsolatedBetweenTenants(t *testing.T) {
	s := newService(t)
	ctx := ctxT(t)
	mustCreateTenant(t, s, "acme", Quotas{})
	mustCreateTenant(t, s, "globex", Quotas{})
	mustSetSecret(t, s, "acme", "TOKEN", "acme-only")

	var missing *MissingSecretError
	if got, err := s.Resolve("globex", []string{"TOKEN"}); !errors.As(err, &missing) {
		t.Errorf("Resolve(globex, TOKEN) = %v, %v, want a *MissingSecretError", got, err)
	}
	if s.HasSecret("globex", "TOKEN") {
		t.Errorf("HasSecret(globex, TOKEN) = true, want false")
	}
	if got := s.Secrets("globex"); len(got) != 0 {
		t.Errorf("Secrets(globex) = %+v, want none", got)
	}
	if err := s.DeleteSecret(ctx, "globex", "TOKEN"); !errors.Is(err, ErrNotFound) {
		t.Errorf("DeleteSecret(globex, TOKEN) = %v, want ErrNotFound", err)
	}
	// The same name in another tenant is another secret.
	mustSetSecret(t, s, "globex", "TOKEN", "globex-only")
	for tenant, want := range map[string]string{"acme": "acme-only", "globex": "globex-only"} {
		got, err := s.Resolve(tenant, []string{"TOKEN"})
		if err != nil || got["TOKEN"] != want {
			t.Errorf("Resolve(%s, TOKEN) = %v, %v, want %q", tenant, got, err, want)
		}
	}

	// Deleting a tenant deletes its secrets and only its secrets.
	if err := s.DeleteTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.secretsKV.Get(ctx, secretKey("acme", "TOKEN")); !errors.Is(err, ErrNotFound) && err == nil {
		t.Errorf("stored acme.TOKEN after deleting acme still exists, want it gone")
	}
	// DeleteTenant does not wait for its own secrets view (see
	// TestDeleteTenantReadsItsOwnWrites), so poll for it here.
	eventually(t, 2*time.Second, "HasSecret(acme, TOKEN) false after deleting acme", func() bool {
		return !s.HasSecret("acme", "TOKEN")
	})
	mustCreateTenant(t, s, "acme", Quotas{})
	if _, err := s.Resolve("acme", []string{"TOKEN"}); !errors.As(err, &missing) {
		t.Errorf("Resolve(acme, TOKEN) after re-creating acme = %v, want a *MissingSecretError", err)
	}
	if got, err := s.Resolve("globex", []string{"TOKEN"}); err != nil || got["TOKEN"] != "globex-only" {
		t.Errorf("Resolve(globex, TOKEN) after deleting acme = %v, %v, want globex-only", got, err)
	}
}

// TestSecretKeysCannotReachAnotherTenant checks that a secret name cannot
// address a record of another tenant whose name extends the first one's:
// such tenant names are refused, and so are such secret names.
func TestSecretKeysCannotReachAnotherTenant(t *testing.T) {
	s := newService(t)
	ctx := ctxT(t)
	mustCreateTenant(t, s, "a", Quotas{})
	var invalid *InvalidError
	if _, err := s.CreateTenant(ctx, "a.b", Quotas{}); !errors.As(err, &invalid) {
		t.Errorf("CreateTenant(a.b) = %v, want an *InvalidError", err)
	}
	mustSetSecret(t, s, "a", "X", "of a")
	if s.HasSecret("a", "b.X") || s.HasSecret("a", "a.X") {
		t.Errorf("HasSecret with a dotted name = true, want false")
	}
	if err := s.DeleteSecret(ctx, "a", "b.X"); err == nil {
		t.Errorf("DeleteSecret(a, b.X) = nil, want an error")
	}
}

// putRecord writes a secret record straight into the bucket, as someone with
// access to the store could, and waits for the view to have it.
func putRecord(t *testing.T, s *Service, rec sealedSecret) {
	t.Helper()
	ctx := ctxT(t)
	data, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	key := secretKey(rec.Tenant, rec.Name)
	if _, err := deleteKey(ctx, s.secretsKV, key); err != nil {
		t.Fatal(err)
	}
	rev, err := s.secretsKV.Create(ctx, key, data)
	if err != nil {
		t.Fatalf("Create(%s) = %v", key, err)
	}
	if err := s.secrets.WaitApplied(ctx, key, rev); err != nil {
		t.Fatal(err)
	}
}

func TestMovedSealedValueDoesNotOpen(t *testing.T) {
	var logs bytes.Buffer
	s := startService(t, openStore(t), serviceOpts{logger: slog.New(slog.NewTextHandler(&logs, nil))})
	mustCreateTenant(t, s, "acme", Quotas{})
	mustCreateTenant(t, s, "globex", Quotas{})
	const value = "the-moved-value-3f9a"
	mustSetSecret(t, s, "acme", "SOURCE", value)
	src, ok := s.secrets.Get(secretKey("acme", "SOURCE"))
	if !ok {
		t.Fatal("stored acme.SOURCE missing")
	}
	if bytes.Contains(src.Sealed, []byte(value)) {
		t.Errorf("sealed record holds the value in the clear")
	}

	tests := []struct {
		name   string
		tenant string
		secret string
		sealed []byte
	}{
		{"to another name", "acme", "TARGET", src.Sealed},
		{"to another tenant", "globex", "SOURCE", src.Sealed},
		{"to another tenant and name", "globex", "TARGET", src.Sealed},
		{"one bit flipped", "acme", "FLIPPED", func() []byte {
			b := bytes.Clone(src.Sealed)
			b[len(b)-1] ^= 1
			return b
		}()},
		{"truncated", "acme", "SHORT", src.Sealed[:len(src.Sealed)-1]},
		{"shorter than a nonce", "acme", "TINY", src.Sealed[:4]},
		{"empty", "acme", "EMPTY", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			owner, _ := s.Tenant(tt.tenant)
			putRecord(t, s, sealedSecret{Tenant: tt.tenant, TenantID: owner.ID, Name: tt.secret, Sealed: tt.sealed, Created: src.Created, Updated: src.Updated})
			got, err := s.Resolve(tt.tenant, []string{tt.secret})
			if err == nil {
				t.Fatalf("Resolve(%s, %s) of a moved or damaged value = %v, nil, want an error", tt.tenant, tt.secret, got)
			}
			var missing *MissingSecretError
			if errors.As(err, &missing) {
				t.Errorf("Resolve(%s, %s) = %v, want an unsealing error, not a missing secret", tt.tenant, tt.secret, err)
			}
			if strings.Contains(err.Error(), value) {
				t.Errorf("Resolve error %q contains the value", err)
			}
		})
	}
	if got, err := s.Resolve("acme", []string{"SOURCE"}); err != nil || got["SOURCE"] != value {
		t.Errorf("Resolve(acme, SOURCE) = %v, %v, want the original value", got, err)
	}
	if strings.Contains(logs.String(), value) {
		t.Errorf("log contains the secret's value: %s", logs.String())
	}
}

func TestSealerBindsTenantAndName(t *testing.T) {
	sealer, err := NewSealer(testKey)
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewSealer(otherKey)
	if err != nil {
		t.Fatal(err)
	}
	value := []byte("sealed value")
	sealed := sealer.seal("ab", "C", value)
	if again := sealer.seal("ab", "C", value); bytes.Equal(again, sealed) {
		t.Errorf("seal twice gave the same bytes, want a fresh nonce each time")
	}
	got, err := sealer.open("ab", "C", sealed)
	if err != nil || !bytes.Equal(got, value) {
		t.Fatalf("open(ab, C) = %q, %v, want %q", got, err, value)
	}
	tests := []struct {
		name           string
		s              *Sealer
		tenant, secret string
		sealed         []byte
	}{
		{"other tenant", sealer, "xy", "C", sealed},
		{"other name", sealer, "ab", "D", sealed},
		{"boundary moved", sealer, "a", "bC", sealed},
		{"empty tenant and name", sealer, "", "", sealed},
		{"other master key", other, "ab", "C", sealed},
		{"nil", sealer, "ab", "C", nil},
		{"nonce only", sealer, "ab", "C", sealed[:12]},
		{"tag cut", sealer, "ab", "C", sealed[:len(sealed)-1]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := tt.s.open(tt.tenant, tt.secret, tt.sealed); err == nil {
				t.Errorf("open(%q, %q) = %q, nil, want an error", tt.tenant, tt.secret, got)
			}
		})
	}
}

func TestChangedMasterKeyIsRefused(t *testing.T) {
	dir := t.TempDir()
	const value = "restart-value-7c1e"
	st := openStoreAt(t, dir)
	watchCtx, stopWatch := context.WithCancel(t.Context())
	first := startService(t, st, serviceOpts{watchCtx: watchCtx})
	mustCreateTenant(t, first, "acme", Quotas{})
	mustSetSecret(t, first, "acme", "KEPT", value)
	stopWatch()
	if err := st.Close(); err != nil {
		t.Fatalf("store Close() = %v", err)
	}

	// The same data, restarted: once with the same key, once with another.
	st = openStoreAt(t, dir)
	same := startService(t, st, serviceOpts{key: testKey})
	if got, err := same.Resolve("acme", []string{"KEPT"}); err != nil || got["KEPT"] != value {
		t.Errorf("Resolve after restart with the same key = %v, %v, want %q", got, err, value)
	}
	// With another key, the service refuses to start at all, rather than
	// fail every secret and seal new ones with the wrong key.
	sealer, err := NewSealer(otherKey)
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(ctxT(t), Deps{Store: st, Sealer: sealer})
	if err == nil || !strings.Contains(err.Error(), "GUST_MASTER_KEY") {
		t.Fatalf("New with another master key = %v, want an error naming GUST_MASTER_KEY", err)
	}
	if strings.Contains(err.Error(), value) {
		t.Errorf("New error %q contains the value", err)
	}
}

func TestSecretValuesNeverLogged(t *testing.T) {
	var logs bytes.Buffer
	clock := newFakeClock()
	st := openStore(t)
	s := startService(t, st, serviceOpts{logger: slog.New(slog.NewTextHandler(&logs, nil)), clock: clock})
	ctx := ctxT(t)
	mustCreateTenant(t, s, "acme", Quotas{})
	values := []string{"log-probe-value-one", "log-probe-value-two", "log-probe-value-three"}
	mustSetSecret(t, s, "acme", "PROBE", values[0])
	clock.Advance(time.Second)
	mustSetSecret(t, s, "acme", "PROBE", values[1])
	mustSetSecret(t, s, "acme", "OTHER", values[2])
	if _, err := s.Resolve("acme", []string{"PROBE", "OTHER"}); err != nil {
		t.Fatal(err)
	}
	_ = s.Secrets("acme")
	_, _ = s.Resolve("acme", []string{"NOPE"})
	_, _ = s.SetSecret(ctx, "acme", "bad-name", []byte(values[0]))
	_, _ = s.SetSecret(ctx, "nobody", "PROBE", []byte(values[0]))
	if err := s.DeleteSecret(ctx, "acme", "PROBE"); err != nil {
		t.Fatal(err)
	}
	// A service with the wrong key is refused; that must not log a value either.
	if sealer, err := NewSealer(otherKey); err == nil {
		New(ctx, Deps{Store: st, Sealer: sealer, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	}
	if err := s.DeleteTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}

	out := logs.String()
	if !strings.Contains(out, "secret set") || !strings.Contains(out, "PROBE") {
		t.Errorf("log = %q, want it to record the secrets set by name", out)
	}
	for _, v := range values {
		if strings.Contains(out, v) {
			t.Errorf("log contains the value %q:\n%s", v, out)
		}
	}
}

func TestNewSealerNeeds32Bytes(t *testing.T) {
	for _, n := range []int{0, 16, 24, 31, 33, 64} {
		if _, err := NewSealer(make([]byte, n)); err == nil {
			t.Errorf("NewSealer(%d bytes) error = nil, want an error", n)
		}
	}
	if _, err := NewSealer(make([]byte, 32)); err != nil {
		t.Errorf("NewSealer(32 bytes) error = %v, want nil", err)
	}
}

func TestLoadMasterKeyFromEnv(t *testing.T) {
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i * 7)
	}
	tests := []struct {
		name string
		env  string
		ok   bool
	}{
		{"hex", hex.EncodeToString(key), true},
		{"upper hex", strings.ToUpper(hex.EncodeToString(key)), true},
		{"base64", base64.StdEncoding.EncodeToString(key), true},
		{"hex too short", hex.EncodeToString(key[:31]), false},
		{"hex too long", hex.EncodeToString(append(key, 0)), false},
		{"odd hex", hex.EncodeToString(key)[:63], false},
		{"base64 too short", base64.StdEncoding.EncodeToString(key[:16]), false},
		{"base64 too long", base64.StdEncoding.EncodeToString(append(key, 1, 2, 3)), false},
		{"raw 32 characters", strings.Repeat("k", 32), false},
		{"garbage", "not a master key!", false},
		{"space", " ", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "master.key")
			got, err := LoadMasterKey(tt.env, path)
			if tt.ok {
				if err != nil || !bytes.Equal(got, key) {
					t.Errorf("LoadMasterKey(%q) = %x, %v, want %x", tt.env, got, err, key)
				}
			} else {
				if err == nil {
					t.Fatalf("LoadMasterKey(%q) = %x, nil, want an error", tt.env, got)
				}
				if !strings.Contains(err.Error(), "GUST_MASTER_KEY") {
					t.Errorf("LoadMasterKey(%q) error = %q, want it to name GUST_MASTER_KEY", tt.env, err)
				}
				if strings.TrimSpace(tt.env) != "" && strings.Contains(err.Error(), tt.env) {
					t.Errorf("LoadMasterKey(%q) error = %q, repeats the key material", tt.env, err)
				}
			}
			// The environment wins: the file is neither read nor created.
			if _, err := os.Stat(path); err == nil {
				t.Errorf("LoadMasterKey with GUST_MASTER_KEY set created %s", path)
			}
		})
	}
}

func TestLoadMasterKeyFromFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "master.key")
	first, err := LoadMasterKey("", path)
	if err != nil || len(first) != 32 {
		t.Fatalf("LoadMasterKey(\"\", new file) = %x, %v, want 32 bytes", first, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("master key file mode = %v, want 0600", mode)
	}
	second, err := LoadMasterKey("", path)
	if err != nil || !bytes.Equal(first, second) {
		t.Errorf("LoadMasterKey(\"\", same file) = %x, %v, want %x", second, err, first)
	}
	if _, err := NewSealer(second); err != nil {
		t.Errorf("NewSealer(loaded key) = %v, want nil", err)
	}
	if other, err := LoadMasterKey("", filepath.Join(dir, "other.key")); err != nil || bytes.Equal(other, first) {
		t.Errorf("LoadMasterKey(another new file) = %x, %v, want a different random key", other, err)
	}

	// A key file written by hand, as hex with surrounding blanks.
	hexPath := filepath.Join(dir, "hex.key")
	if err := os.WriteFile(hexPath, []byte("  "+hex.EncodeToString(testKey)+"\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := LoadMasterKey("", hexPath); err != nil || !bytes.Equal(got, testKey) {
		t.Errorf("LoadMasterKey(hex file) = %x, %v, want %x", got, err, testKey)
	}

	bad := filepath.Join(dir, "bad.key")
	if err := os.WriteFile(bad, []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := LoadMasterKey("", bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("LoadMasterKey(garbage file) = %x, %v, want an error naming %s", got, err, bad)
	}
	missingDir := filepath.Join(dir, "no", "such", "dir", "master.key")
	if got, err := LoadMasterKey("", missingDir); err == nil {
		t.Errorf("LoadMasterKey(file in a missing directory) = %x, nil, want an error", got)
	}
}

func TestSetSecretConcurrently(t *testing.T) {
	st := openStore(t)
	nodes := []*Service{startService(t, st, serviceOpts{}), startService(t, st, serviceOpts{})}
	mustCreateTenant(t, nodes[0], "acme", Quotas{})
	eventually(t, 5*time.Second, "node 1 sees acme", func() bool { _, ok := nodes[1].Tenant("acme"); return ok })
	ctx := ctxT(t)
	values := map[string]bool{}
	var wg sync.WaitGroup
	for i := range 8 {
		v := fmt.Sprintf("value-%d", i)
		values[v] = true
		wg.Go(func() {
			if _, err := nodes[i%2].SetSecret(ctx, "acme", "SHARED", []byte(v)); err != nil {
				t.Errorf("SetSecret(SHARED, %s) = %v, want nil", v, err)
			}
		})
	}
	wg.Wait()
	var final []string
	eventually(t, 5*time.Second, "both nodes resolve the same value", func() bool {
		final = final[:0]
		for _, n := range nodes {
			got, err := n.Resolve("acme", []string{"SHARED"})
			if err != nil {
				return false
			}
			final = append(final, got["SHARED"])
		}
		return final[0] == final[1]
	})
	if !values[final[0]] {
		t.Errorf("Resolve(SHARED) = %q, want one of the values set", final[0])
	}
	if got := nodes[0].Secrets("acme"); len(got) != 1 {
		t.Errorf("Secrets(acme) = %+v, want one secret", got)
	}
}

// TestDeleteBesideWrites: sets and deletes of one secret at once all
// succeed: a delete returns once the view has seen it (it waited for the
// secret to be gone, which a set since could keep from ever being seen,
// and answered nothing until the client gave up), and a set that finds the
// secret deleted between its create and its update creates it again (it
// answered not found).
func TestDeleteBesideWrites(t *testing.T) {
	s := newService(t)
	mustCreateTenant(t, s, "acme", Quotas{})
	ctx := ctxT(t)
	var wg sync.WaitGroup
	errs := make(chan error, 400)
	for range 200 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			if _, err := s.SetSecret(ctx, "acme", "RACE", []byte("v")); err != nil {
				errs <- fmt.Errorf("set: %w", err)
			}
		}()
		go func() {
			defer wg.Done()
			if err := s.DeleteSecret(ctx, "acme", "RACE"); err != nil && !errors.Is(err, ErrNotFound) {
				errs <- fmt.Errorf("delete: %w", err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("a set or delete beside the others: %v", err)
	}
}
