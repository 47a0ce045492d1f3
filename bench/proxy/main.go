// Command proxy is the process benchmark's reference for what any proxy
// costs: an HTTP/1.1 reverse proxy that does nothing else. Each request
// goes out on a kept connection to the program, whole (line, Host,
// Content-Length, body), and the response comes back with its status,
// headers and body. No limits, no logs, no deadlines, no metering: the
// least that Gust's process runtime could do in front of the same program.
package main

import (
	"bufio"
	"flag"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"sync"
)

// upstream is a kept connection to the program.
type upstream struct {
	conn net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
}

// proxy passes requests to the program at to, on connections it keeps.
type proxy struct {
	to   string
	mu   sync.Mutex
	idle []*upstream
}

func (p *proxy) get() (*upstream, error) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		u := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return u, nil
	}
	p.mu.Unlock()
	c, err := net.Dial("tcp", p.to)
	if err != nil {
		return nil, err
	}
	return &upstream{conn: c, r: bufio.NewReader(c), w: bufio.NewWriter(c)}, nil
}

func (p *proxy) put(u *upstream) {
	p.mu.Lock()
	p.idle = append(p.idle, u)
	p.mu.Unlock()
}

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	u, err := p.get()
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	u.w.WriteString(r.Method + " " + r.URL.RequestURI() + " HTTP/1.1\r\nHost: " + r.Host +
		"\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n")
	u.w.Write(body)
	resp, err := func() (*http.Response, error) {
		if err := u.w.Flush(); err != nil {
			return nil, err
		}
		return http.ReadResponse(u.r, r)
	}()
	if err == nil {
		body, err = io.ReadAll(resp.Body)
	}
	if err != nil {
		u.conn.Close()
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	p.put(u)
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	w.Write(body)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:18192", "listen address")
	to := flag.String("to", "127.0.0.1:18193", "the program's address")
	flag.Parse()
	log.Fatal(http.ListenAndServe(*addr, &proxy{to: *to}))
}
