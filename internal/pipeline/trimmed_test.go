package pipeline

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/promtext"
	"github.com/chronow/persister/metrics"
)

// ackAnswers answers AckEach from answer (id -> this call acknowledged
// it), or fails with err (only the first call with failFirst).
type ackAnswers struct {
	answer    map[string]bool
	err       error
	failFirst bool
	calls     int
	sent      []string
}

func (a *ackAnswers) Ack(context.Context, map[string][]string) error { return a.err }

func (a *ackAnswers) AckEach(_ context.Context, _ string, ids []string) ([]bool, error) {
	a.sent = append(a.sent, ids...)
	a.calls++
	if a.err != nil && (!a.failFirst || a.calls == 1) {
		return nil, a.err
	}
	out := make([]bool, len(ids))
	for i, id := range ids {
		out[i] = a.answer[id]
	}
	return out, nil
}

func newTrimChecks(a *ackAnswers) *trimChecks {
	return &trimChecks{tenant: "acme", acker: a, writeTimeout: 1e9,
		m: metrics.New(prometheus.NewRegistry(), "test"), log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		deciding: map[trimKey]bool{}}
}

// TestTrimDecide: every decided entry is acknowledged (one XACK each);
// only the lost ones this call acknowledged are counted (another replica
// that acknowledged one first counts it); after an XACK whose answer was
// lost, the XACKs are sent again and every lost entry is counted (never
// fewer than were lost); either way the entries may be entered again.
func TestTrimDecide(t *testing.T) {
	key := keyspace.Key{Tenant: "acme", Namespace: "app", Kind: keyspace.KindTopic, Name: "orders"}
	for _, tc := range []struct {
		name        string
		stored      []string
		lost        []string
		answer      map[string]bool
		err         error
		wantCounted float64
		wantSent    int // XACKs sent
	}{
		{name: "all ours", stored: []string{"1-0"}, lost: []string{"2-0", "3-0"},
			answer: map[string]bool{"1-0": true, "2-0": true, "3-0": true}, wantCounted: 2, wantSent: 3},
		{name: "one acked elsewhere first", lost: []string{"2-0", "3-0"},
			answer: map[string]bool{"2-0": true}, wantCounted: 1, wantSent: 2},
		{name: "stored only", stored: []string{"1-0"}, answer: map[string]bool{"1-0": true}, wantSent: 1},
		{name: "answer lost", stored: []string{"1-0"}, lost: []string{"2-0", "3-0"},
			err: errors.New("i/o timeout"), wantCounted: 2, wantSent: 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &ackAnswers{answer: tc.answer, err: tc.err, failFirst: true}
			tc2 := newTrimChecks(a)
			all := append(append([]string(nil), tc.stored...), tc.lost...)
			if got := tc2.enter(key, all); !slices.Equal(got, all) {
				t.Fatalf("enter = %v, want %v", got, all)
			}
			tc2.decide(context.Background(), key, tc.stored, tc.lost)
			if len(a.sent) != tc.wantSent || !slices.Equal(a.sent[:len(all)], all) {
				t.Errorf("XACK sent for %v, want %d starting with %v", a.sent, tc.wantSent, all)
			}
			if got := promtext.Value(tc2.m.Lost.WithLabelValues("acme", metrics.CauseTrimmed)); got != tc.wantCounted {
				t.Errorf("counted %v lost, want %v", got, tc.wantCounted)
			}
			if got := tc2.enter(key, all); !slices.Equal(got, all) {
				t.Errorf("after decide, enter = %v, want %v (no longer being decided)", got, all)
			}
		})
	}
}

// TestTrimEnterOnce: an entry waiting for its decision is not queued again
// when a sweep finds it again; other streams' ids are apart.
func TestTrimEnterOnce(t *testing.T) {
	tc := newTrimChecks(&ackAnswers{})
	a := keyspace.Key{Tenant: "acme", Namespace: "app", Kind: keyspace.KindTopic, Name: "a"}
	b := keyspace.Key{Tenant: "acme", Namespace: "app", Kind: keyspace.KindTopic, Name: "b"}
	if got := tc.enter(a, []string{"1-0", "2-0"}); len(got) != 2 {
		t.Fatalf("first enter = %v", got)
	}
	if got := tc.enter(a, []string{"2-0", "3-0"}); !slices.Equal(got, []string{"3-0"}) {
		t.Errorf("second enter = %v, want [3-0]", got)
	}
	if got := tc.enter(b, []string{"2-0"}); !slices.Equal(got, []string{"2-0"}) {
		t.Errorf("other stream = %v, want [2-0]", got)
	}
	tc.leave(a.String(), []string{"2-0"})
	if got := tc.enter(a, []string{"1-0", "2-0"}); !slices.Equal(got, []string{"2-0"}) {
		t.Errorf("after leave = %v, want [2-0]", got)
	}
}
