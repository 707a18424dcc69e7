package batch

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chronow/persister/internal/hold"
	"github.com/chronow/persister/internal/promtext"
	"github.com/chronow/persister/internal/sink"
	"github.com/chronow/persister/metrics"
)

// recordSink stores everything and records each Insert's collection and size.
type recordSink struct {
	mu    sync.Mutex
	calls []string
}

func (s *recordSink) Insert(_ context.Context, _, coll string, docs [][]byte) ([]sink.Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, coll+":"+strconv.Itoa(len(docs)))
	return make([]sink.Result, len(docs)), nil
}

// recordAcker records acknowledged ids per stream.
type recordAcker struct {
	mu  sync.Mutex
	ids map[string][]string
}

func (a *recordAcker) Ack(_ context.Context, ids map[string][]string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for s, l := range ids {
		a.ids[s] = append(a.ids[s], l...)
	}
	return nil
}

func (a *recordAcker) AckEach(ctx context.Context, stream string, ids []string) ([]bool, error) {
	return allAcked(ids), a.Ack(ctx, map[string][]string{stream: ids})
}

func allAcked(ids []string) []bool {
	out := make([]bool, len(ids))
	for i := range out {
		out[i] = true
	}
	return out
}

func TestGroupByCollection(t *testing.T) {
	items := func(colls ...string) []Item {
		var out []Item
		for i, c := range colls {
			out = append(out, Item{ID: strconv.Itoa(i), Collection: c})
		}
		return out
	}
	one := items("messages", "messages", "messages")
	by, order := groupByCollection(one)
	if !slices.Equal(order, []string{"messages"}) || len(by["messages"]) != 3 {
		t.Errorf("one collection: got order %v, %d items", order, len(by["messages"]))
	}
	mixed := items("messages", "dead_letters", "messages", "dead_letters", "messages")
	by, order = groupByCollection(mixed)
	if !slices.Equal(order, []string{"messages", "dead_letters"}) {
		t.Errorf("mixed: got order %v, want [messages dead_letters]", order)
	}
	var ids []string
	for _, it := range by["messages"] {
		ids = append(ids, it.ID)
	}
	if !slices.Equal(ids, []string{"0", "2", "4"}) {
		t.Errorf("mixed: messages got ids %v, want [0 2 4] in order", ids)
	}
	if by, order = groupByCollection(nil); len(by) != 0 || len(order) != 0 {
		t.Errorf("empty: got %v %v", by, order)
	}
}

// TestAckMetricsPerKind checks the per-kind metric bookkeeping of acks: every
// entry is acknowledged once, counted once under its kind, observed once in
// the latency histogram, and the in-flight gauge returns to zero.
func TestAckMetricsPerKind(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, "test")
	s := &recordSink{}
	a := &recordAcker{ids: map[string][]string{}}
	b := New(Config{Tenant: "t", MaxItems: 7, MaxBytes: 1 << 20, Linger: 5 * time.Millisecond, Inflight: 2, WriteTimeout: time.Second},
		s, a, nil, m, slog.New(slog.NewTextHandler(io.Discard, nil)))
	holds := hold.NewSet(nil, m.InflightEntries.WithLabelValues("t"), time.Minute)
	ctx := context.Background()
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	want := map[string]int{}
	for i := range 100 {
		kind, coll := "topic", "messages"
		if i%3 == 0 {
			kind, coll = "dlq", "dead_letters"
		}
		want[kind]++
		stream, id := "s"+strconv.Itoa(i%4), strconv.Itoa(i)
		it := Item{Stream: stream, ID: id, Kind: kind, Collection: coll, Doc: []byte{5, 0, 0, 0, 0}, Time: time.Now(),
			Hold: holds.Take(stream, id, 0, time.Now())}
		if err := b.Add(ctx, it); err != nil {
			t.Fatal(err)
		}
	}
	b.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	acked := 0
	for _, l := range a.ids {
		acked += len(l)
		seen := map[string]bool{}
		for _, id := range l {
			if seen[id] {
				t.Errorf("id %s acked twice", id)
			}
			seen[id] = true
		}
	}
	if acked != 100 {
		t.Errorf("acked %d ids, want 100", acked)
	}
	for kind, n := range want {
		if got := gathered(t, reg, "persister_entries_acked_total", kind); got != float64(n) {
			t.Errorf("acked_total{kind=%s} = %v, want %d", kind, got, n)
		}
		if got := gathered(t, reg, "persister_store_latency_seconds", kind); got != float64(n) {
			t.Errorf("store latency count{kind=%s} = %v, want %d", kind, got, n)
		}
	}
	if got := gathered(t, reg, "persister_inflight_entries", ""); got != 0 {
		t.Errorf("inflight entries = %v after Close, want 0", got)
	}
	total := 0
	for _, c := range s.calls {
		n, _ := strconv.Atoi(c[slices.Index([]byte(c), ':')+1:])
		total += n
	}
	if total != 100 {
		t.Errorf("sink got %d documents (%v), want 100", total, s.calls)
	}
}

