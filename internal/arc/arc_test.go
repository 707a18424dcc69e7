package arc

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// fakeClock is a clock the test moves.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newFake(cfg Config) (*Limiter, *fakeClock) {
	c := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	cfg.Now = c.now
	return New(cfg), c
}

// round takes every slot the limit allows (a backlog: the limit is in
// use), lets time pass as the server would with that many writes of docs
// documents in flight, and releases them all with that duration.
func round(t *testing.T, l *Limiter, c *fakeClock, docs int, took func(inflight int) time.Duration) int {
	t.Helper()
	n := l.Limit()
	toks := make([]Token, n)
	for i := range toks {
		tok, err := l.Acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		toks[i] = tok
	}
	d := took(n)
	c.advance(d)
	for _, tok := range toks {
		l.Release(tok, d, docs, nil)
	}
	return n
}

// server returns the duration of a round of full batches of 500 for a
// server whose throughput (docs/s) at each concurrency is rates[c-1]
// (the last value beyond).
func server(rates ...float64) func(int) time.Duration {
	return func(c int) time.Duration {
		r := rates[min(c, len(rates))-1]
		return time.Duration(float64(c) * 500 / r * float64(time.Second))
	}
}

func TestLimitSettlesAtTheServersBest(t *testing.T) {
	for _, tc := range []struct {
		name    string
		max     int
		rates   []float64
		settled []int // acceptable limits over the last rounds
	}{
		// FerretDB/SQLite, 2 tenants: 2 in flight is the best.
		{"ferretdb", 8, []float64{4000, 7000, 6800, 6000, 5500}, []int{2, 3}},
		// A server that scales to 8 writes.
		{"scales", 8, []float64{2000, 4000, 6000, 8000, 9500, 11000, 12500, 14000}, []int{7, 8}},
		// No gain from concurrency at all.
		{"serial", 8, []float64{5000, 5000, 5000, 5000}, []int{1, 2}},
		// The bound holds.
		{"bounded", 3, []float64{2000, 4000, 6000, 8000}, []int{3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, c := newFake(Config{Max: tc.max})
			took := server(tc.rates...)
			var seen []int
			for i := range 400 {
				n := round(t, l, c, 500, took)
				if n < 1 || n > tc.max {
					t.Fatalf("round %d: limit %d outside [1, %d]", i, n, tc.max)
				}
				if i >= 300 {
					seen = append(seen, n)
				}
			}
			counts := map[int]int{}
			for _, n := range seen {
				counts[n]++
			}
			good := 0
			for _, n := range tc.settled {
				good += counts[n]
			}
			t.Logf("limits over the last 100 rounds: %v", counts)
			if good < len(seen)*9/10 {
				t.Errorf("limits over the last 100 rounds %v, want at least 90%% in %v", counts, tc.settled)
			}
		})
	}
}

func TestFixedNeverMoves(t *testing.T) {
	l, c := newFake(Config{Max: 4, Fixed: true})
	for range 50 {
		round(t, l, c, 500, server(1000))
	}
	tok, _ := l.Acquire(context.Background())
	l.Release(tok, time.Hour, 500, errors.New("boom"))
	if got := l.Limit(); got != 4 {
		t.Errorf("fixed limit moved to %d", got)
	}
	if l.Floor() == 0 {
		t.Error("fixed limiter measured no floor")
	}
}

func TestNoRaiseWithoutDemand(t *testing.T) {
	l, c := newFake(Config{Max: 8})
	// One write at a time, never waiting: the limit of 1 is in use, so
	// it may rise to 2; from then on the limit is never reached.
	for range 200 {
		tok, err := l.Acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		c.advance(10 * time.Millisecond)
		l.Release(tok, 10*time.Millisecond, 50, nil)
	}
	if got := l.Limit(); got > 2 {
		t.Errorf("limit rose to %d with one write at a time", got)
	}
}

func TestDecreases(t *testing.T) {
	for _, tc := range []struct {
		name string
		// after the limit reached 8 on a fast server, one write reports
		// this; the limit must then be want.
		elapsed time.Duration
		err     error
		want    int
	}{
		{"server error halves", 10 * time.Millisecond, errors.New("connection reset"), 4},
		{"timeout halves", 30 * time.Second, context.DeadlineExceeded, 4},
		{"stalled write halves", 5 * time.Second, nil, 4},
		{"cancel is no measurement", 10 * time.Millisecond, context.Canceled, 8},
		{"slightly slow write alone changes nothing", 300 * time.Millisecond, nil, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, c := newFake(Config{Max: 8, Initial: 8})
			for range 5 {
				round(t, l, c, 500, func(int) time.Duration { return 100 * time.Millisecond })
			}
			toks := make([]Token, 3)
			for i := range toks {
				toks[i], _ = l.Acquire(context.Background())
			}
			c.advance(tc.elapsed)
			// Three writes of the same epoch fail or stall: one decrease.
			for _, tok := range toks {
				l.Release(tok, tc.elapsed, 500, tc.err)
			}
			if got := l.Limit(); got != tc.want {
				t.Errorf("limit %d, want %d", got, tc.want)
			}
		})
	}
}

