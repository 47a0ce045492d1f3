package cli

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gust-faas/gust/internal/api"
	"github.com/gust-faas/gust/internal/tenant"
)

// createKey creates a key through the API as n's admin and returns its id
// and token.
func (n *node) createKey(t *testing.T, tenantName, role string) (id, token string) {
	t.Helper()
	a := n.do(t, "POST", "/v1/keys?tenant="+tenantName, "application/json", strings.NewReader(fmt.Sprintf(`{"role":%q,"name":"test"}`, role)))
	if a.status != 201 {
		t.Fatalf("create %s key in %s: %d %s", role, tenantName, a.status, a.body)
	}
	var out struct {
		Key   struct{ ID string }
		Token string
	}
	if err := json.Unmarshal([]byte(a.body), &out); err != nil {
		t.Fatal(err)
	}
	return out.Key.ID, out.Token
}

func (n *node) createTenant(t *testing.T, name, quotas string) {
	t.Helper()
	if quotas == "" {
		quotas = "{}"
	}
	a := n.do(t, "POST", "/v1/tenants", "application/json", strings.NewReader(fmt.Sprintf(`{"name":%q,"quotas":%s}`, name, quotas)))
	if a.status != 201 {
		t.Fatalf("create tenant %s: %d %s", name, a.status, a.body)
	}
}

// deployAs deploys the guest fixture as name with the given extra spec
// fields, using key.
func (n *node) deployAs(t *testing.T, key, name, specFields string) answer {
	t.Helper()
	saved := n.key
	n.key = key
	defer func() { n.key = saved }()
	spec := "{" + specFields + "}"
	return n.deployRaw(t, name, spec, must(os.ReadFile(guestPath)))
}

// TestTenantIsolation is the attack: with tenant beta's keys of every role,
// tenant alpha's functions, versions, invocations, secrets, keys and audit
// log cannot be listed, read, invoked, changed or deleted, and every answer
// is 404, as for something that does not exist.
func TestTenantIsolation(t *testing.T) {
	n := startNode(t, t.TempDir())
	n.createTenant(t, "alpha", "")
	n.createTenant(t, "beta", "")
	alphaOwnerID, alphaOwner := n.createKey(t, "alpha", "owner")
	if a := n.doAs(t, alphaOwner, "PUT", "/v1/secrets/DB_PASSWORD", "application/json", strings.NewReader(`{"value":"alpha-secret-value"}`)); a.status != 200 {
		t.Fatalf("set alpha's secret: %d %s", a.status, a.body)
	}
	if a := n.deployAs(t, alphaOwner, "private", `"secrets":["DB_PASSWORD"]`); a.status != 201 {
		t.Fatalf("deploy alpha's function: %d %s", a.status, a.body)
	}
	roles := []string{"owner", "developer", "invoker"}
	betaKeys := map[string]string{}
	for _, role := range roles {
		_, betaKeys[role] = n.createKey(t, "beta", role)
	}
	guest := must(os.ReadFile(guestPath))
	attacks := []struct {
		name         string
		method, path string
		body         string
	}{
		{"list functions", "GET", "/v1/functions?tenant=alpha", ""},
		{"read function", "GET", "/v1/functions/private?tenant=alpha", ""},
		{"delete function", "DELETE", "/v1/functions/private?tenant=alpha", ""},
		{"invoke", "POST", "/fn/alpha/private", "x"},
		{"invoke a path", "GET", "/fn/alpha/private/secret", ""},
		{"invoke a version", "GET", "/fn/alpha/private@1", ""},
		{"invoke a missing version", "GET", "/fn/alpha/private@9", ""},
		{"list secrets", "GET", "/v1/secrets?tenant=alpha", ""},
		{"overwrite secret", "PUT", "/v1/secrets/DB_PASSWORD?tenant=alpha", `{"value":"pwned"}`},
		{"delete secret", "DELETE", "/v1/secrets/DB_PASSWORD?tenant=alpha", ""},
		{"list keys", "GET", "/v1/keys?tenant=alpha", ""},
		{"read key", "GET", "/v1/keys/" + alphaOwnerID, ""},
		{"revoke key", "DELETE", "/v1/keys/" + alphaOwnerID, ""},
		{"create key", "POST", "/v1/keys?tenant=alpha", `{"role":"invoker"}`},
		{"read audit", "GET", "/v1/audit?tenant=alpha", ""},
	}
	for _, role := range roles {
		for _, at := range attacks {
			t.Run(role+"/"+at.name, func(t *testing.T) {
				var body *strings.Reader
				ct := ""
				if at.body != "" {
					body, ct = strings.NewReader(at.body), "application/json"
				}
				var a answer
				if body != nil {
					a = n.doAs(t, betaKeys[role], at.method, at.path, ct, body)
				} else {
					a = n.doAs(t, betaKeys[role], at.method, at.path, "", nil)
				}
				if a.status != 404 || a.code != "not_found" {
					t.Errorf("%s %s with beta's %s key: %d %s %q, want 404 not_found", at.method, at.path, role, a.status, a.code, a.body)
				}
				if strings.Contains(a.body, "alpha-secret-value") || strings.Contains(a.body, alphaOwner) {
					t.Errorf("%s %s leaked a secret: %q", at.method, at.path, a.body)
				}
			})
		}
		t.Run(role+"/deploy over alpha's function", func(t *testing.T) {
			a := n.deployAs(t, betaKeys[role], "private", `"name":"private"`)
			a2 := n.doAs(t, betaKeys[role], "PUT", "/v1/functions/private?tenant=alpha", "multipart/form-data; boundary=x", strings.NewReader("--x--"))
			if a2.status != 404 {
				t.Errorf("deploy into alpha with beta's %s key: %d, want 404", role, a2.status)
			}
			if role == "invoker" && a.status != 403 {
				t.Errorf("invoker deployed: %d %s, want 403", a.status, a.body)
			}
			_ = guest
		})
	}
	// beta's own views hold nothing of alpha's. (beta's audit log names what
	// beta tried, so only entries of alpha's would be a leak.)
	for _, path := range []string{"/v1/functions", "/v1/secrets", "/v1/keys"} {
		a := n.doAs(t, betaKeys["owner"], "GET", path, "", nil)
		if a.status != 200 || strings.Contains(a.body, "alpha") || strings.Contains(a.body, "DB_PASSWORD") {
			t.Errorf("beta's owner GET %s = %d %s, want 200 without anything of alpha's", path, a.status, a.body)
		}
	}
	if a := n.doAs(t, betaKeys["owner"], "GET", "/v1/audit?limit=10000", "", nil); a.status != 200 || strings.Contains(a.body, `"tenant": "alpha"`) || strings.Contains(a.body, `"key_id": "`+alphaOwnerID) {
		t.Errorf("beta's audit log holds alpha's entries: %s", a.body)
	}
	// beta's developer deployed its own "private" (an owner and a developer
	// may); alpha's is untouched and still works with alpha's key.
	want := fmt.Sprintf("%x\n", sha256.Sum256([]byte("alpha-secret-value")))
	if a := n.doAs(t, alphaOwner, "GET", "/fn/alpha/private/secret", "", nil); a.status != 200 || a.body != want {
		t.Errorf("alpha's function after the attacks: %d %q, want 200 %q", a.status, a.body, want)
	}
	var f struct{ Latest int }
	json.Unmarshal([]byte(n.doAs(t, alphaOwner, "GET", "/v1/functions/private", "", nil).body), &f)
	if f.Latest != 1 {
		t.Errorf("alpha's function has latest version %d after the attacks, want 1", f.Latest)
	}
}

