package gateway

import (
	"strings"
	"testing"
	"time"
)

// TestInvocationIDs: ids are 26 characters of Crockford's base32 in lower
// case, all different, and sort by the millisecond they were made in.
func TestInvocationIDs(t *testing.T) {
	seen := map[string]bool{}
	prev := ""
	for i := range 2000 {
		if i == 1000 {
			time.Sleep(2 * time.Millisecond) // a later millisecond sorts later
			if id := NewInvocationID(); id[:10] <= prev[:10] {
				t.Fatalf("id %s made after %s does not sort after it", id, prev)
			}
		}
		id := NewInvocationID()
		if len(id) != 26 || strings.Trim(id, "0123456789abcdefghjkmnpqrstvwxyz") != "" {
			t.Fatalf("id %q: want 26 characters of 0-9 and a-z without i, l, o, u", id)
		}
		if seen[id] {
			t.Fatalf("id %s made twice", id)
		}
		seen[id] = true
		prev = id
	}
}
