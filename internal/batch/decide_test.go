package batch

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/budget"
	"github.com/chronow/persister/internal/hold"
	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/sink"
	"github.com/chronow/persister/metrics"

	"github.com/chronow/persister/internal/promtext"
)

// scriptSink answers each Insert with the next scripted step: a
// command-level error, or one class per document (the last step repeats).
type scriptSink struct {
	mu    sync.Mutex
	steps []step
	calls [][]string // collections:ids of each call
}

type step struct {
	err     error        // command-level error: nothing known of the batch
	classes []sink.Class // per document, when err is nil
}

func (s *scriptSink) Insert(_ context.Context, _, coll string, docs [][]byte) ([]sink.Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for _, d := range docs {
		ids = append(ids, coll+":"+string(d))
	}
	s.calls = append(s.calls, ids)
	st := s.steps[min(len(s.calls)-1, len(s.steps)-1)]
	if st.err != nil {
		return nil, st.err
	}
	out := make([]sink.Result, len(docs))
	for i := range out {
		out[i].Class = st.classes[min(i, len(st.classes)-1)]
		if out[i].Class != sink.ClassNone && out[i].Class != sink.ClassDuplicate {
			out[i].Err = errors.New(out[i].Class.String())
		}
	}
	return out, nil
}

// fakeRescuer turns a refused item into a dead letter of the same entry.
func (r fakeRescuer) RescueEntry(context.Context, keyspace.Key, redis.XMessage, error) (Item, bool) {
	return Item{}, false
}

type fakeRescuer struct{ refuse bool }

func (r fakeRescuer) Rescue(_ context.Context, it Item, _ error) (Item, bool) {
	if r.refuse {
		return Item{}, false
	}
	it.Collection, it.Doc = "dead_letters", []byte("stub-"+string(it.Doc))
	return it, true
}

