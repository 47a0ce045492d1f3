// Package server is Gust's composition root: it builds every part of a node
// (store, runtime, pool, registry, gateway, API), starts them in dependency
// order and stops them in reverse.
package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gust-faas/gust/internal/api"
	"github.com/gust-faas/gust/internal/async"
	"github.com/gust-faas/gust/internal/audit"
	"github.com/gust-faas/gust/internal/gateway"
	"github.com/gust-faas/gust/internal/httperror"
	"github.com/gust-faas/gust/internal/pool"
	"github.com/gust-faas/gust/internal/registry"
	"github.com/gust-faas/gust/internal/runtime"
	"github.com/gust-faas/gust/internal/runtime/process"
	"github.com/gust-faas/gust/internal/runtime/wasm"
	"github.com/gust-faas/gust/internal/store"
	"github.com/gust-faas/gust/internal/tenant"
)

// Version is the server's version, reported by /v1/info.
const Version = "0.1.0-dev"

// Config configures a node. The zero value, with DataDir set, is usable.
type Config struct {
	// DataDir holds the store and the compilation cache. Required.
	DataDir string
	// Addr is the HTTP listen address; default 127.0.0.1:8080.
	Addr string
	// NATSListen opens a NATS client port on the embedded server; empty opens none.
	NATSListen string
	// MasterKey seals secrets (64 hex digits or base64 of 32 bytes). Empty
	// uses DataDir/master.key, created at the first start.
	MasterKey string
	// Announce receives, once, the admin API key created at the first start
	// (never the log). Nil discards it; it is in DataDir/admin.key as well.
	Announce io.Writer
	Logger   *slog.Logger
	// CallbackAllow are loopback, private or link-local networks that
	// callbacks (X-Callback-Url) may reach; by default they reach none.
	CallbackAllow []netip.Prefix
	// MaxInvocationRecords bounds the asynchronous invocations' records
	// kept (see async.Deps.MaxRecords); zero keeps every one for a day.
	MaxInvocationRecords int64
	// AllowHostNetwork lets process functions run with network: host.
	AllowHostNetwork bool
}

// Files in the data directory.
const (
	AdminKeyFile  = "admin.key"
	MasterKeyFile = "master.key"
)

// Server is one Gust node.
type Server struct {
	cfg Config
	log *slog.Logger

	store    *store.Store
	rt       *wasm.Runtime
	proc     *process.Runtime // nil where the process runtime is not available
	pool     *pool.Pool
	registry *registry.Registry
	tenants  *tenant.Service
	async    *async.Service
	http     *http.Server
	listener net.Listener

	dirLock     *os.File // held while the server runs
	cancelWatch context.CancelFunc
	stopAsync   context.CancelFunc // stops the async workers taking work
	served      chan error
	stopOnce    sync.Once
	stopErr     error
}

// New checks cfg and returns a Server that Start will start.
func New(cfg Config) (*Server, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("a data directory is required")
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:8080"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, log: cfg.Logger}, nil
}

