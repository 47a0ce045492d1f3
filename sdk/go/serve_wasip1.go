//go:build wasip1

package gust

import (
	"bufio"
	"io"
	"net/http"
	"net/http/cgi"
	"net/url"
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
	go func() {
		mainMain()
		// main returned without calling Serve.
		select {}
	}()
	<-ready
	return 0
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
	var fields [6]string
	for i := range fields {
		line, rest, ok := strings.Cut(head, "\n")
		if !ok {
			return nil, errBadHead
		}
		fields[i], head = line, rest
	}
	header := make(http.Header, strings.Count(head, "\n")+1)
	for head != "" {
		line, rest, _ := strings.Cut(head, "\n")
		head = rest
		name, value, ok := strings.Cut(line, ": ")
		if !ok {
			return nil, errBadHead
		}
		header[name] = append(header[name], value)
	}
	header.Set("X-Gust-Invocation-Id", fields[5])
	method, rawPath, query := fields[0], fields[1], fields[2]
	path, err := url.PathUnescape(rawPath)
	if err != nil {
		return nil, errBadHead
	}
	uri := rawPath
	if query != "" {
		uri += "?" + query
	}
	length, _ := strconv.ParseInt(header.Get("Content-Length"), 10, 64)
	return &http.Request{
		Method:        method,
		URL:           &url.URL{Path: path, RawPath: rawPath, RawQuery: query},
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        header,
		Body:          bodyReader{},
		ContentLength: length,
		Host:          fields[3],
		RemoteAddr:    fields[4],
		RequestURI:    uri,
	}, nil
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
// the body.
type responseWriter struct {
	header      http.Header
	wroteHeader bool
	scratch     [8]byte
}

// reset readies the writer for the next request. The header map is reused:
// a handler must not use its ResponseWriter after ServeHTTP returns.
func (w *responseWriter) reset() {
	if w.header == nil {
		w.header = make(http.Header, 8)
	}
	clear(w.header)
	w.wroteHeader = false
}

func (w *responseWriter) Header() http.Header { return w.header }

func (w *responseWriter) WriteHeader(status int) {
	if w.wroteHeader {
		return
	}
	w.wroteHeader = true
	writeBuf.WriteString("Status: ")
	writeBuf.Write(strconv.AppendInt(w.scratch[:0], int64(status), 10))
	writeBuf.WriteString("\r\n")
	if _, ok := w.header["Content-Type"]; !ok {
		writeBuf.WriteString("Content-Type: text/plain; charset=utf-8\r\n")
	}
	for name, values := range w.header {
		for _, v := range values {
			writeBuf.WriteString(name)
			writeBuf.WriteString(": ")
			writeBuf.WriteString(v)
			writeBuf.WriteString("\r\n")
		}
	}
	writeBuf.WriteString("\r\n")
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		if _, ok := w.header["Content-Type"]; !ok {
			w.header.Set("Content-Type", http.DetectContentType(p))
		}
		w.WriteHeader(http.StatusOK)
	}
	return writeBuf.Write(p)
}

// Flush is http.Flusher: what was written so far goes to the host.
func (w *responseWriter) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	writeBuf.Flush()
}

func (w *responseWriter) finish() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	writeBuf.Flush()
}
