package bench

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"
)

// TestRunSmall runs the default stages of the benchmark on a small backlog against
// fresh servers and the real daemon binary: the command works end to end,
// every drain stores exactly its backlog (Run fails otherwise), and the
// report has every row. The numbers themselves are not checked.
func TestRunSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the daemon and runs seven drains")
	}
	requireServers(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	rep, err := Run(ctx, Config{Entries: 3000, MemoryEntries: 4000, ScaleEntries: 2000, SweepEntries: 1000, LatencyDuration: 3 * time.Second, LatencyWarmup: time.Second, WorkDir: t.TempDir(),
		TraceStopAfter: 300 * time.Millisecond, TraceStopFor: 500 * time.Millisecond, Stages: DefaultStages}, log)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Baseline == nil || rep.Drain == nil || rep.Latency == nil || rep.scale("1-stream") == nil || rep.scale("1000-streams") == nil || rep.scale("1-replica") == nil || rep.scale("2-replicas") == nil || rep.scale("1M-backlog") == nil {
		t.Fatalf("missing stages: %+v", rep)
	}
	if len(rep.Sweeps) != len(Variants) || len(rep.Sweeps[0].Results) != len(SweepWriters) {
		t.Errorf("sink sweeps: %d layouts (want %d), %d writer counts in the first", len(rep.Sweeps), len(Variants), len(rep.Sweeps[0].Results))
	}
	for _, l := range Variants[1:] {
		if rep.scale(l.Name) == nil {
			t.Errorf("no drain of layout %s", l.Name)
		}
	}
	if rep.Trace == nil || len(rep.Trace.Points) == 0 {
		t.Errorf("no trace of the write limit: %+v", rep.Trace)
	}
	if rep.Latency.Entries == 0 || len(rep.Latency.Acked) != rep.Latency.Entries {
		t.Errorf("latency: %d entries, %d latencies", rep.Latency.Entries, len(rep.Latency.Acked))
	}
	for _, d := range append([]DrainResult{*rep.Drain}, rep.Scale...) {
		if d.CPU <= 0 || d.PeakRSS <= 0 || d.Elapsed <= 0 {
			t.Errorf("%s: cpu %s, peak rss %d, elapsed %s: want all > 0", d.Name, d.CPU, d.PeakRSS, d.Elapsed)
		}
	}
	var b strings.Builder
	if err := rep.Markdown(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| drain |", "| 1-stream |", "| 1000-streams |", "| 1-replica |", "| 2-replicas |", "| 1M-backlog |", "daemon peak RSS (VmHWM) while draining", "XADD reply → acknowledged", "1000 streams (50 tenants × 20 topics) vs 1 stream", "2 daemon replicas vs 1", "sink alone:", "many small fields", "adaptive limit"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}
