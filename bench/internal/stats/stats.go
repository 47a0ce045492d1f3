// Package stats is the benchmark tools' arithmetic on latencies.
package stats

import (
	"fmt"
	"slices"
	"time"
)

// Percentile returns the p-th percentile of d (nearest rank), or 0 for
// no samples.
func Percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[max(0, min(len(s)-1, (len(s)*p+99)/100-1))]
}

// Ms formats d in milliseconds, as "1.23ms".
func Ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d.Microseconds())/1000) }
