// Package deadline gives a context a deadline without arming a timer until
// someone waits for it.
//
// context.WithDeadline starts a timer, makes the parent's Done channel and
// registers with the parent for every call; on a request path that is a
// microsecond and half a kilobyte per request. Most invocations never wait:
// a warm WebAssembly instance is only asked Err, at the guest's check-ins,
// and a context made here answers that from the clock. Whoever calls Done,
// or derives a cancellable context, gets the real thing, made once.
package deadline

import (
	"context"
	"sync"
	"time"
)

// Context is a context with a deadline that makes its timer lazily.
type Context struct {
	parent context.Context
	at     time.Time

	mu       sync.Mutex
	timed    context.Context // context.WithDeadline(parent, at), once made
	cancel   context.CancelFunc
	released bool
}

// New returns a context that is done when parent is, or at d from now,
// whichever comes first. Release must be called when it is no longer used,
// as a context.CancelFunc must.
func New(parent context.Context, d time.Duration) *Context {
	at := time.Now().Add(d)
	if pd, ok := parent.Deadline(); ok && pd.Before(at) {
		at = pd
	}
	return &Context{parent: parent, at: at}
}

// real returns the context that Done and AfterFunc stand for, made on the
// first call.
func (c *Context) real() context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timed == nil {
		c.timed, c.cancel = context.WithDeadline(c.parent, c.at)
		if c.released {
			c.cancel()
		}
	}
	return c.timed
}

// Deadline returns the earlier of the parent's deadline and this one.
func (c *Context) Deadline() (time.Time, bool) { return c.at, true }

// Done returns a channel that is closed when the context is done. The
// first call arms the timer.
func (c *Context) Done() <-chan struct{} { return c.real().Done() }

// Err returns nil until the context is done, then why: the parent's error,
// context.DeadlineExceeded, or context.Canceled after Release.
func (c *Context) Err() error {
	c.mu.Lock()
	timed, released := c.timed, c.released
	c.mu.Unlock()
	switch {
	case timed != nil:
		return timed.Err() // Done was made: Err follows it
	case released:
		return context.Canceled
	}
	if err := c.parent.Err(); err != nil {
		return err
	}
	if !time.Now().Before(c.at) {
		return context.DeadlineExceeded
	}
	return nil
}

// Value returns the parent's value for key.
func (c *Context) Value(key any) any { return c.parent.Value(key) }

// AfterFunc runs f in its own goroutine once the context is done, as
// context.AfterFunc does. The context package calls it for the contexts
// derived from this one, which then need no goroutine of their own.
func (c *Context) AfterFunc(f func()) (stop func() bool) {
	return context.AfterFunc(c.real(), f)
}

// WithoutDeadline returns what ends ctx other than its deadline, for a
// caller that enforces the deadline itself (as a connection's deadline):
// for a Context, its parent, which arms no timer to wait on; else ctx.
// Release, which follows the caller's use, does not end it.
func WithoutDeadline(ctx context.Context) context.Context {
	if c, ok := ctx.(*Context); ok {
		return c.parent
	}
	return ctx
}

// Release ends the context and frees its timer, if one was made.
func (c *Context) Release() {
	c.mu.Lock()
	c.released = true
	cancel := c.cancel
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}