func TestRoles(t *testing.T) {
	n := startNode(t, t.TempDir())
	n.createTenant(t, "team", "")
	_, owner := n.createKey(t, "team", "owner")
	_, dev := n.createKey(t, "team", "developer")
	_, inv := n.createKey(t, "team", "invoker")
	adminID, admin := n.createKey(t, "default", "admin")
	_, defaultOwner := n.createKey(t, "default", "owner")
	if a := n.deployAs(t, inv, "fn", ""); a.status != 403 || a.code != "forbidden" || !strings.Contains(a.msg, "needs developer") {
		t.Errorf("invoker deploy: %d %s %q, want 403 naming the role needed", a.status, a.code, a.msg)
	}
	if a := n.deployAs(t, dev, "fn", ""); a.status != 201 {
		t.Fatalf("developer deploy: %d %s", a.status, a.body)
	}
	if a := n.doAs(t, inv, "POST", "/fn/team/fn/hi", "", strings.NewReader("x")); a.status != 201 {
		t.Errorf("invoker invoke: %d %s, want 201", a.status, a.body)
	}
	if a := n.doAs(t, "", "POST", "/fn/team/fn/hi", "", nil); a.status != 401 {
		t.Errorf("invoke without a key: %d, want 401", a.status)
	}
	tests := []struct {
		key, name, method, path, body string
		status                        int
	}{
		{dev, "developer creates a key", "POST", "/v1/keys", `{"role":"invoker"}`, 403},
		{dev, "developer sets a secret", "PUT", "/v1/secrets/X", `{"value":"v"}`, 403},
		{inv, "invoker lists functions", "GET", "/v1/functions", "", 403},
		{owner, "owner creates an admin key", "POST", "/v1/keys", `{"role":"admin"}`, 403},
		{defaultOwner, "default's owner revokes an admin key", "DELETE", "/v1/keys/" + adminID, "", 403},
		{defaultOwner, "default's owner reads an admin key", "GET", "/v1/keys/" + adminID, "", 403},
		{owner, "owner creates a tenant", "POST", "/v1/tenants", `{"name":"x"}`, 403},
		{owner, "owner reads every audit log", "GET", "/v1/audit?all=true", "", 403},
		{owner, "owner creates an invoker key", "POST", "/v1/keys", `{"role":"invoker"}`, 201},
		{owner, "owner sets a secret", "PUT", "/v1/secrets/X", `{"value":"v"}`, 200},
		{owner, "owner creates a key with a bad ttl", "POST", "/v1/keys", `{"role":"invoker","ttl":"soon"}`, 400},
		{owner, "owner creates a key with an unknown field", "POST", "/v1/keys", `{"role":"invoker","tenant":"default"}`, 400},
		{owner, "owner sends malformed JSON", "POST", "/v1/keys", `{"role":`, 400},
		{owner, "owner sets an oversized secret", "PUT", "/v1/secrets/BIG", `{"value":"` + strings.Repeat("a", 200<<10) + `"}`, 413},
		{owner, "owner sets a badly named secret", "PUT", "/v1/secrets/1BAD", `{"value":"v"}`, 400},
		{owner, "owner deletes a missing secret", "DELETE", "/v1/secrets/NOPE", "", 404},
		{owner, "wrong method on keys", "PATCH", "/v1/keys", "", 405},
		{n.key, "admin creates a tenant with a bad name", "POST", "/v1/tenants", `{"name":"Bad Name"}`, 400},
		{n.key, "admin creates a tenant twice", "POST", "/v1/tenants", `{"name":"team"}`, 409},
		{n.key, "admin deletes a tenant with functions", "DELETE", "/v1/tenants/team", "", 409},
		{n.key, "admin sets negative quotas", "PUT", "/v1/tenants/team", `{"quotas":{"max_functions":-1}}`, 400},
		{n.key, "admin sets quotas without quotas", "PUT", "/v1/tenants/team", `{}`, 400},
		{n.key, "admin sets quotas to null", "PUT", "/v1/tenants/team", `null`, 400},
		{n.key, "admin deletes the default tenant", "DELETE", "/v1/tenants/default", "", 400},
	}
	for _, tt := range tests {
		var a answer
		if tt.body != "" {
			a = n.doAs(t, tt.key, tt.method, tt.path, "application/json", strings.NewReader(tt.body))
		} else {
			a = n.doAs(t, tt.key, tt.method, tt.path, "", nil)
		}
		if a.status != tt.status {
			t.Errorf("%s: %d %s, want %d", tt.name, a.status, a.body, tt.status)
		}
	}
	if a := n.doAs(t, admin, "GET", "/v1/whoami", "", nil); a.status != 200 {
		t.Errorf("the admin key after default's owner tried to revoke it: %d %s", a.status, a.body)
	}
}

