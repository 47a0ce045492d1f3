package store

import (
	"testing"
	"time"
)

// TestLastLeavesNoConsumer: each read of a stream's last messages makes a
// consumer on the server, which must not outlive the read (the server kept
// each for 5 minutes, and a polling dashboard piled them up).
func TestLastLeavesNoConsumer(t *testing.T) {
	ctx := t.Context()
	s, err := Open(ctx, Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, err := s.Stream(ctx, "log", []string{"log.>"}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := st.Publish(ctx, "log.a", []byte("x")); err != nil {
			t.Fatal(err)
		}
		if got, err := st.Last(ctx, 10, "log.a"); err != nil || len(got) == 0 {
			t.Fatalf("Last = %v, %v", got, err)
		}
	}
	js, err := st.js.Stream(ctx, "log")
	if err != nil {
		t.Fatal(err)
	}
	// The server's count may include, for a moment after a read returns,
	// a consumer that is being deleted (about one run in 300 saw it).
	deadline := time.Now().Add(5 * time.Second)
	for {
		info, err := js.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Consumers == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d consumers left on the stream 5 s after 3 reads, want none", info.State.Consumers)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
