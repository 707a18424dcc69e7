package hold

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/budget"

	"github.com/chronow/persister/internal/promtext"
)

func ids(msgs []redis.XMessage) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, m.ID)
	}
	return out
}

// newTestSet returns a set with a ttl of a minute, its budget (300 bytes
// of 1000 acquired: three holds of 100) and its in-flight gauge.
func newTestSet(t *testing.T) (*budget.Budget, prometheus.Gauge, *Set) {
	t.Helper()
	b := budget.New(1000)
	if err := b.Acquire(context.Background(), 300); err != nil {
		t.Fatal(err)
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})
	return b, g, NewSet(b, g, time.Minute)
}

// TestHoldLifecycle: a hold keeps the entry's budget share, its in-flight
// count and its in-hand record; Done gives back the first two always, and
// the record only when the entry was acknowledged (one given up keeps it
// until ttl, then the sweeper may take the entry up again).
func TestHoldLifecycle(t *testing.T) {
	b, g, s := newTestSet(t)
	t0 := time.Now()
	body := map[string]any{"payload": "1"}
	h1 := s.Take("s", "1-0", 100, t0)
	h2 := s.Take("s", "2-0", 100, t0)
	h4 := s.Take("other", "4-0", 100, t0)
	s.Take("s", "3-0", 0, t0.Add(-2*time.Minute)) // given up long ago: expired
	if g := promtext.Value(g); g != 4 {
		t.Fatalf("in flight %v, want 4", g)
	}
	claimed := []redis.XMessage{
		{ID: "1-0", Values: body}, {ID: "2-0", Values: body}, {ID: "3-0", Values: body},
		{ID: "4-0", Values: body}, {ID: "5-0", Values: body}, {ID: "6-0"}, // 6-0 trimmed
	}
	if got, want := ids(s.Filter("s", claimed, t0)), []string{"3-0", "4-0", "5-0", "6-0"}; !slices.Equal(got, want) {
		t.Fatalf("filter while 1-0 and 2-0 are in hand: %v, want %v", got, want)
	}
	h1.Done(true) // acknowledged
	if got, want := ids(s.Filter("s", claimed[:2], t0)), []string{"1-0"}; !slices.Equal(got, want) {
		t.Fatalf("after acking 1-0: %v, want %v", got, want)
	}
	h2.Done(false) // given up: the record stays until ttl
	if got := ids(s.Filter("s", claimed[1:2], t0)); len(got) != 0 {
		t.Fatalf("2-0 taken up again right after it was given up: %v", got)
	}
	if got, want := ids(s.Filter("s", claimed[1:2], t0.Add(time.Minute))), []string{"2-0"}; !slices.Equal(got, want) {
		t.Fatalf("after ttl: %v, want %v", got, want)
	}
	h4.Done(true)
	if u := b.Used(); u != 0 {
		t.Errorf("budget %d after every Done, want 0", u)
	}
	if g := promtext.Value(g); g != 1 { // 3-0's hold was never let go
		t.Errorf("in flight %v, want 1", g)
	}
	s.Prune(t0.Add(time.Minute))
	if n := s.Len(); n != 0 {
		t.Fatalf("%d records left after pruning at ttl, want 0", n)
	}
	Hold{}.Done(true) // the zero Hold holds nothing
}
