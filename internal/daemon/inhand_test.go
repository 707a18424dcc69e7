package daemon

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

type fakeAcker struct{ err error }

func (f fakeAcker) Ack(context.Context, map[string][]string) error { return f.err }

func ids(msgs []redis.XMessage) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, m.ID)
	}
	return out
}

func TestInHandFiltersHeldEntriesUntilAckedOrExpired(t *testing.T) {
	h := newInHand(time.Minute)
	t0 := time.Now()
	body := map[string]any{"payload": "1"}
	h.add("s", "1-0", t0)
	h.add("s", "2-0", t0)
	h.add("s", "3-0", t0.Add(-2*time.Minute)) // given up long ago: expired
	h.add("other", "4-0", t0)
	claimed := []redis.XMessage{
		{ID: "1-0", Values: body}, {ID: "2-0", Values: body}, {ID: "3-0", Values: body},
		{ID: "4-0", Values: body}, {ID: "5-0", Values: body}, {ID: "6-0"}, // 6-0 trimmed
	}
	if got, want := ids(h.filter("s", claimed, t0)), []string{"3-0", "4-0", "5-0", "6-0"}; !slices.Equal(got, want) {
		t.Fatalf("filter while 1-0 and 2-0 are in hand: %v, want %v", got, want)
	}
	// An ack through the tracking acker releases them.
	a := trackingAcker{Acker: fakeAcker{}, held: h}
	if err := a.Ack(context.Background(), map[string][]string{"s": {"1-0"}}); err != nil {
		t.Fatal(err)
	}
	if got, want := ids(h.filter("s", claimed[:2], t0)), []string{"1-0"}; !slices.Equal(got, want) {
		t.Fatalf("after acking 1-0: %v, want %v", got, want)
	}
	// A failed ack releases nothing.
	a = trackingAcker{Acker: fakeAcker{err: errors.New("down")}, held: h}
	if err := a.Ack(context.Background(), map[string][]string{"s": {"2-0"}}); err == nil {
		t.Fatal("want the acker's error")
	}
	if got := ids(h.filter("s", claimed[1:2], t0)); len(got) != 0 {
		t.Fatalf("2-0 released by a failed ack: %v", got)
	}
	// Expiry: given up without an ack, taken up again after ttl.
	if got, want := ids(h.filter("s", claimed[1:2], t0.Add(time.Minute))), []string{"2-0"}; !slices.Equal(got, want) {
		t.Fatalf("after ttl: %v, want %v", got, want)
	}
	h.prune(t0.Add(time.Minute))
	if n := h.len(); n != 0 {
		t.Fatalf("%d entries left after pruning at ttl, want 0", n)
	}
}
