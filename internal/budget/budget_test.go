package budget

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestNilIsUnlimited(t *testing.T) {
	var b *Budget = New(0)
	if b != nil {
		t.Fatal("New(0) should be unlimited (nil)")
	}
	if err := b.Acquire(context.Background(), 1<<40); err != nil {
		t.Fatal(err)
	}
	b.Release(5)
	b.Add(7)
	if b.Used() != 0 || b.Limit() != 0 {
		t.Fatalf("nil budget used %d limit %d", b.Used(), b.Limit())
	}
}

// A request that does not fit waits until a release makes room: one that
// fits the rest, or an oversized one once the budget is empty.
func TestWaiterGrantedOnRelease(t *testing.T) {
	for _, tc := range []struct {
		name              string
		held, want        int64
		early, notGranted string
	}{
		{"AcquireWaitsForRelease", 60, 50, "60+50 bytes granted on a 100-byte budget", "waiter not granted after release"},
		{"OversizedGrantedWhenEmpty", 10, 1000, "oversized request granted while bytes were held", "oversized request never granted on an empty budget"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, ctx := holding(t, 100, tc.held)
			got := make(chan struct{})
			go func() {
				if err := b.Acquire(ctx, tc.want); err != nil {
					t.Error(err)
				}
				close(got)
			}()
			select {
			case <-got:
				t.Fatal(tc.early)
			case <-time.After(50 * time.Millisecond):
			}
			b.Release(tc.held)
			granted(t, got, tc.notGranted)
			wantUsed(t, b, tc.want)
		})
	}
}

// holding returns a budget of limit bytes with n of them acquired.
func holding(t *testing.T, limit, n int64) (*Budget, context.Context) {
	t.Helper()
	b := New(limit)
	ctx := context.Background()
	if err := b.Acquire(ctx, n); err != nil {
		t.Fatal(err)
	}
	return b, ctx
}

// granted waits up to 5s for got to be closed; msg says what failed.
func granted(t *testing.T, got <-chan struct{}, msg string) {
	t.Helper()
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal(msg)
	}
}

// wantUsed fails the test unless b holds want bytes.
func wantUsed(t *testing.T, b *Budget, want int64) {
	t.Helper()
	if u := b.Used(); u != want {
		t.Fatalf("used %d, want %d", u, want)
	}
}

func TestFIFO(t *testing.T) {
	b, ctx := holding(t, 100, 100)
	order := make(chan int, 3)
	var wg sync.WaitGroup
	for i, n := range []int64{80, 10, 10} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := b.Acquire(ctx, n); err != nil {
				t.Error(err)
			}
			order <- i
		}()
		// Queue them in this order.
		deadline := time.Now().Add(5 * time.Second)
		for {
			b.mu.Lock()
			q := len(b.waiters)
			b.mu.Unlock()
			if q == i+1 || time.Now().After(deadline) {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	// 80 must go first even though 10 would fit earlier: releasing 20
	// grants nobody (80 waits at the head).
	b.Release(20)
	select {
	case i := <-order:
		t.Fatalf("waiter %d overtook the head of the queue", i)
	case <-time.After(50 * time.Millisecond):
	}
	// 60 more free: the head (80) fits, the 10s behind it do not.
	b.Release(60)
	select {
	case i := <-order:
		if i != 0 {
			t.Fatalf("waiter %d granted first, want the 80-byte head", i)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("head not granted")
	}
	select {
	case i := <-order:
		t.Fatalf("waiter %d granted beyond the budget", i)
	case <-time.After(50 * time.Millisecond):
	}
	b.Release(20)
	wg.Wait()
	wantUsed(t, b, 100)
}

func TestAcquireCancelled(t *testing.T) {
	b := New(100)
	if err := b.Acquire(context.Background(), 100); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := b.Acquire(ctx, 10); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want deadline exceeded", err)
	}
	// The cancelled waiter left the queue: a later small request that
	// fits is granted at once after a release.
	b.Release(50)
	if err := b.Acquire(context.Background(), 40); err != nil {
		t.Fatal(err)
	}
	wantUsed(t, b, 90)
}

func TestAddSettlesAndGrants(t *testing.T) {
	b, ctx := holding(t, 100, 90)
	// The read returned more than reserved: held past the limit.
	b.Add(40)
	wantUsed(t, b, 130)
	got := make(chan struct{})
	go func() {
		_ = b.Acquire(ctx, 30)
		close(got)
	}()
	b.Add(-60) // 70 held: 30 more fit
	granted(t, got, "negative Add did not grant the waiter")
	wantUsed(t, b, 100)
}

func TestConcurrentNeverOverLimit(t *testing.T) {
	const limit = 1000
	b := New(limit)
	ctx := context.Background()
	var wg sync.WaitGroup
	var mu sync.Mutex
	held, peak := int64(0), int64(0)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				n := int64(1 + (w*31+i*17)%300)
				if err := b.Acquire(ctx, n); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				held += n
				peak = max(peak, held)
				mu.Unlock()
				mu.Lock()
				held -= n
				mu.Unlock()
				b.Release(n)
			}
		}()
	}
	wg.Wait()
	if peak > limit {
		t.Fatalf("peak %d bytes held on a %d-byte budget", peak, limit)
	}
	if u := b.Used(); u != 0 {
		t.Fatalf("used %d after every release, want 0", u)
	}
}
