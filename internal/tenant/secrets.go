package tenant

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gust-faas/gust/internal/store"
)

// MaxSecretBytes bounds a secret's value.
const MaxSecretBytes = 64 << 10

// ValidSecretName reports whether s can name a secret: it becomes an
// environment variable, so 1 to 128 letters, digits and underscores, not
// starting with a digit. (A regular expression for this took 1.4 ms to
// compile at every start of the gust binary: every CLI command.)
func ValidSecretName(s string) bool {
	if s == "" || len(s) > 128 || '0' <= s[0] && s[0] <= '9' {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// Sealer encrypts secrets at rest with AES-256-GCM under a master key.
type Sealer struct{ aead cipher.AEAD }

// NewSealer returns a Sealer for a 32-byte master key.
func NewSealer(key []byte) (*Sealer, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("the master key must be 32 bytes, not %d", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Sealer{aead: aead}, nil
}

// LoadMasterKey returns the master key from env (64 hex digits or standard
// base64 of 32 bytes) if it is set, else from path, creating path with a new
// random key (readable by its owner only) if it does not exist.
func LoadMasterKey(env, path string) ([]byte, error) {
	if env != "" {
		key, err := decodeMasterKey(strings.TrimSpace(env))
		if err != nil {
			return nil, fmt.Errorf("GUST_MASTER_KEY: %w", err)
		}
		return key, nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		key := make([]byte, 32)
		rand.Read(key)
		if err := writePrivate(path, []byte(base64.StdEncoding.EncodeToString(key)+"\n")); err != nil {
			return nil, fmt.Errorf("write the master key: %w", err)
		}
		return key, nil
	}
	if err != nil {
		return nil, err
	}
	key, err := decodeMasterKey(strings.TrimSpace(string(data)))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return key, nil
}

func decodeMasterKey(s string) ([]byte, error) {
	if key, err := hex.DecodeString(s); err == nil && len(key) == 32 {
		return key, nil
	}
	if key, err := base64.StdEncoding.DecodeString(s); err == nil && len(key) == 32 {
		return key, nil
	}
	return nil, errors.New("a master key is 32 bytes, written as 64 hex digits or in base64")
}

// seal encrypts value, bound to its tenant and name so that a sealed value
// cannot be moved to another secret.
func (s *Sealer) seal(tenant, name string, value []byte) []byte {
	nonce := make([]byte, s.aead.NonceSize())
	rand.Read(nonce)
	return s.aead.Seal(nonce, nonce, value, []byte(tenant+"/"+name))
}

func (s *Sealer) open(tenant, name string, sealed []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n {
		return nil, errors.New("sealed secret is too short")
	}
	return s.aead.Open(nil, sealed[:n], sealed[n:], []byte(tenant+"/"+name))
}

// sealedSecret is a secret as stored.
type sealedSecret struct {
	Tenant   string    `json:"tenant"`
	TenantID string    `json:"tenant_id"`
	Name     string    `json:"name"`
	Sealed   []byte    `json:"sealed"`
	Created  time.Time `json:"created"`
	Updated  time.Time `json:"updated"`
}

// SecretInfo is what anyone is ever shown of a secret: never its value.
type SecretInfo struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

func secretKey(tenant, name string) string { return tenant + "." + name }

// SetSecret creates or replaces a secret.
func (s *Service) SetSecret(ctx context.Context, tenant, name string, value []byte) (SecretInfo, error) {
	if !ValidSecretName(name) {
		return SecretInfo{}, invalidf("secret name %q is invalid: use letters, digits and underscores, not starting with a digit, at most 128", name)
	}
	if len(value) > MaxSecretBytes {
		return SecretInfo{}, invalidf("a secret's value is at most %d bytes", MaxSecretBytes)
	}
	// A function gets it as an environment variable, which cannot hold a
	// NUL byte, and which programs read as text.
	if bytes.IndexByte(value, 0) >= 0 || !utf8.Valid(value) {
		return SecretInfo{}, invalidf("a secret's value must be UTF-8 text without NUL bytes: it becomes an environment variable (encode binary values, for example in base64)")
	}
	t, ok := s.tenants.Get(tenant)
	if !ok {
		return SecretInfo{}, fmt.Errorf("tenant %q: %w", tenant, ErrNotFound)
	}
	now := s.now().UTC()
	rec := sealedSecret{Tenant: tenant, TenantID: t.ID, Name: name, Sealed: s.sealer.seal(tenant, name, value), Created: now, Updated: now}
	k := secretKey(tenant, name)
	var (
		rev uint64
		err error
	)
	for {
		rev, err = createJSON(ctx, s.secretsKV, k, rec)
		if !errors.Is(err, store.ErrConflict) {
			break
		}
		rev, err = updateJSON(ctx, s.secretsKV, k, func(old *sealedSecret) error {
			if old.TenantID == rec.TenantID {
				rec.Created = old.Created
			}
			*old = rec
			return nil
		})
		if !errors.Is(err, ErrNotFound) {
			break
		}
		// Deleted between the two: created again.
	}
	if err != nil {
		return SecretInfo{}, err
	}
	if err := s.secrets.WaitApplied(ctx, k, rev); err != nil {
		return SecretInfo{}, err
	}
	s.log.Info("secret set", "tenant", tenant, "secret", name)
	return SecretInfo{Name: name, Created: rec.Created, Updated: rec.Updated}, nil
}

// secret returns tenant's secret name from the view, if it belongs to the
// tenant's current incarnation.
func (s *Service) secret(tenant, name string) (sealedSecret, bool) {
	if !ValidSecretName(name) {
		return sealedSecret{}, false
	}
	sec, ok := s.secrets.Get(secretKey(tenant, name))
	return sec, ok && s.current(sec)
}

// current reports whether sec belongs to its tenant's current incarnation.
func (s *Service) current(sec sealedSecret) bool {
	t, ok := s.tenants.Get(sec.Tenant)
	return ok && t.ID == sec.TenantID
}

// Secrets lists a tenant's secrets, without their values.
func (s *Service) Secrets(tenant string) []SecretInfo {
	var out []SecretInfo
	for _, sec := range s.secrets.List(tenant + ".") {
		if sec.Tenant == tenant && s.current(sec) {
			out = append(out, SecretInfo{Name: sec.Name, Created: sec.Created, Updated: sec.Updated})
		}
	}
	return out
}

// DeleteSecret deletes a secret.
func (s *Service) DeleteSecret(ctx context.Context, tenant, name string) error {
	k := secretKey(tenant, name)
	if sec, ok := s.secret(tenant, name); !ok || sec.Tenant != tenant {
		return fmt.Errorf("secret %q: %w", name, ErrNotFound)
	}
	if err := deleteSeen(ctx, s.secretsKV, s.secrets, k); err != nil {
		return err
	}
	s.log.Info("secret deleted", "tenant", tenant, "secret", name)
	return nil
}

// MissingSecretError names a secret a function uses that is not set.
type MissingSecretError struct{ Name string }

func (e *MissingSecretError) Error() string {
	return fmt.Sprintf("secret %q is not set in this tenant", e.Name)
}

// Resolve returns the values of the named secrets of tenant, for a function
// that uses them.
func (s *Service) Resolve(tenant string, names []string) (map[string]string, error) {
	out := make(map[string]string, len(names))
	for _, name := range names {
		sec, ok := s.secret(tenant, name)
		if !ok || sec.Tenant != tenant {
			return nil, &MissingSecretError{Name: name}
		}
		value, err := s.sealer.open(tenant, name, sec.Sealed)
		if err != nil {
			return nil, fmt.Errorf("tenant: secret %s of %s cannot be unsealed (was the master key changed?): %w", name, tenant, err)
		}
		out[name] = string(value)
	}
	return out, nil
}

// HasSecret reports whether tenant has a secret named name.
func (s *Service) HasSecret(tenant, name string) bool {
	sec, ok := s.secret(tenant, name)
	return ok && sec.Tenant == tenant
}