// TestPublicOnlyWhileLatestIsPublic: a function made private by a new
// version does not stay public through its older versions.
func TestPublicOnlyWhileLatestIsPublic(t *testing.T) {
	n := startNode(t, t.TempDir())
	if a := n.deployAs(t, n.key, "pub", `"auth":"none"`); a.status != 201 {
		t.Fatalf("deploy public: %d %s", a.status, a.body)
	}
	if a := n.doAs(t, "", "POST", "/fn/default/pub@1", "", strings.NewReader("x")); a.status >= 400 {
		t.Fatalf("public version 1 without a key: %d %s", a.status, a.body)
	}
	if a := n.deployAs(t, n.key, "pub", `"auth":"key"`); a.status != 201 {
		t.Fatalf("deploy private: %d %s", a.status, a.body)
	}
	for _, path := range []string{"/fn/default/pub", "/fn/default/pub@1", "/fn/default/pub@2"} {
		if a := n.doAs(t, "", "POST", path, "", strings.NewReader("x")); a.status != 401 {
			t.Errorf("%s without a key after the function went private: %d %s, want 401", path, a.status, a.body)
		}
	}
	if a := n.do(t, "POST", "/fn/default/pub@1", "", strings.NewReader("x")); a.status >= 400 {
		t.Errorf("version 1 with a key: %d %s", a.status, a.body)
	}
}

// TestFunctionQuotaUnderParallelDeploys: deploys of new names at once
// cannot all pass the tenant's function quota.
func TestFunctionQuotaUnderParallelDeploys(t *testing.T) {
	n := startNode(t, t.TempDir())
	n.createTenant(t, "small", `{"max_functions":1}`)
	_, dev := n.createKey(t, "small", "developer")
	codes := make(chan int, 5)
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes <- n.deployAs(t, dev, fmt.Sprintf("f%d", i), "").status
		}()
	}
	wg.Wait()
	close(codes)
	created := 0
	for c := range codes {
		switch c {
		case 201:
			created++
		case 429:
		default:
			t.Errorf("a deploy answered %d, want 201 or 429", c)
		}
	}
	if created != 1 {
		t.Errorf("%d of 5 parallel deploys of new functions were created under a quota of 1", created)
	}
}

