package tenant

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
)

// wellFormed is what ParseToken must accept, and all it may accept.
var wellFormed = regexp.MustCompile(`^gust_[a-z2-7]{16}_[a-z2-7]{52}$`)

func FuzzParseToken(f *testing.F) {
	for _, tt := range tokenTests {
		f.Add(tt.in)
	}
	for _, tt := range bearerTests {
		f.Add(tt.in)
		f.Add(tt.want)
	}
	f.Fuzz(func(t *testing.T, in string) {
		id, secret, err := ParseToken(in)
		if ok := wellFormed.MatchString(in); ok != (err == nil) {
			t.Fatalf("ParseToken(%q) error = %v, want ok %v", in, err, ok)
		}
		if err != nil {
			if err != ErrUnauthenticated || id != "" || secret != "" {
				t.Fatalf("ParseToken(%q) = %q, %q, %v, want \"\", \"\", ErrUnauthenticated", in, id, secret, err)
			}
			return
		}
		if len(id) != idLen || len(secret) != secretLen {
			t.Fatalf("ParseToken(%q) = id of %d, secret of %d bytes, want %d and %d", in, len(id), len(secret), idLen, secretLen)
		}
		if !validToken(id) || !validToken(secret) {
			t.Fatalf("ParseToken(%q) = %q, %q, outside the token alphabet", in, id, secret)
		}
		if got := "gust_" + id + "_" + secret; got != in {
			t.Fatalf("ParseToken(%q) = %q, %q, which join to %q", in, id, secret, got)
		}
	})
}

func FuzzBearerToken(f *testing.F) {
	for _, tt := range bearerTests {
		f.Add(tt.in)
	}
	for _, tt := range tokenTests {
		f.Add("Bearer " + tt.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got := BearerToken(in)
		if got != strings.TrimSpace(got) {
			t.Fatalf("BearerToken(%q) = %q, has surrounding space", in, got)
		}
		if got != "" && (len(in) < 7 || !strings.EqualFold(in[:7], "Bearer ") || !strings.Contains(in, got)) {
			t.Fatalf("BearerToken(%q) = %q, from a header that is not \"Bearer <token>\"", in, got)
		}
		// Any token, trimmed, comes back out of its header unchanged.
		tok := strings.TrimSpace(in)
		if back := BearerToken("Bearer " + tok); back != tok {
			t.Fatalf("BearerToken(%q) = %q, want %q", "Bearer "+tok, back, tok)
		}
	})
}

// FuzzAuthenticate checks, against a real store, that only the issued token
// authenticates, and that every failure is the same error.
func FuzzAuthenticate(f *testing.F) {
	s := startService(f, openStore(f), serviceOpts{})
	info, token := mustCreateKey(f, s, NewKey{Tenant: Default, Role: Owner})
	want := Principal{KeyID: info.ID, Tenant: Default, Role: Owner}
	f.Add(token)
	f.Add(strings.ToUpper(token))
	f.Add(token[:len(token)-1] + "a")
	f.Add(token[:len(token)-1] + "b")
	f.Add("gust_" + info.ID + "_" + wellFormedSecret)
	for _, tt := range tokenTests {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		p, err := s.Authenticate(in)
		if in == token {
			if err != nil || p != want {
				t.Fatalf("Authenticate(issued token) = %+v, %v, want %+v, nil", p, err, want)
			}
			return
		}
		if err != ErrUnauthenticated || p != (Principal{}) {
			t.Fatalf("Authenticate(%q) = %+v, %v, want a zero Principal and ErrUnauthenticated", in, p, err)
		}
	})
}

func FuzzSealerOpen(f *testing.F) {
	for _, tt := range tokenTests {
		f.Add("acme", tt.name, []byte(tt.in))
	}
	f.Add("", "", []byte{})
	f.Add("a", "b/c", make([]byte, 12))
	f.Add("acme", "X", make([]byte, 28))
	sealer, err := NewSealer(testKey)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, tenant, name string, data []byte) {
		if got, err := sealer.open(tenant, name, data); err == nil {
			t.Fatalf("open(%q, %q, %x) = %q, nil: forged a sealed value", tenant, name, data, got)
		}
		sealed := sealer.seal(tenant, name, data)
		got, err := sealer.open(tenant, name, sealed)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("open(seal(%q, %q, %x)) = %x, %v, want the value back", tenant, name, data, got, err)
		}
		if _, err := sealer.open(tenant+"x", name, sealed); err == nil {
			t.Fatalf("open(%q) of a value sealed for %q succeeded", tenant+"x", tenant)
		}
		if _, err := sealer.open(tenant, name+"x", sealed); err == nil {
			t.Fatalf("open(%q) of a value sealed for %q succeeded", name+"x", name)
		}
	})
}
