package deadline

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

func isDone(ctx context.Context) bool {
	select {
	case <-ctx.Done():
		return true
	default:
		return false
	}
}

// TestErrFollowsTheClock: a context nobody waits on is done at its
// deadline all the same.
func TestErrFollowsTheClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := New(context.Background(), time.Second)
		defer c.Release()
		if err := c.Err(); err != nil {
			t.Fatalf("Err before the deadline = %v", err)
		}
		time.Sleep(time.Second)
		if err := c.Err(); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Err at the deadline = %v, want DeadlineExceeded", err)
		}
		if !isDone(c) {
			t.Fatal("Done, first asked after the deadline, is not closed")
		}
	})
}

func TestDoneClosesAtTheDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := New(context.Background(), time.Second)
		defer c.Release()
		start := time.Now()
		<-c.Done()
		if waited := time.Since(start); waited != time.Second {
			t.Errorf("Done closed after %v, want 1s", waited)
		}
		if err := c.Err(); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Err = %v, want DeadlineExceeded", err)
		}
	})
}

func TestParentCancels(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		parent, cancel := context.WithCancel(context.WithValue(context.Background(), "k", "v"))
		c := New(parent, time.Hour)
		defer c.Release()
		if c.Value("k") != "v" {
			t.Errorf("Value(k) = %v, want the parent's v", c.Value("k"))
		}
		cancel()
		if err := c.Err(); !errors.Is(err, context.Canceled) {
			t.Errorf("Err after the parent's cancel = %v, want Canceled", err)
		}
		synctest.Wait()
		if !isDone(c) {
			t.Error("Done is not closed after the parent's cancel")
		}
	})
}

func TestDeadlineIsTheEarlier(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		parent, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c := New(parent, time.Hour)
		defer c.Release()
		if d, ok := c.Deadline(); !ok || !d.Equal(time.Now().Add(time.Minute)) {
			t.Errorf("Deadline = %v %v, want the parent's, a minute from now", d, ok)
		}
		c2 := New(parent, time.Second)
		defer c2.Release()
		if d, _ := c2.Deadline(); !d.Equal(time.Now().Add(time.Second)) {
			t.Errorf("Deadline = %v, want its own, a second from now", d)
		}
		time.Sleep(time.Minute)
		if err := c.Err(); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Err after the parent's deadline = %v, want DeadlineExceeded", err)
		}
	})
}

// TestDerivedContexts: a context derived from one of these is done with it,
// at its deadline or at Release.
func TestDerivedContexts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := New(context.Background(), time.Second)
		child, cancel := context.WithCancel(c)
		defer cancel()
		ran := make(chan struct{})
		context.AfterFunc(c, func() { close(ran) })
		time.Sleep(time.Second)
		synctest.Wait()
		if !isDone(child) || !errors.Is(child.Err(), context.DeadlineExceeded) {
			t.Errorf("child at the deadline: done %v, Err %v", isDone(child), child.Err())
		}
		select {
		case <-ran:
		default:
			t.Error("AfterFunc did not run at the deadline")
		}
		c.Release()

		c = New(context.Background(), time.Hour)
		child, cancel = context.WithCancel(c)
		defer cancel()
		c.Release()
		synctest.Wait()
		if !isDone(child) {
			t.Error("a derived context is not done after Release")
		}
	})
}

func TestRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := New(context.Background(), time.Hour)
		c.Release()
		if err := c.Err(); !errors.Is(err, context.Canceled) {
			t.Errorf("Err after Release = %v, want Canceled", err)
		}
		if !isDone(c) {
			t.Error("Done, first asked after Release, is not closed")
		}
		c.Release() // twice is harmless
	})
}

// TestWithoutDeadline: what ends a Context but its deadline is its parent;
// any other context stands for itself.
func TestWithoutDeadline(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	c := New(parent, time.Millisecond)
	defer c.Release()
	if got := WithoutDeadline(c); got != parent {
		t.Errorf("WithoutDeadline(Context) = %v, want its parent", got)
	}
	time.Sleep(2 * time.Millisecond)
	if c.Err() == nil || WithoutDeadline(c).Err() != nil {
		t.Errorf("past the deadline: Err %v, without it %v; want done, and not", c.Err(), WithoutDeadline(c).Err())
	}
	cancel()
	if WithoutDeadline(c).Err() == nil {
		t.Error("a cancelled parent: WithoutDeadline is not done")
	}
	if WithoutDeadline(parent) != parent {
		t.Error("WithoutDeadline of another context is not that context")
	}
}