// TestPublicErrorsKeepStderr: a public function's failure shows its
// stderr to a caller with the tenant's key, not to anyone; and Gust's
// Server-Timing joins the one the function sent.
func TestPublicErrorsKeepStderr(t *testing.T) {
	n := startNode(t, t.TempDir())
	if a := n.deployAs(t, n.key, "pub", `"auth":"none"`); a.status != 201 {
		t.Fatalf("deploy: %d %s", a.status, a.body)
	}
	anon := n.doAs(t, "", "GET", "/fn/default/pub/panic", "", nil)
	keyed := n.do(t, "GET", "/fn/default/pub/panic", "", nil)
	if anon.status != 502 || keyed.status != 502 {
		t.Fatalf("a panic: %d and %d, want 502", anon.status, keyed.status)
	}
	if strings.Contains(anon.body, "stderr") || !strings.Contains(keyed.body, `"stderr"`) {
		t.Errorf("stderr in the error: without a key %s; with one %s; want it only with the key", anon.body, keyed.body)
	}
	a := n.doAs(t, "", "POST", "/fn/default/pub/raw", "", strings.NewReader("Server-Timing: db;dur=5\r\n\r\nok"))
	if got := strings.Join(a.header.Values("Server-Timing"), ", "); !strings.Contains(got, "db;dur=5") || !strings.Contains(got, "fn;dur=") {
		t.Errorf("Server-Timing = %q, want the function's and Gust's", got)
	}
}

