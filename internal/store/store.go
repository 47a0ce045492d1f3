// Package store runs Gust's embedded NATS JetStream server and gives the rest of
// Gust its buckets: key-value buckets for records and an object store for
// artifacts. No NATS type leaves this package.
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config says where the embedded server keeps its data and whether it listens.
type Config struct {
	// DataDir holds JetStream's files. Required.
	DataDir string
	// Listen is a host:port for NATS clients; empty (the default) opens no port:
	// Gust itself connects in-process.
	Listen string
	// Token is what every NATS client must give (nats.Token), Gust's own
	// included. Required with Listen.
	Token string
	// Logger receives the NATS server's warnings and errors. Nil discards them.
	Logger *slog.Logger
}

// Store is a running embedded NATS server and Gust's in-process connection to it.
type Store struct {
	srv *server.Server
	nc  *nats.Conn
	js  jetstream.JetStream
	log *slog.Logger
}

// ErrNotFound is returned for a key or object that does not exist.
var ErrNotFound = errors.New("not found")

// ErrConflict is returned when a key changed since the revision a caller read.
var ErrConflict = errors.New("revision conflict")

// Open starts the embedded server, waits until it accepts connections and
// connects to it in-process. Close stops both.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("store: DataDir is required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts := &server.Options{
		ServerName: "gust",
		JetStream:  true,
		StoreDir:   cfg.DataDir,
		DontListen: cfg.Listen == "",
		NoSigs:     true,
		// JetStream refuses to start with less than this much free memory
		// reserved; these are upper bounds, not allocations.
		JetStreamMaxMemory: 256 << 20,
		// Queued invocations carry their payload (up to a few MiB).
		MaxPayload: 8 << 20,
	}
	if cfg.Listen != "" {
		if cfg.Token == "" {
			return nil, fmt.Errorf("store: --nats-listen %q needs a token for its clients", cfg.Listen)
		}
		opts.Authorization = cfg.Token
		host, port, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("store: --nats-listen %q: %w", cfg.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("store: --nats-listen %q: bad port", cfg.Listen)
		}
		opts.Host, opts.Port = host, p
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	logger := natsLogger{log: log, fatal: make(chan string, 1)}
	srv.SetLoggerV2(logger, false, false, false)
	srv.Start()
	if err := waitReady(ctx, srv, logger.fatal); err != nil {
		srv.Shutdown()
		return nil, err
	}
	nc, err := nats.Connect("", nats.InProcessServer(srv), nats.Name("gust"), nats.Token(cfg.Token))
	if err != nil {
		srv.Shutdown()
		return nil, fmt.Errorf("store: connect in-process: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		srv.Shutdown()
		return nil, fmt.Errorf("store: %w", err)
	}
	if cfg.Listen != "" {
		log.Info("NATS listening", "addr", srv.ClientURL())
	}
	return &Store{srv: srv, nc: nc, js: js, log: log}, nil
}

// Close drains the connection and shuts the embedded server down, flushing
// JetStream to disk. It may be called more than once.
func (s *Store) Close() error {
	if s.nc.IsClosed() {
		return nil
	}
	err := s.nc.Drain()
	s.nc.Close()
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	return err
}

// KV opens (creating it if needed) the key-value bucket with the given name,
// keeping one revision per key.
func (s *Store) KV(ctx context.Context, bucket string) (*KV, error) {
	kv, err := s.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:  bucket,
		History: 1,
		Storage: jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("store: bucket %s: %w", bucket, err)
	}
	return &KV{kv: kv, js: s.js}, nil
}

// Publish sends data on subject, to whoever listens (core NATS: not kept).
func (s *Store) Publish(subject string, data []byte) error {
	if err := s.nc.Publish(subject, data); err != nil {
		return fmt.Errorf("store: publish to %s: %w", subject, err)
	}
	return nil
}

