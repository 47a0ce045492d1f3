package async

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/gust-faas/gust/internal/registry"
)

// TestCallbacksNeverHoldAWorker: callbacks to an address that accepts and
// never answers take their tenant's share of the node's callback slots,
// and past it are given up at once: delivering never waits (a worker that
// waited held its instances, and such callbacks stalled every tenant's
// invocations), and another tenant's callbacks still go out.
func TestCallbacksNeverHoldAWorker(t *testing.T) {
	s := newService(t)
	s.callbackNet = callbackNet{allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}
	s.callbackClient = s.callbackNet.client()
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			held = append(held, c) // accepted, never answered
		}
	}()
	posted := make(chan string, 1)
	answering := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		posted <- r.URL.Path
	}))
	defer answering.Close()

	start := time.Now()
	for range maxCallbacks + 20 {
		s.deliver(Job{CallbackURL: "http://" + silent.Addr().String() + "/"}, Record{ID: "x", Tenant: "t", State: Succeeded}, registry.Spec{}, s.log)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("delivering %d callbacks to an address that never answers took %v, want no wait", maxCallbacks+20, took)
	}
	s.deliver(Job{CallbackURL: answering.URL + "/u"}, Record{ID: "y", Tenant: "u", State: Succeeded}, registry.Spec{}, s.log)
	select {
	case path := <-posted:
		if path != "/u" {
			t.Errorf("posted to %s, want /u", path)
		}
	case <-time.After(10 * time.Second):
		t.Error("another tenant's callback did not go out while t's waited on an address that never answers")
	}
}
