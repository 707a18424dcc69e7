package chaos

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chronow/persister/internal/testenv"
)

// needServers skips without redis-server or bin/ferretdb, except in CI.
func needServers(t *testing.T) {
	t.Helper()
	redisBin := os.Getenv(testenv.EnvRedisServerBin)
	if redisBin == "" {
		redisBin, _ = exec.LookPath("redis-server")
	}
	ferret := os.Getenv(testenv.EnvFerretDBBin)
	if ferret == "" {
		root, err := testenv.Root()
		if err == nil {
			ferret = filepath.Join(root, "bin", "ferretdb")
		}
	}
	for _, b := range []string{redisBin, ferret} {
		if _, err := os.Stat(b); b == "" || err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("server binary missing (%q); run `make redis ferretdb`", b)
			}
			t.Skipf("server binary missing (%q); run `make redis ferretdb`", b)
		}
	}
}

// TestChaosShort is the CI soak: 2 minutes of overlapping faults on 3
// replicas, a quiet period, the checker; then the checker is shown to catch
// a lost entry, a stray document and a stale warm copy planted on purpose.
// The seed is random (PERSISTER_CHAOS_SEED sets it); a failure prints it and
// the command that replays its schedule.
func TestChaosShort(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	needServers(t)
	seed := time.Now().UnixNano() % 1_000_000
	if s := os.Getenv("PERSISTER_CHAOS_SEED"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("PERSISTER_CHAOS_SEED=%q: %v", s, err)
		}
		seed = v
	}
	dir, err := os.MkdirTemp("", fmt.Sprintf("persister-chaos-%d-", seed))
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Seed: seed, Duration: 2 * time.Minute, Replicas: 3, Rate: 60, Settle: 5 * time.Minute, Dir: dir, selfTest: true}
	t.Logf("chaos seed %d, output in %s", seed, dir)
	ctx := context.Background()
	res, err := Run(ctx, cfg, slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	if err != nil {
		t.Fatalf("seed %d: %v (output kept in %s)", seed, err, dir)
	}
	t.Log(res.Line())
	if len(res.Failures) > 0 {
		for _, f := range res.Failures {
			t.Error(f)
		}
		hist, _ := os.ReadFile(filepath.Join(dir, "history.log"))
		if len(hist) > 6000 {
			hist = hist[len(hist)-6000:]
		}
		t.Fatalf("seed %d failed; history tail:\n%s\nhistory, logs and summary kept in %s; replay the schedule with:\n  PERSISTER_CHAOS_SEED=%d go test -run TestChaosShort ./internal/chaos\n  (or the long form: %s)",
			seed, hist, dir, seed, res.Repro())
	}
	s := res.Summary
	if s.Published < 1000 || s.OK == 0 || s.SMKeys == 0 || s.PublishedDLQ == 0 {
		t.Errorf("the run did too little to prove anything: %+v", s)
	}
	injected := 0
	for _, n := range res.Faults {
		injected += n
	}
	if injected < 20 {
		t.Errorf("only %d faults injected in 2 minutes: %v", injected, res.Faults)
	}

	// The checker, given a broken outcome, must say so.
	st := res.selfTest
	if st == nil {
		t.Fatal("no self test result")
	}
	if st.Summary.Lost != 1 || st.Summary.Unexpected != 1 || st.Summary.SMWrong != 1 {
		t.Errorf("self test: lost %d, unexpected %d, shared memory wrong %d; want 1 each (failures: %v)",
			st.Summary.Lost, st.Summary.Unexpected, st.Summary.SMWrong, st.Failures)
	}
	for _, want := range []string{"1 entries lost", "1 documents without a ledger entry", "1 shared-memory keys"} {
		found := false
		for _, f := range st.Failures {
			found = found || strings.Contains(f, want)
		}
		if !found {
			t.Errorf("self test: no failure saying %q in %v", want, st.Failures)
		}
	}
	if !t.Failed() {
		_ = os.RemoveAll(dir)
	}
}

// TestScheduleIsSeeded: a seed gives one schedule, overlapping faults of
// every kind; another seed another one.
func TestScheduleIsSeeded(t *testing.T) {
	a, b := Schedule(42, 10*time.Minute, 3), Schedule(42, 10*time.Minute, 3)
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatal("the same seed gave two schedules")
	}
	if fmt.Sprint(a) == fmt.Sprint(Schedule(43, 10*time.Minute, 3)) {
		t.Fatal("seeds 42 and 43 gave the same schedule")
	}
	kinds := map[string]int{}
	overlaps := 0
	for i, f := range a {
		kinds[f.Kind]++
		if f.At+f.For > 10*time.Minute {
			t.Errorf("fault %s ends after the fault period", f)
		}
		if i > 0 && a[i-1].At+a[i-1].For > f.At {
			overlaps++
		}
	}
	for _, k := range []string{FaultKill9, FaultSIGTERM, FaultPause, FaultRedisRestart, FaultTenantDBDown, FaultTrim, FaultLatency, FaultStall, FaultCut} {
		if kinds[k] == 0 {
			t.Errorf("no %s in 10 minutes: %v", k, kinds)
		}
	}
	if overlaps < len(a)/10 {
		t.Errorf("only %d of %d faults overlap the one before", overlaps, len(a))
	}
}

// testWriter sends logs to t.Log until the test ends.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	defer func() { _ = recover() }()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
