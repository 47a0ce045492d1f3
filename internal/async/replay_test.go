package async

import (
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/gust-faas/gust/internal/store"
	"github.com/gust-faas/gust/internal/tenant"
)

// TestReplayFindsAnyDeadLetter: a dead letter is found by its id however
// many came after it (a replay read only the function's last 10,000), one
// written before letters had subjects of their own still is, both are
// listed, an invocation buried twice is replayed once, and a letter of a
// deleted tenant of the same name is neither listed nor replayed.
func TestReplayFindsAnyDeadLetter(t *testing.T) {
	ctx := t.Context()
	s := newService(t)
	var queued time.Time
	bury := func(subject, id string) {
		t.Helper()
		data := encodeJob(Job{ID: id, Tenant: "t", Function: "f", Version: 1, Queued: queued, Errors: []string{"boom"}})
		if err := s.dead.Publish(ctx, subject, data); err != nil {
			t.Fatal(err)
		}
	}
	// A letter of a tenant t deleted before this one was created.
	queued = time.Now().Add(-2 * time.Hour)
	bury(deadSubject("t", "f", "predecessor"), "predecessor")
	queued = time.Now()
	bury(legacyDeadSubject("t", "f"), "legacy")
	bury(deadSubject("t", "f", "first"), "first")
	for i := range replayAtMost + 50 {
		id := fmt.Sprintf("later-%d", i)
		bury(deadSubject("t", "f", id), id)
	}
	bury(deadSubject("t", "g", "other"), "other") // another function's
	bury(deadSubject("t", "f", "twice"), "twice") // buried twice: runs once
	bury(deadSubject("t", "f", "twice"), "twice")

	if letters, err := s.Dead(ctx, "t", "f", replayAtMost+100); err != nil || len(letters) != replayAtMost+54 || letters[0].ID != "legacy" || letters[1].ID != "first" {
		t.Fatalf("Dead listed %d letters (%v), want %d from legacy, first, ...", len(letters), err, replayAtMost+54)
	}
	for _, id := range []string{"first", "legacy", "twice"} {
		if n, err := s.Replay(ctx, "t", "f", id); err != nil || n != 1 {
			t.Fatalf("Replay(%s) = %d, %v; want 1", id, n, err)
		}
		if queued, err := s.queue.Pending(ctx, workSubject("t", id)); err != nil || queued.Data == nil {
			t.Errorf("%s replayed but not queued: %v", id, err)
		}
		if n, err := s.Replay(ctx, "t", "f", id); !errors.Is(err, ErrNotFound) || n != 0 {
			t.Errorf("a second Replay(%s) = %d, %v; want not found: the letter left the stream", id, n, err)
		}
	}
	for _, id := range []string{"other", "nosuch", "bad.id", "predecessor"} {
		if _, err := s.Replay(ctx, "t", "f", id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Replay(%q) of function f: %v, want not found", id, err)
		}
	}
	if letters, _ := s.Dead(ctx, "t", "f", 5); len(letters) != 5 || letters[4].ID != fmt.Sprintf("later-%d", replayAtMost+49) {
		t.Errorf("the last 5 letters after the replays: %v", letters)
	}
}

// newService returns a Service on a store of its own, with tenant t
// (created an hour ago) and no functions or invoker: enough for the queue
// and the dead letters (of functions gone altogether).
func newService(t *testing.T) *Service {
	t.Helper()
	st, err := store.Open(t.Context(), store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s, err := New(t.Context(), Deps{Store: st, Functions: functions{}, Tenants: tenants{"t": time.Now().Add(-time.Hour)}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// tenants are the tenants of a test, by name, with the time each was
// created.
type tenants map[string]time.Time

func (ts tenants) Tenant(name string) (tenant.Tenant, bool) {
	created, ok := ts[name]
	return tenant.Tenant{Name: name, Created: created}, ok
}

// TestReplaysAtOnceQueueOnce: two replays that list the same letter (a
// second one started while the first, whose caller left, goes on) queue
// it once, and the record says queued.
func TestReplaysAtOnceQueueOnce(t *testing.T) {
	ctx := t.Context()
	s := newService(t)
	data := encodeJob(Job{ID: "once", Tenant: "t", Function: "f", Version: 1, Queued: time.Now(), Errors: []string{"boom"}})
	if err := s.dead.Publish(ctx, deadSubject("t", "f", "once"), data); err != nil {
		t.Fatal(err)
	}
	letters, err := s.Dead(ctx, "t", "f", 10)
	if err != nil || len(letters) != 1 {
		t.Fatalf("Dead: %v, %v", letters, err)
	}
	if queued, err := s.replay(ctx, "t", letters[0]); err != nil || !queued {
		t.Fatalf("the first replay: queued %v, %v", queued, err)
	}
	first, err := s.queue.Pending(ctx, workSubject("t", "once"))
	if err != nil {
		t.Fatal(err)
	}
	if queued, err := s.replay(ctx, "t", letters[0]); err != nil || queued {
		t.Errorf("the second replay of the letter: queued %v, %v; want it left to the first", queued, err)
	}
	if last, err := s.queue.Pending(ctx, workSubject("t", "once")); err != nil || last.Seq != first.Seq {
		t.Errorf("the invocation's last queued message is %d (%v), want the first replay's %d only", last.Seq, err, first.Seq)
	}
	if rec, err := s.Get(ctx, "t", "once"); err != nil || rec.State != Queued {
		t.Errorf("record after the replays: %+v, %v; want queued", rec, err)
	}
}