// TestSlowBodyHoldsNoQuota: a request whose body arrives slowly does not
// take its tenant's concurrency while it waits for it.
func TestSlowBodyHoldsNoQuota(t *testing.T) {
	n := startNode(t, t.TempDir())
	n.createTenant(t, "tight", `{"max_concurrency":1}`)
	_, dev := n.createKey(t, "tight", "developer")
	if a := n.deployAs(t, dev, "fn", ""); a.status != 201 {
		t.Fatalf("deploy: %d %s", a.status, a.body)
	}
	c, err := net.Dial("tcp", strings.TrimPrefix(n.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /fn/tight/fn/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 1000\r\n\r\nslow", dev)
	time.Sleep(200 * time.Millisecond) // the slow request is in, waiting for its body
	if a := n.doAs(t, dev, "POST", "/fn/tight/fn/x", "", strings.NewReader("x")); a.status >= 400 {
		t.Errorf("a request beside one whose body is slow: %d %s, want it served", a.status, a.body)
	}
}

// TestBadKeys: a missing, malformed, forged, revoked or expired key gets 401
// with the same message, whichever part was wrong.
func TestBadKeys(t *testing.T) {
	n := startNode(t, t.TempDir())
	n.mustGust(t, "deploy", guestPath, "--name", "guest")
	revokedID, revoked := n.createKey(t, "default", "developer")
	if a := n.do(t, "DELETE", "/v1/keys/"+revokedID, "", nil); a.status != 200 {
		t.Fatalf("revoke: %d %s", a.status, a.body)
	}
	expiring := n.do(t, "POST", "/v1/keys", "application/json", strings.NewReader(`{"role":"developer","ttl":"1ms"}`))
	var created struct{ Token string }
	json.Unmarshal([]byte(expiring.body), &created)
	// A local round trip takes less than the key's millisecond of life.
	waitFor(t, func() bool { return n.doAs(t, created.Token, "GET", "/v1/whoami", "", nil).status == 401 })
	forged := n.key[:len(n.key)-4] + "aaaa"
	if forged == n.key {
		forged = n.key[:len(n.key)-4] + "bbbb"
	}
	headers := map[string]string{
		"missing":        "",
		"empty bearer":   "Bearer ",
		"basic":          "Basic " + n.key,
		"malformed":      "Bearer not-a-key",
		"unknown id":     "Bearer gust_aaaaaaaaaaaaaaaa_" + strings.Repeat("a", 52),
		"forged secret":  "Bearer " + forged,
		"revoked":        "Bearer " + revoked,
		"expired":        "Bearer " + created.Token,
		"two keys":       "Bearer " + n.key + " " + n.key,
		"trailing junk":  "Bearer " + n.key + "x",
		"uppercase copy": "Bearer " + strings.ToUpper(n.key),
	}
	var first string
	for name, h := range headers {
		for _, path := range []string{"/v1/functions", "/fn/default/guest", "/fn/default/nope"} {
			req, _ := http.NewRequest("GET", n.url+path, nil)
			if h != "" {
				req.Header.Set("Authorization", h)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var body bytes.Buffer
			body.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s key on %s: %d %s, want 401 with WWW-Authenticate", name, path, resp.StatusCode, body.String())
			}
			if first == "" {
				first = body.String()
			} else if body.String() != first {
				t.Errorf("%s key on %s answered %q, others %q: the answer must not say what was wrong", name, path, body.String(), first)
			}
		}
	}
}

// TestSecretsNeverLeak sets, uses and rotates a secret through the CLI and
// the API and checks that no log line and no response holds its value.
func TestSecretsNeverLeak(t *testing.T) {
	n := startNode(t, t.TempDir())
	values := []string{"first-s3cret-value", "rotated-s3cret-value"}
	var outputs []string
	record := func(s ...string) { outputs = append(outputs, s...) }
	for i, v := range values {
		// From stdin, then from a file, each with the newline echo writes.
		code, out, errOut := n.gust(t, v+"\n", "secret", "set", "DB_PASSWORD")
		if i == 1 {
			file := filepath.Join(t.TempDir(), "value")
			os.WriteFile(file, []byte(v+"\n"), 0o600)
			code, out, errOut = n.gust(t, "", "secret", "set", "DB_PASSWORD", "--from-file", file)
		}
		record(out, errOut)
		if code != 0 {
			t.Fatalf("secret set: %d %s %s", code, out, errOut)
		}
		if i == 0 {
			a := n.deployAs(t, n.key, "uses", `"secrets":["DB_PASSWORD"]`)
			record(a.body)
			if a.status != 201 {
				t.Fatalf("deploy: %d %s", a.status, a.body)
			}
		}
		a := n.do(t, "GET", "/fn/default/uses/secret", "", nil)
		record(a.body)
		if want := fmt.Sprintf("%x\n", sha256.Sum256([]byte(v))); a.body != want {
			t.Errorf("function saw a secret hashing to %q, want %q (the value set)", a.body, want)
		}
		for _, args := range [][]string{{"secret", "ls"}, {"describe", "uses"}, {"ls"}, {"audit"}} {
			_, out, errOut := n.gust(t, "", args...)
			record(out, errOut)
		}
		for _, path := range []string{"/v1/secrets", "/v1/functions/uses", "/v1/audit"} {
			record(n.do(t, "GET", path, "", nil).body)
		}
	}
	// A value an environment variable cannot carry is refused, not changed.
	if code, _, errOut := n.gust(t, "ab\xff\xfecd", "secret", "set", "BIN"); code == 0 || !strings.Contains(errOut, "not UTF-8") {
		t.Errorf("secret set with bytes that are not UTF-8: %d %q, want an error saying so", code, errOut)
	}
	if a := n.do(t, "PUT", "/v1/secrets/NUL", "application/json", strings.NewReader(`{"value":"a\u0000b"}`)); a.status != 400 || !strings.Contains(a.msg, "NUL") {
		t.Errorf("a secret with a NUL byte: %d %q, want 400 saying why", a.status, a.msg)
	}
	// Bodies that once changed a secret: no value (which emptied it),
	// bytes that are not UTF-8 (replaced), data after the object (ignored).
	for _, body := range []string{`{}`, `null`, `{"value":null}`, "{\"value\":\"ab\xffcd\"}", `{"value":"x"}}]`, `[{"value":"x"}]`} {
		if a := n.do(t, "PUT", "/v1/secrets/DB_PASSWORD", "application/json", strings.NewReader(body)); a.status != 400 || a.msg == "" {
			t.Errorf("PUT secret %q: %d %q, want 400 saying what is wrong", body, a.status, a.msg)
		}
	}
	if a := n.do(t, "GET", "/fn/default/uses/secret", "", nil); a.body != fmt.Sprintf("%x\n", sha256.Sum256([]byte(values[len(values)-1]))) {
		t.Errorf("after the refused bodies, the function sees a secret hashing to %q, want the last value set", a.body)
	}
	// The largest secret fits however its client escapes it: Go's JSON
	// writes & as 6 bytes.
	if code, _, errOut := n.gust(t, strings.Repeat("&", tenant.MaxSecretBytes), "secret", "set", "AMP"); code != 0 {
		t.Errorf("secret set of %d ampersands: %d %q, want it set", tenant.MaxSecretBytes, code, errOut)
	}
	code, out, errOut := n.gust(t, "", "secret", "rm", "DB_PASSWORD")
	record(out, errOut)
	if code != 0 {
		t.Fatalf("secret rm: %d %s", code, errOut)
	}
	a := n.do(t, "GET", "/fn/default/uses/secret", "", nil)
	record(a.body)
	if a.status != 500 || a.code != "function_misconfigured" || !strings.Contains(a.msg, "DB_PASSWORD") {
		t.Errorf("invoke after the secret was removed: %d %s %q, want 500 function_misconfigured naming it", a.status, a.code, a.msg)
	}
	if a := n.deployAs(t, n.key, "other", `"secrets":["MISSING"]`); a.status != 400 || !strings.Contains(a.msg, "MISSING") {
		t.Errorf("deploy using a missing secret: %d %q, want 400 naming it", a.status, a.msg)
	}
	record(n.logs.String(), n.announce.String())
	for _, v := range values {
		for _, o := range outputs {
			if strings.Contains(o, v) {
				t.Errorf("secret value %q appears in output:\n%s", v, o)
			}
		}
	}
}

func TestQuotas(t *testing.T) {
	n := startNode(t, t.TempDir())
	n.createTenant(t, "small", `{"max_functions":1,"max_concurrency":1,"rate_per_second":0.5,"burst":3}`)
	_, dev := n.createKey(t, "small", "developer")
	if a := n.deployAs(t, dev, "one", `"timeout":"5s"`); a.status != 201 {
		t.Fatalf("first deploy: %d %s", a.status, a.body)
	}
	if a := n.deployAs(t, dev, "two", ""); a.status != 429 || a.code != "quota_exceeded" || !strings.Contains(a.msg, "functions quota") {
		t.Errorf("second function: %d %s %q, want 429 naming the functions quota", a.status, a.code, a.msg)
	}
	if a := n.deployAs(t, dev, "one", `"timeout":"6s"`); a.status != 201 {
		t.Errorf("new version of the existing function: %d %s, want 201", a.status, a.body)
	}

	// Concurrency: one slow invocation holds the only slot.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		n.doAs(t, dev, "GET", "/fn/small/one/slow", "", nil)
	}()
	waitFor(t, func() bool { return strings.Contains(n.logs.String(), "path=/slow") })
	a := n.doAs(t, dev, "GET", "/fn/small/one/fast", "", nil)
	if a.status != 429 || a.code != "quota_exceeded" || !strings.Contains(a.msg, "concurrency") || a.header.Get("Retry-After") == "" {
		t.Errorf("second concurrent invocation: %d %s %q Retry-After %q, want 429 naming concurrency with Retry-After", a.status, a.code, a.msg, a.header.Get("Retry-After"))
	}
	wg.Wait()

	// Rate: the burst of 3 is spent (the slow call, the refused one does
	// not count), then refused until tokens come back at 0.5/s.
	var last answer
	for i := 0; i < 4; i++ {
		last = n.doAs(t, dev, "GET", "/fn/small/one/x", "", nil)
		if last.status == 429 {
			break
		}
	}
	if last.status != 429 || !strings.Contains(last.msg, "rate") || last.header.Get("Retry-After") == "" {
		t.Errorf("past the burst: %d %q Retry-After %q, want 429 naming the rate with Retry-After", last.status, last.msg, last.header.Get("Retry-After"))
	}
	// Another tenant is not affected.
	if a := n.do(t, "GET", "/fn/default/nothing", "", nil); a.status != 404 {
		t.Errorf("default tenant while small is over quota: %d, want 404", a.status)
	}
}

func TestMemoryQuota(t *testing.T) {
	n := startNode(t, t.TempDir())
	n.createTenant(t, "mem", `{"max_memory_mb":48}`)
	_, dev := n.createKey(t, "mem", "developer")
	if a := n.deployAs(t, dev, "fn", `"memory_mb":32`); a.status != 201 {
		t.Fatalf("deploy: %d %s", a.status, a.body)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		n.doAs(t, dev, "GET", "/fn/mem/fn/slow", "", nil)
	}()
	waitFor(t, func() bool { return strings.Contains(n.logs.String(), "path=/slow") })
	a := n.doAs(t, dev, "GET", "/fn/mem/fn/fast", "", nil)
	if a.status != 429 || !strings.Contains(a.msg, "memory quota") {
		t.Errorf("second 32 MiB instance under a 48 MiB quota: %d %q, want 429 naming the memory quota", a.status, a.msg)
	}
	wg.Wait()
	if a := n.doAs(t, dev, "GET", "/fn/mem/fn/fast", "", nil); a.status != 201 {
		t.Errorf("after the first finished: %d %s, want 201", a.status, a.body)
	}
}

// TestAuditAndCLIAdministration drives tenants, keys, login and audit
// through the CLI, as an operator would.
func TestAuditAndCLIAdministration(t *testing.T) {
	n := startNode(t, t.TempDir())
	if !strings.Contains(n.announce.String(), n.key) {
		t.Errorf("the first start did not announce the admin key: %q", n.announce.String())
	}
	n.mustGust(t, "tenant", "create", "shop", "--max-functions", "5")
	if out := n.mustGust(t, "tenant", "ls"); !strings.Contains(out, "shop") {
		t.Errorf("tenant ls: %q", out)
	}
	// set changes what it is given and keeps the rest.
	if out := n.mustGust(t, "tenant", "set", "shop", "--rate", "0.5"); !strings.Contains(out, "functions 5,") || !strings.Contains(out, "rate 0.5/s") {
		t.Errorf("tenant set --rate 0.5 after --max-functions 5: %q, want both", out)
	}
	if out := n.mustGust(t, "tenant", "set", "shop", "--rate", "0"); !strings.Contains(out, "functions 5,") || !strings.Contains(out, "rate unlimited") {
		t.Errorf("tenant set --rate 0: %q", out)
	}
	code, token, errOut := n.gust(t, "", "key", "create", "--role", "owner", "--tenant", "shop", "--name", "ci")
	if code != 0 || !strings.HasPrefix(token, "gust_") {
		t.Fatalf("key create: %d %q %q", code, token, errOut)
	}
	token = strings.TrimSpace(token)
	config := t.TempDir() + "/config.json"
	t.Setenv("GUST_CONFIG", config)
	var out, stderr bytes.Buffer
	if code := Run(t.Context(), []string{"login", "--server", n.url}, strings.NewReader(token+"\n"), &out, &stderr); code != 0 {
		t.Fatalf("login: %d %s", code, stderr.String())
	}
	if info, err := os.Stat(config); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("config file: %v, mode %v, want 0600", err, info.Mode().Perm())
	}
	// Without --server or --key, the saved login is used.
	out.Reset()
	if code := Run(t.Context(), []string{"whoami"}, nil, &out, &stderr); code != 0 || !strings.Contains(out.String(), "tenant shop, role owner") {
		t.Errorf("whoami after login: %d %q %q", code, out.String(), stderr.String())
	}
	out.Reset()
	if code := Run(t.Context(), []string{"deploy", guestPath, "--name", "cart"}, nil, &out, &stderr); code != 0 {
		t.Fatalf("deploy as shop's owner: %d %s", code, stderr.String())
	}
	out.Reset()
	if code := Run(t.Context(), []string{"invoke", "cart", "--path", "/hi"}, nil, &out, &stderr); code != 0 || out.String() != "GET /hi " {
		t.Errorf("invoke as shop's owner: %d %q %q", code, out.String(), stderr.String())
	}
	out.Reset()
	if code := Run(t.Context(), []string{"audit"}, nil, &out, &stderr); code != 0 || !strings.Contains(out.String(), "PUT /v1/functions/{name}") || !strings.Contains(out.String(), "/v1/functions/cart") {
		t.Errorf("audit as shop's owner: %d %q %q", code, out.String(), stderr.String())
	}
	if strings.Contains(out.String(), "/v1/tenants") {
		t.Errorf("shop's audit log shows the admin's tenant changes:\n%s", out.String())
	}
	if out := n.mustGust(t, "audit", "--all"); !strings.Contains(out, "POST /v1/tenants") || !strings.Contains(out, "cart") {
		t.Errorf("admin's audit --all: %q", out)
	}
	ids := n.mustGust(t, "key", "ls", "--tenant", "shop")
	id := strings.Fields(strings.Split(ids, "\n")[1])[0]
	n.mustGust(t, "key", "revoke", id)
	out.Reset()
	stderr.Reset()
	if code := Run(t.Context(), []string{"ls"}, nil, &out, &stderr); code != 1 || !strings.Contains(stderr.String(), "401") {
		t.Errorf("ls with the revoked key: %d %q, want 1 and 401", code, stderr.String())
	}
	if out := n.mustGust(t, "key", "ls", "--tenant", "shop"); !strings.Contains(out, "revoked") {
		t.Errorf("key ls after revoke: %q", out)
	}
}