// Subscribe calls handle with each message on subject until unsubscribe.
func (s *Store) Subscribe(subject string, handle func(data []byte)) (unsubscribe func(), err error) {
	sub, err := s.nc.Subscribe(subject, func(m *nats.Msg) { handle(m.Data) })
	if err != nil {
		return nil, fmt.Errorf("store: subscribe to %s: %w", subject, err)
	}
	return func() { sub.Unsubscribe() }, nil
}

// KVWithTTL opens (creating it if needed) a key-value bucket whose entries
// expire ttl after they were last written. With maxKeys above zero the
// bucket holds at most that many keys: a write beyond it drops the key
// written least recently, however young, so that a bucket written
// thousands of times a second stays within memory (the server indexes
// every key). Zero keeps every key for ttl.
func (s *Store) KVWithTTL(ctx context.Context, bucket string, ttl time.Duration, maxKeys int64) (*KV, error) {
	kv, err := s.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:  bucket,
		History: 1,
		TTL:     ttl,
		Storage: jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("store: bucket %s: %w", bucket, err)
	}
	if maxKeys > 0 {
		// A bucket refuses writes at its limits; its stream is told to
		// drop the oldest instead. With one revision per key, messages
		// are keys.
		st, err := s.js.Stream(ctx, kvStreamPrefix+bucket)
		if err != nil {
			return nil, fmt.Errorf("store: bucket %s: %w", bucket, err)
		}
		cfg := st.CachedInfo().Config
		cfg.MaxMsgs, cfg.Discard = maxKeys, jetstream.DiscardOld
		if _, err := s.js.UpdateStream(ctx, cfg); err != nil {
			return nil, fmt.Errorf("store: bucket %s: at most %d keys: %w", bucket, maxKeys, err)
		}
	}
	return &KV{kv: kv, js: s.js}, nil
}

// kvStreamPrefix names the stream that holds a key-value bucket.
const kvStreamPrefix = "KV_"

// Objects opens (creating it if needed) the object store with the given name.
func (s *Store) Objects(ctx context.Context, bucket string) (*Objects, error) {
	obs, err := s.js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:  bucket,
		Storage: jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("store: object store %s: %w", bucket, err)
	}
	return &Objects{obs: obs}, nil
}

// waitReady waits until srv accepts connections, fails with the server's own
// words if it reports a fatal error (such as a port in use), and gives up
// when ctx is done or after ten seconds.
func waitReady(ctx context.Context, srv *server.Server, fatal <-chan string) error {
	deadline := time.Now().Add(10 * time.Second)
	for !srv.ReadyForConnections(20 * time.Millisecond) {
		select {
		case msg := <-fatal:
			return fmt.Errorf("store: embedded NATS server: %s", msg)
		case <-ctx.Done():
			return fmt.Errorf("store: embedded NATS server not ready: %w", ctx.Err())
		default:
		}
		if time.Now().After(deadline) {
			return errors.New("store: embedded NATS server did not become ready within 10s")
		}
	}
	return nil
}

// natsLogger sends the NATS server's log to slog: notices at debug level, since
// the server is an implementation detail of Gust. The first fatal error is
// also sent on fatal, so that Open can report it.
type natsLogger struct {
	log   *slog.Logger
	fatal chan string
}

func (l natsLogger) Noticef(format string, v ...any) {
	l.log.Debug(fmt.Sprintf(format, v...), "component", "nats")
}
func (l natsLogger) Warnf(format string, v ...any) {
	l.log.Warn(fmt.Sprintf(format, v...), "component", "nats")
}
func (l natsLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.log.Error(msg, "component", "nats")
	select {
	case l.fatal <- msg:
	default:
	}
}
func (l natsLogger) Errorf(format string, v ...any) {
	l.log.Error(fmt.Sprintf(format, v...), "component", "nats")
}
func (l natsLogger) Debugf(format string, v ...any) {}
func (l natsLogger) Tracef(format string, v ...any) {}

var _ server.Logger = natsLogger{}