// Start opens the store, catches up with the functions in it, and listens.
// It returns once the node serves requests. If it fails, what it started is
// stopped.
func (s *Server) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			s.Stop(context.Background())
		}
	}()
	if err := os.MkdirAll(s.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if s.dirLock, err = lockDataDir(s.cfg.DataDir); err != nil {
		return err
	}
	var natsToken, tokenFile string
	if s.cfg.NATSListen != "" {
		if natsToken, tokenFile, err = readOrMakeNATSToken(s.cfg.DataDir); err != nil {
			return err
		}
	}
	s.store, err = store.Open(ctx, store.Config{
		DataDir: filepath.Join(s.cfg.DataDir, "nats"),
		Listen:  s.cfg.NATSListen,
		Token:   natsToken,
		Logger:  s.log,
	})
	if err != nil {
		return err
	}
	if s.cfg.NATSListen != "" {
		s.log.Warn("the embedded NATS port is open: whoever has its token (in the file named here) reads and writes the whole store, functions, keys and sealed secrets included; keep it on a trusted network", "addr", s.cfg.NATSListen, "token_file", tokenFile)
	}
	s.rt, err = wasm.New(ctx, wasm.Config{CacheDir: filepath.Join(s.cfg.DataDir, "wasm-cache")})
	if err != nil {
		return err
	}
	artifacts, err := registry.OpenArtifacts(ctx, s.store)
	if err != nil {
		return err
	}
	// Before anything compiles: what the cache holds of artifacts deleted
	// while the server was down, or of an older wazero, goes now.
	s.pruneCompiled(ctx, artifacts, 0)
	keyFile := filepath.Join(s.cfg.DataDir, MasterKeyFile)
	_, noKeyFile := os.Stat(keyFile)
	masterKey, err := tenant.LoadMasterKey(s.cfg.MasterKey, keyFile)
	if err != nil {
		return fmt.Errorf("master key: %w", err)
	}
	sealer, err := tenant.NewSealer(masterKey)
	if err != nil {
		return fmt.Errorf("master key: %w", err)
	}
	s.tenants, err = tenant.New(ctx, tenant.Deps{Store: s.store, Sealer: sealer, Logger: s.log})
	if err != nil {
		if noKeyFile != nil && s.cfg.MasterKey == "" {
			os.Remove(keyFile) // made just now, and not the store's: no one must take it for it
		}
		return err
	}
	auditLog, err := audit.Open(ctx, s.store, s.log)
	if err != nil {
		return err
	}
	sandboxes := map[string]runtime.Sandbox{registry.RuntimeWasm: s.rt}
	unavailable := map[string]string{}
	if proc, err := process.New(ctx, process.Config{Dir: filepath.Join(s.cfg.DataDir, "bundles"), AllowHostNetwork: s.cfg.AllowHostNetwork}); err != nil {
		unavailable[registry.RuntimeProcess] = err.Error()
		s.log.Warn("the process runtime is not available; wasm functions work", "why", err)
	} else {
		sandboxes[registry.RuntimeProcess] = proc
		s.proc = proc
	}
	s.pool = pool.New(pool.Deps{Sandboxes: sandboxes, Unavailable: unavailable, Artifacts: artifacts, Secrets: s.tenants, Logger: s.log})
	s.registry, err = registry.New(ctx, registry.Deps{Store: s.store, Artifacts: artifacts, Checker: s.pool, Logger: s.log,
		MaxFunctions: func(name string) int { t, _ := s.tenants.Tenant(name); return t.Quotas.MaxFunctions }})
	if err != nil {
		return err
	}
	s.registry.OnRemove(func(registry.Function) { s.pool.Retain(s.registry.Digests()) })
	s.registry.OnChange(s.syncPool)
	watchCtx, cancel := context.WithCancel(context.Background())
	s.cancelWatch = cancel
	if err := s.registry.Start(ctx, watchCtx); err != nil {
		return err
	}
	if err := s.tenants.Start(ctx, watchCtx); err != nil {
		return err
	}
	if err := s.bootstrap(ctx); err != nil {
		return err
	}
	s.syncPool()
	go s.pool.Run(watchCtx)
	go s.sweepArtifacts(watchCtx, artifacts)
	// One limiter: a tenant's quotas count its synchronous requests and its
	// queued invocations as they run.
	limiter := tenant.NewLimiter(nil)
	s.async, err = async.New(ctx, async.Deps{Store: s.store, Functions: s.registry, Invoker: s.pool, Tenants: s.tenants, Limiter: limiter, Logger: s.log, CallbackAllow: s.cfg.CallbackAllow, MaxRecords: s.cfg.MaxInvocationRecords})
	if err != nil {
		return err
	}
	asyncCtx, stopAsync := context.WithCancel(watchCtx)
	s.stopAsync = stopAsync
	if err := s.async.Start(asyncCtx); err != nil {
		return err
	}

	mux := http.NewServeMux()
	api.New(api.Deps{Async: s.async, Registry: s.registry, Instances: s.pool, Tenants: s.tenants, Audit: auditLog, Logger: s.log, Version: Version,
		Runtimes: slices.Sorted(maps.Keys(sandboxes)), Unavailable: unavailable}).Register(mux)
	gateway.New(gateway.Deps{
		Async:     s.async,
		Functions: s.registry, Invoker: s.pool, Auth: s.tenants, Tenants: s.tenants,
		Limiter: limiter, Logger: s.log,
	}).Register(mux)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		httperror.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.Handle("GET /readyz", httperror.Handler(s.log, func(w http.ResponseWriter, r *http.Request) error {
		if !s.registry.Ready() || !s.tenants.Ready() {
			return httperror.New(http.StatusServiceUnavailable, "not_ready", "the function view has not caught up with the store")
		}
		return httperror.WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}))
	mux.Handle("/", httperror.Handler(s.log, func(w http.ResponseWriter, r *http.Request) error {
		return httperror.NotFound("nothing at %s: functions are at /fn/{tenant}/{name}, the API at /v1", r.URL.Path)
	}))

	s.listener, err = net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		// The error repeats the address: "listen tcp ADDR: bind: ...".
		if op := (*net.OpError)(nil); errors.As(err, &op) {
			err = op.Err
		}
		return fmt.Errorf("listen on %s: %w", s.cfg.Addr, err)
	}
	s.http = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    1 << 20,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.served = make(chan error, 1)
	go func() { s.served <- s.http.Serve(s.listener) }()
	s.log.Info("gust is serving", "addr", s.Addr(), "data_dir", s.cfg.DataDir)
	return nil
}

// bootstrap creates the first admin key if no node has, and announces it.
func (s *Server) bootstrap(ctx context.Context) error {
	path := filepath.Join(s.cfg.DataDir, AdminKeyFile)
	token, err := s.tenants.Bootstrap(ctx, path)
	if err != nil || token == "" {
		return err
	}
	s.log.Info("created the first admin API key", "file", path)
	if s.cfg.Announce != nil {
		fmt.Fprintf(s.cfg.Announce, "\nGust created an admin API key. It is shown only this once, and kept in\n%s (readable by you only), where gust on this machine finds it:\n\n    %s\n\nElsewhere: gust login --server <url> --key <key>\n\n", path, token)
	}
	return nil
}