// TestSlowDeployChecksItsKeyAgain: a deploy whose upload outlasts its key
// (revoked meanwhile) or its tenant (deleted meanwhile) is refused when the
// upload ends, and leaves no function behind: a departing developer could
// finish a deploy begun before the revocation, and a function could land
// in a deleted tenant, served there and inherited by a new tenant of the
// same name.
func TestSlowDeployChecksItsKeyAgain(t *testing.T) {
	n := startNode(t, t.TempDir())
	artifact := must(os.ReadFile(guestPath))
	slowDeploy := func(key, name string, meanwhile func()) int {
		t.Helper()
		finish, status := n.startSlowDeploy(t, key, name, artifact)
		meanwhile()
		finish()
		return <-status
	}

	n.createTenant(t, "leaving", "")
	id, dev := n.createKey(t, "leaving", "developer")
	got := slowDeploy(dev, "backdoor", func() {
		if a := n.do(t, "DELETE", "/v1/keys/"+id+"?tenant=leaving", "", nil); a.status != 204 && a.status != 200 {
			t.Fatalf("revoke: %d %s", a.status, a.body)
		}
	})
	if got != 401 {
		t.Errorf("a deploy whose key was revoked during its upload: %d, want 401", got)
	}
	if a := n.do(t, "GET", "/v1/functions/backdoor?tenant=leaving", "", nil); a.status != 404 {
		t.Errorf("the function of the refused deploy: %d %s, want 404", a.status, a.body)
	}

	n.createTenant(t, "doomed", "")
	_, dev = n.createKey(t, "doomed", "developer")
	got = slowDeploy(dev, "planted", func() {
		if a := n.do(t, "DELETE", "/v1/tenants/doomed", "", nil); a.status != 204 {
			t.Fatalf("delete tenant: %d %s", a.status, a.body)
		}
	})
	if got < 400 {
		t.Errorf("a deploy whose tenant was deleted during its upload: %d, want it refused", got)
	}
	n.createTenant(t, "doomed", "")
	if a := n.do(t, "GET", "/v1/functions?tenant=doomed", "", nil); a.status != 200 || strings.Contains(a.body, "planted") {
		t.Errorf("the new tenant doomed's functions: %d %s, want none inherited", a.status, a.body)
	}
	if a := n.do(t, "GET", "/fn/doomed/planted", "", nil); a.status != 404 {
		t.Errorf("invoking the refused deploy's function: %d, want 404", a.status)
	}
}

