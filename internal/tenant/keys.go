package tenant

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gust-faas/gust/internal/store"
)

// KeyInfo is what the API shows of a key.
type KeyInfo struct {
	ID      string     `json:"id"`
	Tenant  string     `json:"tenant"`
	Role    Role       `json:"role"`
	Name    string     `json:"name,omitempty"`
	Created time.Time  `json:"created"`
	Expires *time.Time `json:"expires,omitempty"`
	Revoked *time.Time `json:"revoked,omitempty"`
}

// Key is an API key's record: what the API shows, and what it never shows.
// The secret half of the token is stored only as its SHA-256: it has 256
// random bits, so a slow hash would add nothing.
type Key struct {
	KeyInfo
	// TenantID is the ID of the tenant's incarnation the key was made in.
	TenantID string `json:"tenant_id"`
	Hash     string `json:"hash"`
}

// Info returns k without its hash.
func (k Key) Info() KeyInfo { return k.KeyInfo }

// Principal is who a request acts as.
type Principal struct {
	KeyID  string
	Tenant string
	Role   Role
}

// CanActIn reports whether p may act in tenant with role need.
func (p Principal) CanActIn(tenant string, need Role) bool {
	if p.Role == Admin {
		return true
	}
	return p.Tenant == tenant && p.Role.Allows(need)
}

// Tokens look like gust_<id>_<secret>: the id (16 characters) names the key
// record, the secret (52 characters) proves possession.
const (
	tokenPrefix = "gust_"
	idLen       = 16
	secretLen   = 52
)

var tokenEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// ErrUnauthenticated is every way a token can fail: missing, malformed,
// unknown, forged, expired or revoked. Callers must not say which.
var ErrUnauthenticated = errors.New("missing or invalid API key")

// ParseToken splits a token into its id and secret, or fails with
// ErrUnauthenticated.
func ParseToken(token string) (id, secret string, err error) {
	rest, ok := strings.CutPrefix(token, tokenPrefix)
	if !ok || len(rest) != idLen+1+secretLen || rest[idLen] != '_' {
		return "", "", ErrUnauthenticated
	}
	id, secret = rest[:idLen], rest[idLen+1:]
	if !validToken(id) || !validToken(secret) {
		return "", "", ErrUnauthenticated
	}
	return id, secret, nil
}

func validToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

func hashSecret(id, secret string) string {
	sum := sha256.Sum256([]byte(id + ":" + secret))
	return hex.EncodeToString(sum[:])
}

// Authenticate returns the principal a bearer token stands for, or
// ErrUnauthenticated. It reads only the in-memory view.
func (s *Service) Authenticate(token string) (Principal, error) {
	id, secret, err := ParseToken(token)
	if err != nil {
		return Principal{}, err
	}
	k, ok := s.keys.Get(id)
	// Compare even for an unknown id, so timing does not tell ids apart.
	want := k.Hash
	if !ok {
		want = strings.Repeat("0", sha256.Size*2)
	}
	if subtle.ConstantTimeCompare([]byte(hashSecret(id, secret)), []byte(want)) != 1 || !ok {
		return Principal{}, ErrUnauthenticated
	}
	if !s.usable(k, s.now()) {
		return Principal{}, ErrUnauthenticated
	}
	return Principal{KeyID: k.ID, Tenant: k.Tenant, Role: k.Role}, nil
}

// usable reports whether k authenticates at now: not revoked, not expired,
// and live.
func (s *Service) usable(k Key, now time.Time) bool {
	return k.Revoked == nil && (k.Expires == nil || now.Before(*k.Expires)) && s.live(k)
}

// live reports whether k was made in its tenant as it is now: the keys of
// a deleted tenant that its delete missed (made while it ran) belong to no
// tenant created since under the name.
func (s *Service) live(k Key) bool {
	t, ok := s.tenants.Get(k.Tenant)
	return ok && t.ID == k.TenantID
}

// NewKey describes a key to create.
type NewKey struct {
	Tenant string
	Role   Role
	Name   string
	// TTL, if positive, makes the key expire that long after its creation.
	TTL time.Duration
}

// CreateKey creates a key and returns its record and its token, which is
// never shown again.
func (s *Service) CreateKey(ctx context.Context, nk NewKey) (KeyInfo, string, error) {
	if !nk.Role.Valid() {
		return KeyInfo{}, "", invalidf("role %q is unknown: use invoker, developer, owner or admin", nk.Role)
	}
	if nk.Role == Admin && nk.Tenant != Default {
		return KeyInfo{}, "", invalidf("admin keys belong to the %q tenant", Default)
	}
	t, ok := s.tenants.Get(nk.Tenant)
	if !ok {
		return KeyInfo{}, "", fmt.Errorf("tenant %q: %w", nk.Tenant, ErrNotFound)
	}
	if len(nk.Name) > 128 {
		return KeyInfo{}, "", invalidf("a key's name is at most 128 bytes")
	}
	if nk.TTL < 0 {
		return KeyInfo{}, "", invalidf("a key's lifetime cannot be negative")
	}
	id, secret := randomToken(idLen), randomToken(secretLen)
	now := s.now().UTC()
	k := Key{KeyInfo: KeyInfo{ID: id, Tenant: nk.Tenant, Role: nk.Role, Name: nk.Name, Created: now}, TenantID: t.ID, Hash: hashSecret(id, secret)}
	if nk.TTL > 0 {
		exp := now.Add(nk.TTL)
		k.Expires = &exp
	}
	rev, err := createJSON(ctx, s.keysKV, id, k)
	if err != nil {
		return KeyInfo{}, "", err
	}
	if err := s.keys.WaitApplied(ctx, id, rev); err != nil {
		return KeyInfo{}, "", err
	}
	s.log.Info("API key created", "key_id", id, "tenant", k.Tenant, "role", k.Role)
	return k.Info(), tokenPrefix + id + "_" + secret, nil
}