// TestDeliveryDecisions: for every answer of the sink, what happens to the
// entry: acknowledged (stored, duplicate, rescued), retried (retryable,
// command-level error, fatal with the tenant halted meanwhile), or left
// pending (refused and not rescued). In every case the entry leaves the
// batcher once, and its budget comes back.
func TestDeliveryDecisions(t *testing.T) {
	const fail = "boom"
	tests := []struct {
		name     string
		steps    []step
		rescuer  Rescuer
		attempts int // Item.Attempts of the entry (rescues already made)
		acked    bool
		calls    []string // the documents of each insert, in order
		halted   bool     // halted while the script runs
		stored   map[string]float64
		errors   map[string]float64
	}{
		{name: "inserted: acked", steps: []step{{classes: []sink.Class{sink.ClassNone}}}, acked: true,
			calls: []string{"messages:d"}, stored: map[string]float64{"inserted": 1}},
		{name: "duplicate: already stored, acked", steps: []step{{classes: []sink.Class{sink.ClassDuplicate}}}, acked: true,
			calls: []string{"messages:d"}, stored: map[string]float64{"duplicate": 1}},
		{name: "retryable: written again, then acked",
			steps: []step{{classes: []sink.Class{sink.ClassRetryable}}, {classes: []sink.Class{sink.ClassNone}}}, acked: true,
			calls: []string{"messages:d", "messages:d"}, errors: map[string]float64{"retryable": 1}},
		{name: "command error: outcome unknown, whole batch again, then acked",
			steps: []step{{err: errors.New("connection reset")}, {classes: []sink.Class{sink.ClassDuplicate}}}, acked: true,
			calls: []string{"messages:d", "messages:d"}, errors: map[string]float64{"unknown_outcome": 1}},
		{name: "permanent: rescued, the replacement stored and the entry acked",
			steps:   []step{{classes: []sink.Class{sink.ClassPermanent}}, {classes: []sink.Class{sink.ClassNone}}},
			rescuer: fakeRescuer{}, acked: true,
			calls: []string{"messages:d", "dead_letters:stub-d"}, errors: map[string]float64{"permanent": 1}},
		{name: "permanent without a rescuer: left pending, never acked",
			steps: []step{{classes: []sink.Class{sink.ClassPermanent}}}, acked: false,
			calls: []string{"messages:d"}, errors: map[string]float64{"permanent": 1}},
		{name: "permanent, the rescue refused: left pending",
			steps:   []step{{classes: []sink.Class{sink.ClassPermanent}}},
			rescuer: fakeRescuer{refuse: true}, acked: false, calls: []string{"messages:d"}},
		{name: "permanent after two rescues: left pending (no rescue loop)",
			steps:   []step{{classes: []sink.Class{sink.ClassPermanent}}},
			rescuer: fakeRescuer{}, attempts: 2, acked: false, calls: []string{"messages:d"}},
		{name: "fatal: tenant halted, retried, acked once the server takes it",
			steps: []step{{classes: []sink.Class{sink.ClassFatal}}, {classes: []sink.Class{sink.ClassNone}}},
			acked: true, halted: true,
			calls: []string{"messages:d", "messages:d"}, errors: map[string]float64{"fatal": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &scriptSink{steps: tt.steps}
			a := &recordAcker{ids: map[string][]string{}}
			bud := budget.New(1 << 20)
			m := metrics.New(prometheus.NewRegistry(), "test")
			holds := hold.NewSet(bud, m.InflightEntries.WithLabelValues("t"), time.Minute)
			b := New(Config{Tenant: "t", MaxItems: 10, MaxBytes: 1 << 20, Linger: time.Millisecond, Inflight: 1,
				WriteTimeout: time.Minute, MaxBackoff: 5 * time.Millisecond, HaltedRetry: 50 * time.Millisecond},
				s, a, tt.rescuer, m, slog.New(slog.NewTextHandler(io.Discard, nil)))
			ctx := context.Background()
			done := make(chan error, 1)
			go func() { done <- b.Run(ctx) }()
			if err := bud.Acquire(ctx, 100); err != nil {
				t.Fatal(err)
			}
			it := Item{Stream: "s", ID: "1-0", Kind: "topic", Collection: "messages", Doc: []byte("d"),
				Time: time.Now(), Hold: holds.Take("s", "1-0", 100, time.Now()), Attempts: tt.attempts}
			if err := b.Add(ctx, it); err != nil {
				t.Fatal(err)
			}
			if tt.halted {
				waitFor(t, "the tenant halted", func() bool { return b.State().Halted })
			}
			waitFor(t, "every scripted insert", func() bool {
				s.mu.Lock()
				defer s.mu.Unlock()
				return len(s.calls) >= len(tt.calls)
			})
			b.Close()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, c := range s.calls {
				got = append(got, c...)
			}
			if len(got) != len(tt.calls) {
				t.Fatalf("inserts %v, want %v", got, tt.calls)
			}
			for i := range got {
				if got[i] != tt.calls[i] {
					t.Fatalf("inserts %v, want %v", got, tt.calls)
				}
			}
			if n := len(a.ids["s"]); (n == 1) != tt.acked || n > 1 {
				t.Errorf("acked %v, want acked=%v", a.ids, tt.acked)
			}
			if b.State().Halted {
				t.Errorf("tenant still halted after a successful write")
			}
			if u := bud.Used(); u != 0 {
				t.Errorf("budget holds %d bytes, want 0: the entry did not leave the batcher", u)
			}
			if g := promtext.Value(m.InflightEntries.WithLabelValues("t")); g != 0 {
				t.Errorf("persister_inflight_entries = %v, want 0", g)
			}
			if n := holds.Len(); (n == 0) != tt.acked {
				t.Errorf("%d in-hand records, want the record gone exactly when acked (%v)", n, tt.acked)
			}
			for outcome, want := range tt.stored {
				if got := promtext.Value(m.EntriesStored.WithLabelValues("t", "messages", outcome)); got != want {
					t.Errorf("stored{outcome=%s} = %v, want %v", outcome, got, want)
				}
			}
			for class, want := range tt.errors {
				if got := promtext.Value(m.WriteErrors.WithLabelValues("t", class)); got != want {
					t.Errorf("write_errors{class=%s} = %v, want %v", class, got, want)
				}
			}
		})
	}
}