// startSlowDeploy sends the first half of a deploy of artifact as name
// with key; finish sends the rest, and the answer's status comes on status.
func (n *node) startSlowDeploy(t *testing.T, key, name string, artifact []byte) (finish func(), status <-chan int) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("spec", `{"auth":"none"}`)
	w, _ := mw.CreateFormFile("artifact", "f.wasm")
	w.Write(artifact)
	mw.Close()
	body := buf.Bytes()
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("PUT", n.url+"/v1/functions/"+name, pr)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.ContentLength = int64(len(body))
	answered := make(chan int, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			answered <- -1
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	pw.Write(body[:len(body)/2])
	return func() {
		pw.Write(body[len(body)/2:])
		pw.Close()
	}, answered
}

// TestDeploysInMemoryAreBounded: deploys, which hold their artifact in
// memory, are read a few at a time (twenty at once took the server to
// 4.5 GB); the next waits for a slot.
func TestDeploysInMemoryAreBounded(t *testing.T) {
	saved := api.UploadWait
	api.UploadWait = 2 * time.Second
	defer func() { api.UploadWait = saved }()
	n := startNode(t, t.TempDir())
	artifact := must(os.ReadFile(guestPath))
	// Compiled once: a deploy of it takes milliseconds from now on.
	if a := n.deployRaw(t, "compiled", "{}", artifact); a.status != 201 {
		t.Fatalf("deploy: %d %s", a.status, a.body)
	}
	// A tenant holds two slots at most: the four are two tenants'.
	n.createTenant(t, "other", "")
	var finishes []func()
	var statuses []<-chan int
	for i, name := range []string{"slow0", "slow1", "slow2?tenant=other", "slow3?tenant=other"} {
		finish, status := n.startSlowDeploy(t, n.key, name, artifact)
		finishes, statuses = append(finishes, finish), append(statuses, status)
		if i == 1 {
			// A third of the same tenant waits for one of its own.
			if a := n.deployRaw(t, "third", "{}", artifact); a.status != 503 || !strings.Contains(a.msg, `tenant "default" has 2 deploys`) {
				t.Errorf("a tenant's third deploy beside two uploading ones: %d %q, want 503 naming the tenant's share", a.status, a.msg)
			}
		}
	}
	time.Sleep(200 * time.Millisecond) // the four hold every slot
	next := make(chan answer, 1)
	go func() {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		mw.WriteField("spec", `{}`)
		w, _ := mw.CreateFormFile("artifact", "f.wasm")
		w.Write(artifact)
		mw.Close()
		req, _ := http.NewRequest("PUT", n.url+"/v1/functions/fifth", &buf)
		req.Header.Set("Authorization", "Bearer "+n.key)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			next <- answer{status: -1}
			return
		}
		resp.Body.Close()
		next <- answer{status: resp.StatusCode}
	}()
	select {
	case a := <-next:
		for _, finish := range finishes {
			finish()
		}
		t.Fatalf("a fifth deploy beside four uploading ones answered %d at once; want it to wait for a slot", a.status)
	case <-time.After(500 * time.Millisecond):
	}
	finishes[0]()
	if s := <-statuses[0]; s != 201 {
		t.Errorf("the first slow deploy: %d", s)
	}
	if a := <-next; a.status != 201 {
		t.Errorf("the fifth deploy, once a slot was free: %d, want 201", a.status)
	}
	for i, finish := range finishes[1:] {
		finish()
		if s := <-statuses[i+1]; s != 201 {
			t.Errorf("slow deploy %d: %d", i+1, s)
		}
	}
}

