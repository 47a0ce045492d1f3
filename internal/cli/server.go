package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	httppprof "net/http/pprof"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/gust-faas/gust"
	"github.com/gust-faas/gust/internal/async"
	"github.com/gust-faas/gust/internal/build"
	"github.com/gust-faas/gust/internal/server"
	"github.com/gust-faas/gust/internal/tenant"
)

func (e *env) server(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	helpOn(fs, e.stdout, "gust server [flags]")
	addr := fs.String("addr", "127.0.0.1:8080", "HTTP listen address")
	dataDir := fs.String("data-dir", "./gust-data", "where the store and the compilation cache live")
	natsListen := fs.String("nats-listen", "", "open a NATS client port on the embedded server at host:port (default: none)")
	demo := fs.Bool("demo", false, "build and deploy the example functions at start (needs the Go toolchain)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "text or json")
	shutdownTimeout := fs.Duration("shutdown-timeout", 30*time.Second, "how long in-flight requests may finish after SIGINT or SIGTERM")
	callbackAllow := fs.String("callback-allow", "", "loopback, private or link-local networks that callbacks may reach, as CIDRs or addresses separated by commas (default: none)")
	hostNetwork := fs.Bool("allow-host-network", false, "let process functions run with network: host, on the host's network (Gust and the host's services included); by default a deploy that asks for it is refused")
	maxRecords := fs.Int64("max-invocation-records", async.DefaultMaxRecords, "how many asynchronous invocations' records, and dead letters, to keep at most: past it the oldest go first, before their 24 h (14 days for dead letters; 0: no bound)")
	if _, err := parse(fs, args, 0, "gust server [flags]"); err != nil {
		return err
	}
	if *maxRecords < 0 {
		return usagef("--max-invocation-records: %d is negative; give a number of records, or 0 for no bound", *maxRecords)
	}
	allow, err := parsePrefixes(*callbackAllow)
	if err != nil {
		return usagef("--callback-allow: %v", err)
	}
	log, err := newLogger(e, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	tuneRuntime(e.getenv)
	// The first admin key is shown on a terminal only: where stderr is a
	// log (systemd's, a container's), the key would stay in it; the log
	// says which file holds it.
	var announce io.Writer
	if isTerminal(e.stderr) {
		announce = e.stderr
	}
	srv, err := server.New(server.Config{
		DataDir: *dataDir, Addr: *addr, NATSListen: *natsListen,
		MasterKey: e.getenv("GUST_MASTER_KEY"), Announce: announce, Logger: log, CallbackAllow: allow,
		MaxInvocationRecords: *maxRecords, AllowHostNetwork: *hostNetwork,
	})
	if err != nil {
		return err
	}
	if path := e.getenv("GUST_CPUPROFILE"); path != "" {
		stop, err := startCPUProfile(path)
		if err != nil {
			return err
		}
		defer stop()
	}
	if addr := e.getenv("GUST_PPROF_ADDR"); addr != "" {
		stop, err := servePprof(addr, log)
		if err != nil {
			return err
		}
		defer stop()
	}
	if err := srv.Start(ctx); err != nil {
		return err
	}
	if *demo {
		if err := deployDemo(ctx, srv, log); err != nil {
			log.Error("demo functions were not deployed", "err", err)
		}
	}
	<-ctx.Done()
	log.Info("shutting down: finishing requests in flight", "timeout", *shutdownTimeout)
	stopCtx, cancel := context.WithTimeout(context.Background(), *shutdownTimeout)
	defer cancel()
	return srv.Stop(stopCtx)
}

// parsePrefixes parses networks separated by commas: CIDRs, or addresses
// standing for themselves alone.
func parsePrefixes(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if p, err := netip.ParsePrefix(item); err == nil {
			out = append(out, p.Masked())
			continue
		}
		ip, err := netip.ParseAddr(item)
		if err != nil {
			return nil, fmt.Errorf("%q is neither a network (10.0.0.0/8) nor an address", item)
		}
		out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
	}
	return out, nil
}

func newLogger(e *env, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usagef("--log-level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(lazyAttrs{h: slog.NewTextHandler(e.stderr, opts)}), nil
	case "json":
		return slog.New(lazyAttrs{h: slog.NewJSONHandler(e.stderr, opts)}), nil
	}
	return nil, usagef("--log-format %q: use text or json", format)
}

// deployDemo builds the embedded examples and deploys them to the default
// tenant.
func deployDemo(ctx context.Context, srv *server.Server, log *slog.Logger) error {
	for _, name := range gust.Examples {
		log.Info("demo: building example function", "function", name)
		fn, err := build.FS(ctx, "examples/"+name)
		if err != nil {
			return err
		}
		t, _ := srv.Tenants().Tenant(tenant.Default)
		res, err := srv.Registry().Deploy(ctx, tenant.Default, t.ID, fn.Spec, fn.Artifact)
		if err != nil {
			return fmt.Errorf("deploy %s: %w", name, err)
		}
		log.Info("demo: deployed", "function", name, "version", res.Version.Number,
			"try", fmt.Sprintf("curl -d world http://%s/fn/%s/%s", srv.Addr(), tenant.Default, name))
	}
	return nil
}

// tuneRuntime sets the server's GOGC and GOMAXPROCS, each unless the
// environment sets it.
func tuneRuntime(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(serverGCPercent)
	}
	if getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(serverProcsPerCPU * cpus)
	}
}

