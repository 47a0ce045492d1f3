// Package audit records every change made through the control plane (who,
// what, when, from where, with what outcome) in a stream of the store, and
// reads it back per tenant.
package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/gust-faas/gust/internal/store"
)

const (
	streamName = "gust_audit"
	subjects   = "gust.audit.>"
	// Retention of audit entries.
	retention = 400 * 24 * time.Hour
)

// Entry is one change, or attempted change, to the control plane.
type Entry struct {
	Time   time.Time `json:"time"`
	Tenant string    `json:"tenant"`
	// KeyID and Role are who made it.
	KeyID  string `json:"key_id"`
	Role   string `json:"role"`
	Action string `json:"action"`
	Target string `json:"target"`
	Remote string `json:"remote"`
	Status int    `json:"status"`
}

// Log is the audit stream.
type Log struct {
	stream *store.Stream
	log    *slog.Logger
}

// Open opens (creating it if needed) the audit stream.
func Open(ctx context.Context, s *store.Store, log *slog.Logger) (*Log, error) {
	st, err := s.Stream(ctx, streamName, []string{subjects}, retention, 0)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Log{stream: st, log: log}, nil
}

// Record appends e. The change it records has happened already, so a
// failure to record is logged, not returned.
func (l *Log) Record(ctx context.Context, e Entry) {
	data, err := json.Marshal(e)
	if err == nil {
		err = l.stream.Publish(context.WithoutCancel(ctx), "gust.audit."+e.Tenant, data)
	}
	if err != nil {
		l.log.Error("audit entry not recorded", "err", err, "action", e.Action, "target", e.Target, "key_id", e.KeyID)
	}
}

// Read returns the last n entries of tenant, or of every tenant if tenant
// is empty, oldest first.
func (l *Log) Read(ctx context.Context, tenant string, n int) ([]Entry, error) {
	filter := subjects
	if tenant != "" {
		filter = "gust.audit." + tenant
	}
	raw, err := l.stream.Last(ctx, n, filter)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(raw))
	for _, m := range raw {
		var e Entry
		if err := json.Unmarshal(m.Data, &e); err != nil {
			return nil, fmt.Errorf("audit: unreadable entry: %w", err)
		}
		out = append(out, e)
	}
	return out, nil
}