// TestSlowDeployTimesOut: a deploy whose body stops arriving is answered
// 408 once api.UploadTimeout has passed, and frees its upload slot.
func TestSlowDeployTimesOut(t *testing.T) {
	saved := api.UploadTimeout
	api.UploadTimeout = 300 * time.Millisecond
	defer func() { api.UploadTimeout = saved }()
	n := startNode(t, t.TempDir())
	artifact := must(os.ReadFile(guestPath))
	var finishes []func()
	var statuses []<-chan int
	for i := range 4 { // twice a tenant's share of the upload slots
		finish, status := n.startSlowDeploy(t, n.key, fmt.Sprintf("stalled%d", i), artifact)
		finishes, statuses = append(finishes, finish), append(statuses, status)
	}
	defer func() {
		for _, finish := range finishes {
			finish()
		}
	}()
	for i, status := range statuses {
		select {
		case s := <-status:
			if s != 408 {
				t.Errorf("stalled deploy %d: %d, want 408", i, s)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("stalled deploy %d: no answer 10 s after its body stopped", i)
		}
	}
	if a := n.deployRaw(t, "after", "{}", artifact); a.status != 201 {
		t.Errorf("a deploy after the stalled ones timed out: %d %s, want 201 (their slots freed)", a.status, a.body)
	}
}
