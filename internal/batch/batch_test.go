package batch

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chronow/persister/internal/budget"
	"github.com/chronow/persister/internal/hold"
	"github.com/chronow/persister/internal/sink"
	"github.com/chronow/persister/metrics"

	"github.com/chronow/persister/internal/promtext"
)

// gatedSink is a Slotter sink with one write slot: every Insert blocks
// until the test lets it through, and records its size.
type gatedSink struct {
	slotChan
	gate chan struct{}
	fail bool

	mu    sync.Mutex
	sizes []int
}

func newGatedSink() *gatedSink {
	return &gatedSink{slotChan: make(slotChan, 1), gate: make(chan struct{})}
}

func (s *gatedSink) Insert(ctx context.Context, _, _ string, docs [][]byte) ([]sink.Result, error) {
	s.mu.Lock()
	s.sizes = append(s.sizes, len(docs))
	s.mu.Unlock()
	select {
	case <-s.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if s.fail {
		return nil, errors.New("server unavailable")
	}
	return make([]sink.Result, len(docs)), nil
}

func (s *gatedSink) calls() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.sizes...)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// testItem is entry i of stream "s", held in holds with charge bytes of
// the budget (already acquired).
func testItem(holds *hold.Set, i int, charge int64) Item {
	id := strconv.Itoa(i) + "-0"
	return Item{Stream: "s", ID: id, Kind: "topic", Collection: "messages",
		Doc: []byte{5, 0, 0, 0, 0}, Time: time.Now(), Hold: holds.Take("s", id, charge, time.Now())}
}

// newHolds returns a hold set on bud with its own in-flight gauge.
func newHolds(bud *budget.Budget) (*hold.Set, prometheus.Gauge) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "inflight"})
	return hold.NewSet(bud, g, time.Minute), g
}

// budgetRun is a batcher on a gated sink with a recording acker, whose
// items are charged to a 1 MiB memory budget.
type budgetRun struct {
	s        *gatedSink
	a        *recordAcker
	bud      *budget.Budget
	holds    *hold.Set
	inflight prometheus.Gauge
	b        *Batcher
	done     chan error // Run's result
}

// startBudgetRun starts Run of a batcher with cfg on s.
func startBudgetRun(ctx context.Context, cfg Config, s *gatedSink) *budgetRun {
	r := &budgetRun{s: s, a: &recordAcker{ids: map[string][]string{}}, bud: budget.New(1 << 20), done: make(chan error, 1)}
	r.holds, r.inflight = newHolds(r.bud)
	r.b = New(cfg, s, r.a, nil, metrics.New(prometheus.NewRegistry(), "test"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	go func() { r.done <- r.b.Run(ctx) }()
	return r
}

// add acquires charge bytes of the budget and adds entry i of stream "s".
func (r *budgetRun) add(ctx context.Context, t *testing.T, i int, charge int64) {
	t.Helper()
	if err := r.bud.Acquire(ctx, charge); err != nil {
		t.Fatal(err)
	}
	if err := r.b.Add(ctx, testItem(r.holds, i, charge)); err != nil {
		t.Fatal(err)
	}
}

// stop closes the batcher, waits for Run, and checks that wantAcked
// entries were acknowledged and the whole budget was given back.
func (r *budgetRun) stop(t *testing.T, wantAcked int) {
	t.Helper()
	r.b.Close()
	if err := <-r.done; err != nil {
		t.Fatal(err)
	}
	if n := len(r.a.ids["s"]); n != wantAcked {
		t.Fatalf("acked %d entries, want %d", n, wantAcked)
	}
	if u := r.bud.Used(); u != 0 {
		t.Fatalf("budget holds %d bytes after the stop, want 0", u)
	}
}

// TestGroupCommit: while the connection's only write slot is busy, the next
// batch is not cut at its linger time but keeps growing, and goes out as one
// insert once the slot frees; the memory budget is back to zero after the
// acks.
func TestGroupCommit(t *testing.T) {
	ctx := context.Background()
	s := newGatedSink()
	r := startBudgetRun(ctx, Config{Tenant: "t", MaxItems: 1000, MaxBytes: 1 << 20, Linger: 2 * time.Millisecond, Inflight: 2,
		WriteTimeout: time.Minute}, s)
	r.add(ctx, t, 0, 10)
	waitFor(t, "the first insert", func() bool { return len(s.calls()) == 1 })
	// The first insert holds the only slot. 300 more items arrive, with
	// pauses longer than the linger time.
	for i := 1; i <= 300; i++ {
		r.add(ctx, t, i, 10)
		if i%50 == 0 {
			time.Sleep(10 * time.Millisecond)
		}
	}
	time.Sleep(20 * time.Millisecond)
	if got := s.calls(); len(got) != 1 {
		t.Fatalf("inserts %v while the slot was busy, want only the first", got)
	}
	s.gate <- struct{}{} // first insert done
	waitFor(t, "the second insert", func() bool { return len(s.calls()) == 2 })
	if got := s.calls(); got[1] != 300 {
		t.Fatalf("second insert had %d documents, want all 300 that waited", got[1])
	}
	s.gate <- struct{}{}
	r.stop(t, 301)
}

// TestAbandonReleasesBudget: a stop while the sink fails leaves the items
// pending in Redis (no ack) and gives their budget back.
func TestAbandonReleasesBudget(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	s := newGatedSink()
	s.fail = true
	close(s.gate)
	r := startBudgetRun(ctx, Config{Tenant: "t", MaxItems: 10, MaxBytes: 1 << 20, Linger: time.Millisecond, Inflight: 2,
		WriteTimeout: time.Minute, MaxBackoff: 20 * time.Millisecond}, s)
	for i := range 35 {
		r.add(ctx, t, i, 100)
	}
	waitFor(t, "failed inserts", func() bool { return len(s.calls()) >= 3 })
	cancel()
	r.stop(t, 0)
	if g := promtext.Value(r.inflight); g != 0 {
		t.Fatalf("in-flight gauge %v after the stop, want 0", g)
	}
	// Given up without an ack: the in-hand records stay until their ttl,
	// so the claim sweeper does not take the entries up again at once.
	if n := r.holds.Len(); n != 35 {
		t.Fatalf("%d in-hand records after the stop, want 35", n)
	}
}
