package api

import (
	"context"
	"testing"
	"time"
)

// TestUploadSlotsShareFairly: a tenant holding its share of the upload
// slots waits for one of its own to end, while another tenant takes a
// free one at once; the server's total holds for all tenants.
func TestUploadSlotsShareFairly(t *testing.T) {
	ctx := context.Background()
	s := newUploadSlots(3, 2)
	var releases []func()
	for range 2 {
		release, ok, _ := s.take(ctx, "slow", time.Second)
		if !ok {
			t.Fatal("the first two slots of a tenant were refused")
		}
		releases = append(releases, release)
	}
	if _, ok, tenantFull := s.take(ctx, "slow", 50*time.Millisecond); ok || !tenantFull {
		t.Errorf("a tenant's third upload: ok %t, tenant full %t; want it refused, its share full", ok, tenantFull)
	}
	other, ok, _ := s.take(ctx, "other", 50*time.Millisecond)
	if !ok {
		t.Fatal("another tenant was refused the free slot")
	}
	if _, ok, tenantFull := s.take(ctx, "third", 50*time.Millisecond); ok || tenantFull {
		t.Errorf("an upload past the server's total: ok %t, tenant full %t; want it refused, the server full", ok, tenantFull)
	}
	done := make(chan bool)
	go func() {
		_, ok, _ := s.take(ctx, "slow", 5*time.Second)
		done <- ok
	}()
	time.Sleep(20 * time.Millisecond)
	other() // frees a slot of the server's, not of slow's share
	select {
	case <-done:
		t.Fatal("a tenant at its share took a slot another tenant released")
	case <-time.After(50 * time.Millisecond):
	}
	releases[0]()
	if !<-done {
		t.Error("a tenant waiting for its share got no slot when one of its own ended")
	}
}
