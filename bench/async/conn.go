package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
)

// conn is one keep-alive HTTP/1.1 connection that sends a request made
// once and reads only what the benchmark needs of each response. It costs
// the client a fraction of what net/http's does (half a core at 5,000
// requests a second on two cores), which is CPU that the server under
// test would otherwise share with the load; wrk, which drives the
// synchronous benchmarks, is as lean.
type conn struct {
	addr string
	c    net.Conn
	r    *bufio.Reader
	body []byte
}

// response is what conn reads of a response.
type response struct {
	status       int
	serverTiming string
	body         []byte // valid until the next request on the conn
}

// request formats a request to rawURL with the given headers and body.
func request(method, rawURL string, header [][2]string, body string) (addr string, req []byte, err error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", nil, err
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n", method, u.RequestURI(), u.Host, len(body))
	for _, h := range header {
		fmt.Fprintf(&b, "%s: %s\r\n", h[0], h[1])
	}
	b.WriteString("\r\n")
	b.WriteString(body)
	return u.Host, b.Bytes(), nil
}

// do sends req and reads the response, dialling first if need be.
func (c *conn) do(req []byte) (response, error) {
	if c.c == nil {
		nc, err := net.Dial("tcp", c.addr)
		if err != nil {
			return response{}, err
		}
		c.c, c.r = nc, bufio.NewReaderSize(nc, 16<<10)
	}
	if _, err := c.c.Write(req); err != nil {
		c.close()
		return response{}, err
	}
	resp, err := c.read()
	if err != nil {
		c.close()
	}
	return resp, err
}

func (c *conn) close() {
	if c.c != nil {
		c.c.Close()
		c.c, c.r = nil, nil
	}
}

// read reads a response with a Content-Length (all that Gust sends to
// these requests).
func (c *conn) read() (response, error) {
	var resp response
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return resp, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.1 ")) {
		return resp, fmt.Errorf("bad status line %q", line)
	}
	if resp.status, err = strconv.Atoi(string(line[9:12])); err != nil {
		return resp, fmt.Errorf("bad status line %q", line)
	}
	length := -1
	for {
		line, err := c.r.ReadSlice('\n')
		if err != nil {
			return resp, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		name, value, _ := bytes.Cut(line, []byte(": "))
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(value)); err != nil {
				return resp, fmt.Errorf("bad Content-Length %q", value)
			}
		case bytes.EqualFold(name, []byte("Server-Timing")):
			resp.serverTiming = string(value)
		}
	}
	if length < 0 {
		return resp, fmt.Errorf("response %d without a Content-Length", resp.status)
	}
	if cap(c.body) < length {
		c.body = make([]byte, length)
	}
	resp.body = c.body[:length]
	_, err = io.ReadFull(c.r, resp.body)
	return resp, err
}
