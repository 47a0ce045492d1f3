package async

import (
	"testing"
	"time"

	"github.com/gust-faas/gust/internal/registry"
)

// TestRetryDelay: retries wait retry_delay doubled each time, with jitter,
// and never longer than an hour, so that the longest schedule the spec
// allows ends well within the record's 24 hours.
func TestRetryDelay(t *testing.T) {
	for n, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		if d := retryDelay(time.Second, n+1); d < want*4/5 || d > want*6/5 {
			t.Errorf("retry %d of 1s: %v, want %v within 20%%", n+1, d, want)
		}
	}
	var total time.Duration
	for n := 1; n <= registry.MaxRetries; n++ {
		d := retryDelay(registry.MaxRetryDelay, n)
		if d > maxRetryWait {
			t.Errorf("retry %d of %v: %v, longer than %v", n, registry.MaxRetryDelay, d, maxRetryWait)
		}
		total += d
	}
	if total >= ResultTTL/2 {
		t.Errorf("the longest schedule of retries takes %v, want well within the record's %v", total, ResultTTL)
	}
}
