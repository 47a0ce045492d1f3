package store

import (
	"testing"
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
	info, err := js.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Consumers != 0 {
		t.Errorf("%d consumers left on the stream after 3 reads, want none", info.State.Consumers)
	}
}