// serverGCPercent is the server's GOGC unless the environment sets one. The
// request path allocates a few kilobytes per request and keeps little, so
// the default of 100 runs a collection many times a second under load; at
// 200 the warm path served some 8% more requests per second on two cores.
// A collection's mark phase also holds up what runs meanwhile: requests
// slowed down in bursts, a few times a second, at 5,000 asynchronous
// invocations a second. At 400 there were a third fewer bursts and the
// 202's p99 was some 8% lower, for a heap that may grow to five times
// what is live (some 40 MB under that load) instead of three.
const serverGCPercent = 400

// serverProcsPerCPU is how many goroutines the server runs at once per CPU
// it may use (GOMAXPROCS), unless the environment sets GOMAXPROCS. With one
// per CPU, the Go scheduler looks for network input only when a CPU runs
// out of runnable goroutines, or every 10 ms: under load, with the
// embedded NATS server's goroutines handing each other work and
// WebAssembly that the scheduler cannot preempt, a request that arrived
// waited for it. With two per CPU, on two cores, the p99 of a warm request
// at 32 connections fell from about 30 ms to 12 ms, at the same
// throughput, and that of a 202 at 5,000 asynchronous invocations a second
// by a fifth; a lone request's p50 rose some 12% (RATIONALE.md).
const serverProcsPerCPU = 2

// cpus is how many CPUs the server may use: the Go runtime's own
// GOMAXPROCS at start, which counts a cgroup's CPU limit. (Setting
// GOMAXPROCS stops the runtime from following later changes of that
// limit.)
var cpus = runtime.GOMAXPROCS(0)

// startCPUProfile writes a CPU profile of the server to path until stop is
// called: GUST_CPUPROFILE=cpu.out gust server, for bench/ and pprof.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// servePprof serves net/http/pprof on addr, a listener of its own that the
// API and functions never share: GUST_PPROF_ADDR=127.0.0.1:6060 gust
// server, then go tool pprof http://127.0.0.1:6060/debug/pprof/profile.
func servePprof(addr string, log *slog.Logger) (stop func(), err error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("GUST_PPROF_ADDR: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", httppprof.Index)
	mux.HandleFunc("/debug/pprof/profile", httppprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", httppprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	log.Warn("serving pprof: anyone who reaches this address can profile the server", "addr", l.Addr().String())
	return func() { srv.Close() }, nil
}
