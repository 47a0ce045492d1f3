package async

import "testing"

// TestShareFollowsTheVersion: a version's async share has the size its
// spec gives when a worker first joins it, a new version (as a deploy that
// changes max_instances makes) gets a share of its own, and a share no
// worker is in is forgotten.
func TestShareFollowsTheVersion(t *testing.T) {
	s := &Service{shares: map[string]*share{}}
	a := s.joinShare("t/f/1", 1)
	b := s.joinShare("t/f/1", 5) // the same version: the same share
	if a != b || cap(a.slots) != 1 {
		t.Fatalf("two workers of version 1 got shares %p and %p of %d slots, want one of 1", a, b, cap(a.slots))
	}
	a.slots <- struct{}{}
	select {
	case b.slots <- struct{}{}:
		t.Fatal("a second worker of version 1 took a slot of a share of 1")
	default:
	}
	v2 := s.joinShare("t/f/2", 4)
	if cap(v2.slots) != 4 {
		t.Errorf("version 2's share has %d slots, want the 4 its spec gives", cap(v2.slots))
	}
	<-a.slots
	s.leaveShare("t/f/1", a)
	if _, ok := s.shares["t/f/1"]; !ok {
		t.Fatal("version 1's share was forgotten while a worker was still in it")
	}
	s.leaveShare("t/f/1", b)
	s.leaveShare("t/f/2", v2)
	if len(s.shares) != 0 {
		t.Errorf("shares after every worker left = %v, want none", s.shares)
	}
	if again := s.joinShare("t/f/1", 3); cap(again.slots) != 3 {
		t.Errorf("version 1's share joined again has %d slots, want 3 (made anew)", cap(again.slots))
	}
}
