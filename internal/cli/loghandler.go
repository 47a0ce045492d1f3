package cli

import (
	"context"
	"log/slog"
	"slices"
)

// lazyAttrs is a slog.Handler whose WithAttrs only remembers the attributes
// and adds them to the records that are logged. The text and JSON handlers
// format attributes when With is called, which the request path does for
// every request, mostly to log nothing.
type lazyAttrs struct {
	h     slog.Handler
	attrs []slog.Attr
}

func (l lazyAttrs) Enabled(ctx context.Context, level slog.Level) bool {
	return l.h.Enabled(ctx, level)
}

func (l lazyAttrs) Handle(ctx context.Context, r slog.Record) error {
	if len(l.attrs) > 0 {
		r = r.Clone()
		r.AddAttrs(l.attrs...)
	}
	return l.h.Handle(ctx, r)
}

// WithAttrs keeps attrs itself when it has none of its own, as a
// Handler may: the request path makes one logger per request, from a
// slice of its own.
func (l lazyAttrs) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(l.attrs) == 0 {
		return lazyAttrs{h: l.h, attrs: attrs}
	}
	return lazyAttrs{h: l.h, attrs: append(slices.Clip(l.attrs), attrs...)}
}

func (l lazyAttrs) WithGroup(name string) slog.Handler {
	h := l.h
	if len(l.attrs) > 0 {
		h = h.WithAttrs(l.attrs)
	}
	return lazyAttrs{h: h.WithGroup(name)}
}