// gathered returns the value (counter, gauge) or sample count (histogram)
// of the series of family name whose labels include kind ("" = any).
func gathered(t *testing.T, reg *prometheus.Registry, name, kind string) float64 {
	t.Helper()
	var labels []string
	if kind != "" {
		labels = []string{"kind", kind}
	}
	ms, _ := promtext.Series(t, reg, name, labels...)
	for _, mm := range ms {
		switch {
		case mm.GetHistogram() != nil:
			return float64(mm.GetHistogram().GetSampleCount())
		case mm.GetCounter() != nil:
			return mm.GetCounter().GetValue()
		case mm.GetGauge() != nil:
			return mm.GetGauge().GetValue()
		}
	}
	t.Fatalf("no series of %s with kind %q", name, kind)
	return 0
}

// slotSink is a sink with one write slot that records the most writes ever
// in flight together.
type slotSink struct {
	slotChan
	mu       sync.Mutex
	inflight int
	peak     int
	delay    time.Duration
}

// slotChan is a Slotter with cap(s) write slots.
type slotChan chan struct{}

func (s slotChan) Slot(ctx context.Context, _ string) (sink.Done, error) {
	select {
	case s <- struct{}{}:
		return func(time.Duration, int, error) { <-s }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *slotSink) Insert(ctx context.Context, _, _ string, docs [][]byte) ([]sink.Result, error) {
	s.mu.Lock()
	s.inflight++
	s.peak = max(s.peak, s.inflight)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inflight--
		s.mu.Unlock()
	}()
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return make([]sink.Result, len(docs)), nil
}

// TestSlotsBoundWritesAcrossBatchersOutsideTheTimeout checks that batchers
// sharing a Slotter sink never write more at once than it allows, and that
// waiting for a slot does not count against the write timeout: each write
// takes 60ms, the timeout is 100ms, and three batchers queue for one slot.
func TestSlotsBoundWritesAcrossBatchersOutsideTheTimeout(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, "test")
	s := &slotSink{slotChan: make(slotChan, 1), delay: 60 * time.Millisecond}
	ctx := context.Background()
	var wg sync.WaitGroup
	for tn := range 3 {
		a := &recordAcker{ids: map[string][]string{}}
		b := New(Config{Tenant: "t" + strconv.Itoa(tn), MaxItems: 5, MaxBytes: 1 << 20, Linger: time.Millisecond, Inflight: 2, WriteTimeout: 100 * time.Millisecond, MaxBackoff: time.Second},
			s, a, nil, m, slog.New(slog.NewTextHandler(io.Discard, nil)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			done := make(chan error, 1)
			go func() { done <- b.Run(ctx) }()
			for i := range 20 {
				if err := b.Add(ctx, Item{Stream: "s", ID: strconv.Itoa(i), Kind: "topic", Collection: "messages", Doc: []byte{5, 0, 0, 0, 0}, Time: time.Now()}); err != nil {
					t.Error(err)
				}
			}
			b.Close()
			if err := <-done; err != nil {
				t.Error(err)
			}
			if n := len(a.ids["s"]); n != 20 {
				t.Errorf("tenant %d: %d acked, want 20", tn, n)
			}
		}()
	}
	wg.Wait()
	if s.peak != 1 {
		t.Errorf("peak writes in flight %d, want 1", s.peak)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "persister_write_errors_total" {
			t.Errorf("write errors counted while waiting for slots: %v", mf.GetMetric())
		}
	}
}
