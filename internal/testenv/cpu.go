package testenv

import (
	"syscall"
	"testing"
	"time"
)

// CPUTime is the process's user+system CPU time (GC workers included): on a
// shared machine it says more about a benchmark's cost than the wall-clock
// ns/op. It is 0 when getrusage fails.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ReportCPUPerOp reports the process's CPU time since cpu0 (a CPUTime
// reading taken before the loop) per iteration, as the metric cpu-ns/op.
func ReportCPUPerOp(b *testing.B, cpu0 time.Duration) {
	b.Helper()
	b.ReportMetric(float64(CPUTime()-cpu0)/float64(b.N), "cpu-ns/op")
}
