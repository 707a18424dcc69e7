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

func TestAcquireWaitsForRelease(t *testing.T) {
	b := New(100)
	ctx := context.Background()
	if err := b.Acquire(ctx, 60); err != nil {
		t.Fatal(err)
	}
	got := make(chan struct{})
	go func() {
		if err := b.Acquire(ctx, 50); err != nil {
			t.Error(err)
		}
		close(got)
	}()
	select {
	case <-got:
		t.Fatal("60+50 bytes granted on a 100-byte budget")
	case <-time.After(50 * time.Millisecond):
	}
	b.Release(60)
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("waiter not granted after release")
	}
	if u := b.Used(); u != 50 {
		t.Fatalf("used %d, want 50", u)
	}
}

func TestOversizedGrantedWhenEmpty(t *testing.T) {
	b := New(100)
	ctx := context.Background()
	if err := b.Acquire(ctx, 10); err != nil {
		t.Fatal(err)
	}
	got := make(chan struct{})
	go func() {
		if err := b.Acquire(ctx, 1000); err != nil {
			t.Error(err)
		}
		close(got)
	}()
	select {
	case <-got:
		t.Fatal("oversized request granted while bytes were held")
	case <-time.After(50 * time.Millisecond):
	}
	b.Release(10)
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("oversized request never granted on an empty budget")
	}
	if u := b.Used(); u != 1000 {
		t.Fatalf("used %d, want 1000", u)
	}
}

func TestFIFO(t *testing.T) {
	b := New(100)
	ctx := context.Background()
	if err := b.Acquire(ctx, 100); err != nil {
		t.Fatal(err)
	}
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
	if u := b.Used(); u != 100 {
		t.Fatalf("used %d, want 100", u)
	}
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
	if u := b.Used(); u != 90 {
		t.Fatalf("used %d, want 90", u)
	}
}

func TestAddSettlesAndGrants(t *testing.T) {
	b := New(100)
	ctx := context.Background()
	if err := b.Acquire(ctx, 90); err != nil {
		t.Fatal(err)
	}
	// The read returned more than reserved: held past the limit.
	b.Add(40)
	if u := b.Used(); u != 130 {
		t.Fatalf("used %d, want 130", u)
	}
	got := make(chan struct{})
	go func() {
		_ = b.Acquire(ctx, 30)
		close(got)
	}()
	b.Add(-60) // 70 held: 30 more fit
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("negative Add did not grant the waiter")
	}
	if u := b.Used(); u != 100 {
		t.Fatalf("used %d, want 100", u)
	}
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