func randomToken(n int) string {
	b := make([]byte, (n*5+7)/8)
	rand.Read(b)
	return tokenEncoding.EncodeToString(b)[:n]
}

// Keys returns the keys of tenant, or of every tenant if tenant is empty.
func (s *Service) Keys(tenant string) []KeyInfo {
	var out []KeyInfo
	for _, k := range s.keys.List("") {
		if (tenant == "" || k.Tenant == tenant) && s.live(k) {
			out = append(out, k.Info())
		}
	}
	return out
}

// Key returns a key's record.
func (s *Service) Key(id string) (KeyInfo, bool) {
	k, ok := s.keys.Get(id)
	if !ok || !s.live(k) {
		return KeyInfo{}, false
	}
	return k.Info(), true
}

// RevokeKey revokes a key at once on every node. It is kept, marked revoked,
// so that the audit trail can still name it.
func (s *Service) RevokeKey(ctx context.Context, id string) (KeyInfo, error) {
	var out Key
	rev, err := updateJSON(ctx, s.keysKV, id, func(k *Key) error {
		if k.Revoked == nil {
			now := s.now().UTC()
			k.Revoked = &now
		}
		out = *k
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return KeyInfo{}, fmt.Errorf("key %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return KeyInfo{}, err
	}
	if err := s.keys.WaitApplied(ctx, id, rev); err != nil {
		return KeyInfo{}, err
	}
	s.log.Info("API key revoked", "key_id", id, "tenant", out.Tenant)
	return out.Info(), nil
}

// bootstrapKey marks, in the meta bucket, that the first admin key exists,
// so that only one node of a cluster creates one.
const bootstrapKey = "first-admin-key"

// Bootstrap creates the first admin key if no node ever has, writes its
// token to path (readable by its owner only) and returns it. If an admin key
// was created before, it returns "". If it fails, it undoes what it did, so
// that a later start tries again.
//
// A mark with no admin key that can be used, older than bootstrapGrace
// (a first start killed between the mark and the key's file, or every
// admin key revoked), is taken over: one more start creates a key, where
// nothing could be done but to start afresh.
func (s *Service) Bootstrap(ctx context.Context, path string) (token string, err error) {
	mark := []byte(`{"at":"` + s.now().UTC().Format(time.RFC3339Nano) + `"}`)
	rev, err := s.metaKV.Create(ctx, bootstrapKey, mark)
	if errors.Is(err, store.ErrConflict) {
		if rev, err = s.takeOverBootstrap(ctx, mark); rev == 0 || err != nil {
			return "", err
		}
		s.log.Warn("no admin API key can be used (a first start stopped before it saved one, or every one was revoked): creating one")
	} else if err != nil {
		return "", err
	}
	var info KeyInfo
	defer func() {
		if err == nil {
			return
		}
		if info.ID != "" {
			deleteKey(context.WithoutCancel(ctx), s.keysKV, info.ID)
		}
		s.metaKV.Delete(context.WithoutCancel(ctx), bootstrapKey, rev)
	}()
	info, token, err = s.CreateKey(ctx, NewKey{Tenant: Default, Role: Admin, Name: "first admin key"})
	if err != nil {
		return "", err
	}
	if err := writePrivate(path, []byte(token+"\n")); err != nil {
		return "", fmt.Errorf("tenant: write the admin key: %w", err)
	}
	return token, nil
}

// bootstrapGrace is how long another node has to finish the first admin
// key it began before this one may take the mark over.
const bootstrapGrace = time.Minute

// takeOverBootstrap returns the mark's new revision if no usable admin key
// exists and the mark is older than bootstrapGrace (or predates times in
// it), and 0 otherwise.
func (s *Service) takeOverBootstrap(ctx context.Context, mark []byte) (uint64, error) {
	now := s.now()
	for _, k := range s.keys.List("") {
		if k.Role == Admin && s.usable(k, now) {
			return 0, nil
		}
	}
	e, err := s.metaKV.Get(ctx, bootstrapKey)
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil // undone just now by a failed start: the next start begins afresh
	}
	if err != nil {
		return 0, err
	}
	var old struct{ At time.Time }
	json.Unmarshal(e.Value, &old) // a mark from before it held a time has none: old enough
	if now.Sub(old.At) < bootstrapGrace {
		return 0, nil
	}
	rev, err := s.metaKV.Update(ctx, bootstrapKey, mark, e.Revision)
	if errors.Is(err, store.ErrConflict) {
		return 0, nil // another node took it over
	}
	return rev, err
}

// writePrivate writes data to path readable by its owner only, even if path
// existed with a wider mode: a new file is written and renamed over it.
func writePrivate(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// BearerToken returns the token of an "Authorization: Bearer <token>" header
// value, or "".
func BearerToken(authorization string) string {
	scheme, token, ok := strings.Cut(authorization, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}
