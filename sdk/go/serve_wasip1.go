//go:build wasip1

package gust

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/http/cgi"
	"strconv"
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

var (
	handler  http.Handler
	reactor  bool
	ready    = make(chan struct{})
	headBuf  = make([]byte, 4096)
	writeBuf = bufio.NewWriterSize(hostWriter{}, 32<<10)
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
	w := &responseWriter{header: http.Header{}}
	handler.ServeHTTP(w, req)
	w.finish()
	return 0
}

func readRequest() (*http.Request, error) {
	n := hostRequestHead(unsafe.Pointer(unsafe.SliceData(headBuf)), uint32(len(headBuf)))
	if int(n) > len(headBuf) {
		headBuf = make([]byte, n)
		n = hostRequestHead(unsafe.Pointer(unsafe.SliceData(headBuf)), uint32(len(headBuf)))
	}
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(headBuf[:n])))
	if err != nil {
		return nil, err
	}
	req.Body = bodyReader{}
	req.RemoteAddr = req.Header.Get("X-Gust-Remote-Addr")
	return req, nil
}

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
}

func (w *responseWriter) Header() http.Header { return w.header }

func (w *responseWriter) WriteHeader(status int) {
	if w.wroteHeader {
		return
	}
	w.wroteHeader = true
	writeBuf.WriteString("Status: ")
	writeBuf.WriteString(strconv.Itoa(status))
	writeBuf.WriteString("\r\n")
	if w.header.Get("Content-Type") == "" {
		w.header.Set("Content-Type", "text/plain; charset=utf-8")
	}
	w.header.Write(writeBuf)
	writeBuf.WriteString("\r\n")
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		if w.header.Get("Content-Type") == "" {
			w.header.Set("Content-Type", http.DetectContentType(p))
		}
		w.WriteHeader(http.StatusOK)
	}
	return writeBuf.Write(p)
}

func (w *responseWriter) finish() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	writeBuf.Flush()
}
