package hold

import (
	"context"
	"errors"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/chronow/persister/internal/promtext"
)

// fakeAcker records the XACKs Leave sends; each answers from answer
// (stream/id -> acknowledged by this call) or fails with err.
type fakeAcker struct {
	acks   []map[string][]string // one per Ack call
	each   [][]string            // stream then ids, one per AckEach call
	answer map[string]bool
	err    error
}

func (a *fakeAcker) Ack(_ context.Context, ids map[string][]string) error {
	a.acks = append(a.acks, maps.Clone(ids))
	return a.err
}

func (a *fakeAcker) AckEach(_ context.Context, stream string, ids []string) ([]bool, error) {
	a.each = append(a.each, append([]string{stream}, ids...))
	if a.err != nil {
		return nil, a.err
	}
	out := make([]bool, len(ids))
	for i, id := range ids {
		out[i] = a.answer[stream+"/"+id]
	}
	return out, nil
}

// TestLeave: every way out lets go of every hold (budget and in-flight
// count); only an acknowledgement that succeeded forgets the in-hand
// records; Acked sends one Ack for all streams, AckedEach one per stream
// and reports each entry's answer in the order given; GivenUp sends none.
func TestLeave(t *testing.T) {
	errDown := errors.New("redis down")
	for _, tc := range []struct {
		name      string
		way       Way
		err       error
		answer    map[string]bool
		wantAcks  int
		wantEach  [][]string
		wantBools []bool
		forgotten bool // in-hand records removed
	}{
		{name: "given up", way: GivenUp},
		{name: "acked", way: Acked, wantAcks: 1, forgotten: true},
		{name: "ack failed", way: Acked, err: errDown, wantAcks: 1},
		{name: "acked each", way: AckedEach, answer: map[string]bool{"a/1-0": true, "b/3-0": true},
			wantEach: [][]string{{"a", "1-0", "2-0"}, {"b", "3-0"}}, wantBools: []bool{true, false, true}, forgotten: true},
		{name: "ack each failed", way: AckedEach, err: errDown, wantEach: [][]string{{"a", "1-0", "2-0"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, g, s := newTestSet(t)
			now := time.Now()
			outs := []Out{
				{Stream: "a", ID: "1-0", Hold: s.Take("a", "1-0", 100, now)},
				{Stream: "a", ID: "2-0", Hold: s.Take("a", "2-0", 100, now)},
				{Stream: "b", ID: "3-0", Hold: s.Take("b", "3-0", 100, now)},
			}
			a := &fakeAcker{answer: tc.answer, err: tc.err}
			got, err := Leave(context.Background(), a, outs, tc.way)
			if !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if len(a.acks) != tc.wantAcks {
				t.Errorf("%d Ack calls, want %d", len(a.acks), tc.wantAcks)
			}
			if tc.wantAcks > 0 && !slices.Equal(a.acks[0]["a"], []string{"1-0", "2-0"}) {
				t.Errorf("Ack of stream a: %v", a.acks[0]["a"])
			}
			if !slices.EqualFunc(a.each, tc.wantEach, slices.Equal) {
				t.Errorf("AckEach calls %v, want %v", a.each, tc.wantEach)
			}
			if !slices.Equal(got, tc.wantBools) {
				t.Errorf("answers %v, want %v", got, tc.wantBools)
			}
			if u, n := b.Used(), promtext.Value(g); u != 0 || n != 0 {
				t.Errorf("budget %d, in flight %v after Leave; want 0 and 0", u, n)
			}
			if n, want := s.Len(), 3; tc.forgotten {
				if n != 0 {
					t.Errorf("%d in-hand records left, want 0", n)
				}
			} else if n != want {
				t.Errorf("%d in-hand records left, want %d (kept until ttl)", n, want)
			}
		})
	}
}