// syncPool tells the pool which versions requests are routed to: those get
// their min_instances and are compiled ahead of their first request (from
// the disk cache where it can); the others drain.
func (s *Server) syncPool() {
	var active []pool.Target
	for _, f := range s.registry.All() {
		for _, v := range f.Routed() {
			active = append(active, pool.Target{Tenant: f.Tenant, Function: f.Name, Version: v})
		}
	}
	s.pool.Sync(active)
}

// sweepArtifacts deletes the artifacts that no version uses any more
// (deleted functions') every artifacts.Grace until ctx is done: one goes at
// the second sweep that finds it unused.
func (s *Server) sweepArtifacts(ctx context.Context, artifacts *registry.Artifacts) {
	t := time.NewTicker(artifacts.Grace)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !s.registry.Ready() {
			continue
		}
		deleted, err := artifacts.Sweep(ctx, s.registry.Digests, time.Now())
		if err != nil && ctx.Err() == nil {
			s.log.Warn("could not delete unused artifacts; the next sweep tries again", "err", err)
		}
		for _, d := range deleted {
			s.log.Info("deleted an artifact no version uses", "digest", d)
		}
		s.pruneCompiled(ctx, artifacts, artifacts.Grace)
	}
}

// pruneCompiled deletes the compiled code of the artifacts that are no
// longer stored (this node's sweep or another's deleted them), except what
// was compiled less than grace ago: a deploy compiles its artifact before
// it stores it.
func (s *Server) pruneCompiled(ctx context.Context, artifacts *registry.Artifacts, grace time.Duration) {
	stored, err := artifacts.Stored(ctx)
	if err != nil {
		s.log.Warn("could not list the stored artifacts; their compiled code is kept", "err", err)
		return
	}
	freed, err := s.rt.PruneCache(func(digest string) bool { return stored[digest] }, grace)
	if err != nil {
		s.log.Warn("could not delete all the compiled code no artifact uses", "err", err)
	}
	if freed > 0 {
		s.log.Info("deleted compiled code no artifact uses", "bytes", freed)
	}
}

// Addr returns the address the HTTP server listens on.
func (s *Server) Addr() string { return s.listener.Addr().String() }

// Registry returns the node's registry, for deploys made in-process.
func (s *Server) Registry() *registry.Registry { return s.registry }

// Store returns the node's store.
func (s *Server) Store() *store.Store { return s.store }

// Tenants returns the node's tenant service.
func (s *Server) Tenants() *tenant.Service { return s.tenants }

// asyncRecordWait bounds how long a stopping server waits for async
// workers to record the attempts its shutdown cut off.
const asyncRecordWait = 5 * time.Second

// Stop stops accepting requests and async work, waits for those in flight
// until ctx is done (then cuts them off), and closes the pool, runtime and
// store. It may be called more than once; later calls return the first
// one's result.
func (s *Server) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() { s.stopErr = s.stop(ctx) })
	return s.stopErr
}

func (s *Server) stop(ctx context.Context) error {
	var errs []error
	if s.stopAsync != nil {
		s.stopAsync() // no new async work while requests finish
	}
	if s.http != nil {
		if err := s.http.Shutdown(ctx); err != nil {
			s.log.Warn("requests still running at the shutdown deadline were cut off", "err", err)
			s.http.Close()
		}
		if err := <-s.served; !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
	}
	if s.cancelWatch != nil {
		s.cancelWatch() // stops the watches, the scaling loop and the async workers
	}
	if s.async != nil {
		s.async.Wait(ctx)
		s.async.Cut() // what still runs is cut off, as requests were
	}
	if s.pool != nil {
		s.pool.Close()
	}
	if s.async != nil {
		// Attempts the pool cut off are recorded as not spent, and their
		// messages given back, before the store closes: a worker that
		// could not write that left the record running, and the next
		// start counted the attempt as failed.
		recordCtx, cancel := context.WithTimeout(context.Background(), asyncRecordWait)
		s.async.Wait(recordCtx)
		cancel()
	}
	if s.proc != nil {
		s.proc.Close()
	}
	if s.rt != nil {
		errs = append(errs, s.rt.Close(context.Background()))
	}
	if s.store != nil {
		errs = append(errs, s.store.Close())
	}
	if s.dirLock != nil {
		s.dirLock.Close() // and with it the lock
	}
	if s.http != nil {
		// A start that failed said why; it did not serve, nor stop.
		s.log.Info("gust stopped")
	}
	return errors.Join(errs...)
}

// readOrMakeNATSToken returns the token that NATS clients of --nats-listen
// must give, from the data dir's nats.token, which it makes (random, 0600)
// the first time.
func readOrMakeNATSToken(dataDir string) (token, file string, err error) {
	file = filepath.Join(dataDir, "nats.token")
	if b, err := os.ReadFile(file); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), file, nil
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", file, fmt.Errorf("NATS token: %w", err)
	}
	raw := make([]byte, 32)
	rand.Read(raw)
	token = hex.EncodeToString(raw)
	if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
		return "", file, fmt.Errorf("NATS token: %w", err)
	}
	return token, file, nil
}
