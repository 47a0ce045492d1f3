//go:build wasip1

package gust

import (
	"bufio"
	"io"
	"net/http"
	"net/http/cgi"
	"net/url"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"unsafe"
)

// The host's side of the ABI (docs/abi.md).

//go:wasmimport gust request_head
func hostRequestHead(buf unsafe.Pointer, capacity uint32) uint32

//go:wasmimport gust request_body_read
func hostRequestBodyRead(buf unsafe.Pointer, capacity uint32) uint32

//go:wasmimport gust response_write
func hostResponseWrite(buf unsafe.Pointer, length uint32) int32

//go:linkname mainMain main.main
func mainMain()

// Code compiled to WebAssembly allocates slowly, so the request path reuses
// what it can: the head buffer, the writer and its buffer.
var (
	handler  http.Handler
	reactor  bool
	ready    = make(chan struct{})
	headBuf  = make([]byte, 4096)
	writeBuf = bufio.NewWriterSize(hostWriter{}, 16<<10)
	writer   = &responseWriter{}
)

func serve(h http.Handler) {
	if !reactor {
		// A command module: one request, as CGI.
		if err := cgi.Serve(h); err != nil {
			panic(err)
		}
		return
	}
	handler = h
	close(ready)
	select {} // main must not return: the instance lives on
}

// gustStart runs main until it calls Serve. Gust calls it once, right after
// _initialize.
//
//go:wasmexport gust_start
func gustStart() int32 {
	reactor = true
	tuneGC()
	go func() {
		mainMain()
		// main returned without calling Serve.
		select {}
	}()
	<-ready
	return 0
}

// tuneGC sets the collector for a warm instance, unless the function's
// environment sets GOGC or GOMEMLIMIT: collect at four times the live heap
// rather than twice (a request allocates a few kilobytes and keeps little,
// and collecting is slow in WebAssembly), and harder as the heap nears
// seven eighths of the function's memory_mb, so that a growing heap is
// collected before it meets the limit that would kill the instance.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	mb, err := strconv.ParseInt(os.Getenv("GUST_MEMORY_MB"), 10, 64)
	if os.Getenv("GOMEMLIMIT") == "" && err == nil && mb > 0 {
		debug.SetMemoryLimit(mb << 20 / 8 * 7)
	}
}

// gustHandle serves the host's current request.
//
//go:wasmexport gust_handle
func gustHandle() int32 {
	req, err := readRequest()
	if err != nil {
		writeBuf.WriteString("Status: 400\r\nContent-Type: text/plain\r\n\r\nbad request: ")
		writeBuf.WriteString(err.Error())
		writeBuf.Flush()
		return 0
	}
	w := writer
	w.reset()
	handler.ServeHTTP(w, req)
	w.finish()
	return 0
}

// readRequest reads the request head from the host: lines of method, path,
// raw query, host, remote address, invocation id, then "Name: value" headers.
func readRequest() (*http.Request, error) {
	n := hostRequestHead(unsafe.Pointer(unsafe.SliceData(headBuf)), uint32(len(headBuf)))
	if int(n) > len(headBuf) {
		headBuf = make([]byte, n)
		n = hostRequestHead(unsafe.Pointer(unsafe.SliceData(headBuf)), uint32(len(headBuf)))
	}
	head := string(headBuf[:n])
	// By hand, with IndexByte alone: code compiled to WebAssembly pays for
	// every call, and strings.Cut with a separator of two bytes makes many.
	var fields [6]string
	for i := range fields {
		end := strings.IndexByte(head, '\n')
		if end < 0 {
			return nil, errBadHead
		}
		fields[i], head = head[:end], head[end+1:]
	}
	// One allocation holds the request, its URL and the values of its
	// headers, as net/http's own reader shares one array among the values:
	// allocating is what code compiled to WebAssembly pays most for.
	r := new(request)
	header := make(http.Header, len(r.values))
	values := r.values[:0]
	var length int64
	for head != "" {
		end := strings.IndexByte(head, '\n')
		if end < 0 {
			end = len(head)
		}
		line := head[:end]
		head = head[min(end+1, len(head)):]
		colon := strings.IndexByte(line, ':')
		if colon < 0 || colon+1 >= len(line) || line[colon+1] != ' ' {
			return nil, errBadHead
		}
		name, value := line[:colon], line[colon+2:]
		if name == "Content-Length" {
			length = parseLength(value)
		}
		if vs, ok := header[name]; ok {
			header[name] = append(vs, value) // vs is full: this copies
			continue
		}
		values = append(values, value)
		header[name] = values[len(values)-1 : len(values) : len(values)]
	}
	values = append(values, fields[5])
	header["X-Gust-Invocation-Id"] = values[len(values)-1 : len(values) : len(values)]
	method, rawPath, query := fields[0], fields[1], fields[2]
	path := rawPath
	if strings.IndexByte(rawPath, '%') >= 0 {
		var err error
		if path, err = url.PathUnescape(rawPath); err != nil {
			return nil, errBadHead
		}
	}
	uri := rawPath
	if query != "" {
		uri += "?" + query
	}
	var body io.ReadCloser = bodyReader{}
	if length == 0 {
		body = http.NoBody
	}
	r.url = url.URL{Path: path, RawPath: rawPath, RawQuery: query}
	r.Request = http.Request{
		Method:        method,
		URL:           &r.url,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        header,
		Body:          body,
		ContentLength: length,
		Host:          fields[3],
		RemoteAddr:    fields[4],
		RequestURI:    uri,
	}
	return &r.Request, nil
}