func TestCongestedWindowLowersByDecrease(t *testing.T) {
	l, c := newFake(Config{Max: 8, Initial: 8})
	for range 5 {
		round(t, l, c, 500, func(int) time.Duration { return 100 * time.Millisecond })
	}
	// A whole window at 4 × the floor (above Tolerance, below Severe).
	round(t, l, c, 500, func(int) time.Duration { return 400 * time.Millisecond })
	round(t, l, c, 500, func(int) time.Duration { return 400 * time.Millisecond })
	if got := l.Limit(); got != 5 {
		t.Errorf("limit %d, want 5 (8 × 0.7)", got)
	}
}

func TestSmallBatchesAreJudgedAgainstTheirOwnFloor(t *testing.T) {
	l, c := newFake(Config{Max: 8, Initial: 4})
	// Full batches take 100ms, batches of 10 take 5ms: neither is slow.
	for i := range 40 {
		docs, d := 500, 100*time.Millisecond
		if i%2 == 1 {
			docs, d = 10, 5*time.Millisecond
		}
		round(t, l, c, docs, func(int) time.Duration { return d })
	}
	if got := l.Limit(); got < 4 {
		t.Errorf("limit fell to %d with writes at their floors", got)
	}
	if f := l.Floor(); f != 100*time.Millisecond {
		t.Errorf("floor %s, want the full batches' 100ms", f)
	}
}

func TestFloorAges(t *testing.T) {
	l, c := newFake(Config{Max: 4, FloorWindow: 10 * time.Second})
	tok, _ := l.Acquire(context.Background())
	l.Release(tok, 50*time.Millisecond, 500, nil)
	// The server gets slower for good: after two floor windows the old
	// floor is forgotten.
	for range 30 {
		c.advance(time.Second)
		tok, _ := l.Acquire(context.Background())
		l.Release(tok, 150*time.Millisecond, 500, nil)
	}
	if f := l.Floor(); f != 150*time.Millisecond {
		t.Errorf("floor %s, want 150ms once 50ms aged out", f)
	}
}

func TestAcquireBoundsAndOrders(t *testing.T) {
	l, _ := newFake(Config{Max: 2, Fixed: true})
	ctx := context.Background()
	a, _ := l.Acquire(ctx)
	b, _ := l.Acquire(ctx)
	order := make(chan int, 2)
	for i := range 2 {
		started := make(chan struct{})
		go func() {
			close(started)
			tok, err := l.Acquire(ctx)
			if err != nil {
				order <- -1
				return
			}
			order <- i
			l.Release(tok, 0, 0, nil)
		}()
		<-started
		waitWaiters(t, l, i+1)
	}
	select {
	case i := <-order:
		t.Fatalf("waiter %d granted beyond the limit", i)
	case <-time.After(50 * time.Millisecond):
	}
	l.Release(a, 0, 0, nil)
	if first := <-order; first != 0 {
		t.Errorf("first granted %d, want 0 (arrival order)", first)
	}
	l.Release(b, 0, 0, nil)
	<-order
	// A full limiter and an ended context: the wait fails, nothing leaks.
	x, _ := l.Acquire(ctx)
	y, _ := l.Acquire(ctx)
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := l.Acquire(cctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want DeadlineExceeded", err)
	}
	l.Release(x, 0, 0, nil)
	l.Release(y, 0, 0, nil)
	if n := l.InFlight(); n != 0 {
		t.Errorf("%d in flight after every release", n)
	}
}

func waitWaiters(t *testing.T, l *Limiter, n int) {
	t.Helper()
	for range 1000 {
		l.mu.Lock()
		got := len(l.waiters)
		l.mu.Unlock()
		if got >= n {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal(fmt.Sprintf("never %d waiters", n))
}

// A load the server keeps up with: more writes in flight buy no
// throughput (the producers set it) but cost the server nothing either,
// and cut the wait for a slot: raises are kept.
func TestRaiseKeptWhenLatencyStaysAtTheFloor(t *testing.T) {
	l, c := newFake(Config{Max: 4})
	for range 200 {
		n := round(t, l, c, 100, func(int) time.Duration { return 20 * time.Millisecond })
		// The producers' rate: 5000 docs/s whatever the limit.
		c.advance(time.Duration(n)*100*time.Second/5000 - 20*time.Millisecond)
	}
	if got := l.Limit(); got != 4 {
		t.Errorf("limit %d, want 4", got)
	}
}

func TestShortJitterIsNoStall(t *testing.T) {
	l, c := newFake(Config{Max: 4, Initial: 4})
	for range 5 {
		round(t, l, c, 10, func(int) time.Duration { return 2 * time.Millisecond })
	}
	// 20 × the floor, but 40ms: jitter of a small write, not a stall.
	tok, _ := l.Acquire(context.Background())
	l.Release(tok, 40*time.Millisecond, 10, nil)
	if got := l.Limit(); got != 4 {
		t.Errorf("limit %d after one short slow write, want 4", got)
	}
}
