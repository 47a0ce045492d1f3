package async

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

func TestCallbackNetCheck(t *testing.T) {
	refused := []string{"127.0.0.1", "127.9.9.9", "::1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254",
		"fe80::1", "fc00::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "100.64.0.1", "0.0.0.0", "::", "224.0.0.1", "ff02::1", "198.18.0.1",
		"64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1", "2002:7f00:1::1", "2002:a00:1::", "fec0::1", "64:ff9b:1::1"}
	allowed := []string{"8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "172.32.0.1", "100.128.0.1", "64:ff9b::808:808", "2002:808:808::1"}
	var c callbackNet
	for _, s := range refused {
		if err := c.check(netip.MustParseAddr(s)); err == nil || !strings.Contains(err.Error(), "--callback-allow") {
			t.Errorf("check(%s) = %v, want refused, naming --callback-allow", s, err)
		}
	}
	for _, s := range allowed {
		if err := c.check(netip.MustParseAddr(s)); err != nil {
			t.Errorf("check(%s) = %v, want allowed", s, err)
		}
	}
	c.allow = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	for _, s := range []string{"10.9.8.7", "::ffff:10.0.0.1", "::1"} {
		if err := c.check(netip.MustParseAddr(s)); err != nil {
			t.Errorf("check(%s) with 10.0.0.0/8 and ::1 allowed = %v, want allowed", s, err)
		}
	}
	if err := c.check(netip.MustParseAddr("127.0.0.1")); err == nil {
		t.Errorf("check(127.0.0.1) with other networks allowed = nil, want refused")
	}
}

func TestCallbackNetCheckURL(t *testing.T) {
	var c callbackNet
	for _, u := range []string{"ftp://example.com/", "http://", "example.com/x", "http://127.0.0.1:8080/", "https://[::1]/", "http://169.254.169.254/", "http://example.com/" + strings.Repeat("x", 2048)} {
		if err := c.checkURL(u); err == nil {
			t.Errorf("checkURL(%.60s) = nil, want an error", u)
		}
	}
	for _, u := range []string{"http://example.com/hook", "https://8.8.8.8:8443/x", "http://localhost:9/"} {
		if err := c.checkURL(u); err != nil {
			t.Errorf("checkURL(%s) = %v, want accepted (names are checked when dialled)", u, err)
		}
	}
}

// TestCallbackClientChecksEveryDial: the client refuses a name that
// resolves to loopback, and a redirect from an allowed address to one that
// is not.
func TestCallbackClientChecksEveryDial(t *testing.T) {
	target := listen(t, "127.0.0.2:0")
	defer target.Close()
	start := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL, http.StatusTemporaryRedirect)
	}))
	start.Listener = must(net.Listen("tcp", "127.0.0.1:0"))
	start.Start()
	defer start.Close()

	c := callbackNet{allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}
	client := c.client()
	if _, err := client.Post(target.URL, "application/json", nil); err == nil || !strings.Contains(err.Error(), "may not reach") {
		t.Errorf("post to 127.0.0.2 = %v, want refused", err)
	}
	_, port, _ := net.SplitHostPort(start.Listener.Addr().String())
	if _, err := (callbackNet{}).client().Post("http://localhost:"+port+"/", "application/json", nil); err == nil || !strings.Contains(err.Error(), "may not reach") {
		t.Errorf("post to localhost = %v, want refused", err)
	}
	if _, err := client.Post(start.URL, "application/json", nil); err == nil || !strings.Contains(err.Error(), "may not reach") {
		t.Errorf("post redirected from 127.0.0.1 to 127.0.0.2 = %v, want the redirect refused", err)
	}
	resp, err := (callbackNet{allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}).client().Post(start.URL, "application/json", nil)
	if err != nil {
		t.Fatalf("post with 127.0.0.0/8 allowed = %v, want it through", err)
	}
	resp.Body.Close()
}

func listen(t *testing.T, addr string) *httptest.Server {
	t.Helper()
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	s.Listener = must(net.Listen("tcp", addr))
	s.Start()
	return s
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