// parseLength reads the host's Content-Length, decimal digits, and 0 for
// anything else: by hand, since strconv.ParseInt, with its signs, bases
// and underscores, took some 3% of a request's time in the guest.
func parseLength(s string) int64 {
	if len(s) > 18 {
		return 0
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int64(c-'0')
	}
	return n
}

// request is a request, its URL and its header values, allocated
// together.
type request struct {
	http.Request
	url    url.URL
	values [8]string
}

type headError string

func (e headError) Error() string { return string(e) }

const errBadHead = headError("malformed request head from the host")

// bodyReader reads the request body from the host, chunk by chunk.
type bodyReader struct{}

func (bodyReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n := hostRequestBodyRead(unsafe.Pointer(unsafe.SliceData(p)), uint32(len(p)))
	if n == 0 {
		return 0, io.EOF
	}
	return int(n), nil
}

func (bodyReader) Close() error { return nil }

// hostWriter appends to the host's response.
type hostWriter struct{}

func (hostWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if hostResponseWrite(unsafe.Pointer(unsafe.SliceData(p)), uint32(len(p))) != 0 {
		return 0, io.ErrShortWrite
	}
	return len(p), nil
}

// responseWriter writes a CGI response: the status and headers once, then
// the body. As with net/http, the head goes out with the body's first
// bytes (or at the end), so that a Content-Type can be sniffed from them
// even after WriteHeader.
type responseWriter struct {
	header      http.Header
	status      int  // set by WriteHeader; 0 means 200
	wroteHeader bool // the head is written
	scratch     [8]byte
}

// reset readies the writer for the next request. The header map is reused:
// a handler must not use its ResponseWriter after ServeHTTP returns.
func (w *responseWriter) reset() {
	if w.header == nil {
		w.header = make(http.Header, 8)
	}
	clear(w.header)
	w.status, w.wroteHeader = 0, false
}

func (w *responseWriter) Header() http.Header { return w.header }

// WriteHeader sets the status; the first call counts. An informational
// status (1xx) is not the response's: the ABI carries one response, so it
// is dropped, as a proxy may (101 too: no protocol switch passes the ABI).
func (w *responseWriter) WriteHeader(status int) {
	if w.status != 0 || w.wroteHeader || status >= 100 && status < 200 {
		return
	}
	w.status = status
}

// head writes the status and the headers.
func (w *responseWriter) head() {
	w.wroteHeader = true
	if w.status == 0 || w.status == http.StatusOK {
		writeBuf.WriteString("Status: 200\r\n")
	} else {
		writeBuf.WriteString("Status: ")
		writeBuf.Write(strconv.AppendInt(w.scratch[:0], int64(w.status), 10))
		writeBuf.WriteString("\r\n")
	}
	typed := false
	for name, values := range w.header {
		if !validHeaderName(name) {
			continue // as net/http drops it: it could not be one line of the head
		}
		typed = typed || name == "Content-Type"
		for _, v := range values {
			writeBuf.WriteString(name)
			writeBuf.WriteString(": ")
			writeHeaderValue(v)
			writeBuf.WriteString("\r\n")
		}
	}
	if !typed {
		writeBuf.WriteString("Content-Type: text/plain; charset=utf-8\r\n")
	}
	writeBuf.WriteString("\r\n")
}

// validHeaderName reports whether name is an HTTP token.
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		if !tokenByte[name[i]] {
			return false
		}
	}
	return true
}

// tokenByte says which bytes an HTTP token may hold: a table, since a
// search of the separators for every byte of every header name is slow in
// WebAssembly.
var tokenByte = func() (t [256]bool) {
	for c := '!'; c < 0x7f; c++ {
		t[c] = !strings.ContainsRune(`"(),/:;<=>?@[\]{}`, c)
	}
	return t
}()

// writeHeaderValue writes v with its control bytes but tab as spaces, as
// net/http writes CR, LF and NUL: a value taken from a request must not
// add lines (a Status, a Set-Cookie, the body) to the response's head, nor
// hold a byte the host refuses (it would answer 502 and discard the
// instance).
func writeHeaderValue(v string) {
	clean := true
	for i := 0; i < len(v) && clean; i++ {
		clean = !controlByte(v[i])
	}
	if clean {
		writeBuf.WriteString(v)
		return
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if controlByte(c) {
			c = ' '
		}
		writeBuf.WriteByte(c)
	}
}

func controlByte(c byte) bool { return c < ' ' && c != '\t' || c == 0x7f }

func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.writeHead(p, "")
	}
	return writeBuf.Write(p)
}

// WriteString is io.StringWriter, so that io.WriteString copies nothing.
func (w *responseWriter) WriteString(s string) (int, error) {
	if !w.wroteHeader {
		w.writeHead(nil, s)
	}
	return writeBuf.WriteString(s)
}

// writeHead writes the head before the body's first bytes, p or else s,
// with a Content-Type sniffed from them if the handler set none.
func (w *responseWriter) writeHead(p []byte, s string) {
	if _, ok := w.header["Content-Type"]; !ok {
		if p == nil {
			p = []byte(s[:min(len(s), sniffLen)])
		}
		w.header.Set("Content-Type", http.DetectContentType(p))
	}
	w.head()
}

// sniffLen is how much of a body http.DetectContentType reads.
const sniffLen = 512

// Flush is http.Flusher: what was written so far goes to the host.
func (w *responseWriter) Flush() {
	if !w.wroteHeader {
		w.head()
	}
	writeBuf.Flush()
}

func (w *responseWriter) finish() {
	if !w.wroteHeader {
		w.head()
	}
	writeBuf.Flush()
}
