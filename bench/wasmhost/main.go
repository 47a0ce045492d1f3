// Command wasmhost is the wasm benchmark's reference for what any host of
// the Go SDK's modules costs: a net/http server that hands each request to
// a warm instance of the module through the ABI of docs/abi.md, with
// wazero, and does nothing else. No limits, no deadlines, no checks of the
// response beyond its status, no logs, no metering: the least that Gust
// could do in front of the same module on the same runtime.
package main

import (
	"bytes"
	"context"
	"flag"
	"log"
	"net/http"
	"os"
	"runtime"
	"strconv"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// call is one request in flight on an instance: what the ABI's imports read
// and write.
type call struct {
	head []byte
	body []byte
	out  bytes.Buffer
}

type callKey struct{}

func current(ctx context.Context) *call { return ctx.Value(callKey{}).(*call) }

// instance is a warm instance and the context its calls run in.
type instance struct {
	handle api.Function
	ctx    context.Context
	call   *call
}

func main() {
	addr := flag.String("addr", "127.0.0.1:18183", "listen address")
	module := flag.String("module", "hello.wasm", "a module built with the Go SDK")
	instances := flag.Int("instances", 2*runtime.GOMAXPROCS(0), "warm instances")
	flag.Parse()
	bin, err := os.ReadFile(*module)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	wasi_snapshot_preview1.MustInstantiate(ctx, rt)
	_, err = rt.NewHostModuleBuilder("gust").
		NewFunctionBuilder().WithFunc(func(ctx context.Context, m api.Module, buf, capacity uint32) uint32 {
		c := current(ctx)
		if len(c.head) <= int(capacity) {
			m.Memory().Write(buf, c.head)
		}
		return uint32(len(c.head))
	}).Export("request_head").
		NewFunctionBuilder().WithFunc(func(ctx context.Context, m api.Module, buf, capacity uint32) uint32 {
		c := current(ctx)
		n := min(len(c.body), int(capacity))
		m.Memory().Write(buf, c.body[:n])
		c.body = c.body[n:]
		return uint32(n)
	}).Export("request_body_read").
		NewFunctionBuilder().WithFunc(func(ctx context.Context, m api.Module, buf, length uint32) int32 {
		p, ok := m.Memory().Read(buf, length)
		if !ok {
			return -1
		}
		current(ctx).out.Write(p)
		return 0
	}).Export("response_write").
		Instantiate(ctx)
	if err != nil {
		log.Fatal(err)
	}
	compiled, err := rt.CompileModule(ctx, bin)
	if err != nil {
		log.Fatal(err)
	}
	free := make(chan *instance, *instances)
	for range *instances {
		in := &instance{call: &call{}}
		in.ctx = context.WithValue(ctx, callKey{}, in.call)
		m, err := rt.InstantiateModule(in.ctx, compiled, wazero.NewModuleConfig().WithName("").WithStartFunctions("_initialize", "gust_start"))
		if err != nil {
			log.Fatal(err)
		}
		in.handle = m.ExportedFunction("gust_handle")
		free <- in
	}
	log.Fatal(http.ListenAndServe(*addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body bytes.Buffer
		if _, err := body.ReadFrom(r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		in := <-free
		defer func() { free <- in }()
		c := in.call
		c.head = append(c.head[:0], r.Method+"\n"+r.URL.EscapedPath()+"\n"+r.URL.RawQuery+"\n"+r.Host+"\n"+r.RemoteAddr+"\nid\nContent-Length: "+strconv.Itoa(body.Len())+"\n"...)
		for k, vs := range r.Header {
			for _, v := range vs {
				c.head = append(c.head, k+": "+v+"\n"...)
			}
		}
		c.body = body.Bytes()
		c.out.Reset()
		if _, err := in.handle.Call(in.ctx); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		serveCGI(w, c.out.Bytes())
	})))
}

// serveCGI writes a CGI response: header lines, an empty line, the body.
func serveCGI(w http.ResponseWriter, out []byte) {
	status := http.StatusOK
	for {
		line, rest, ok := bytes.Cut(out, []byte("\n"))
		if !ok {
			http.Error(w, "the module's response has no end of head", http.StatusBadGateway)
			return
		}
		out = rest
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			break
		}
		name, value, _ := bytes.Cut(line, []byte(": "))
		if string(name) == "Status" {
			status, _ = strconv.Atoi(string(value))
			continue
		}
		w.Header().Add(string(name), string(value))
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	w.WriteHeader(status)
	w.Write(out)
}
