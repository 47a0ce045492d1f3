package gateway

import (
	"bufio"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gust-faas/gust/internal/httperror"
)

// TestSlowBodyTimesOut: a body that stops arriving gets 408 once
// BodyTimeout passes, instead of holding the request for ever.
func TestSlowBodyTimesOut(t *testing.T) {
	saved := BodyTimeout
	BodyTimeout = 200 * time.Millisecond
	defer func() { BodyTimeout = saved }()
	srv := httptest.NewServer(httperror.Handler(slog.New(slog.DiscardHandler), func(w http.ResponseWriter, r *http.Request) error {
		body, err := readBody(w, r, 6<<20)
		if err != nil {
			return err
		}
		_, err = w.Write(body)
		return err
	}))
	defer srv.Close()
	for _, length := range []int{100, 5 << 20} { // allocated at once, and grown as it comes
		c, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(length) + "\r\n\r\nonly this"))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("Content-Length %d with a body that stops: %v, want an answer", length, err)
		}
		if resp.StatusCode != http.StatusRequestTimeout {
			t.Errorf("Content-Length %d with a body that stops: %d, want 408", length, resp.StatusCode)
		}
	}
}
