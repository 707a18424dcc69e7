package sink

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/chronow/persister/internal/config"
)

func TestSlotBoundsWritesPerConnection(t *testing.T) {
	ctx := context.Background()
	ch := config.DefaultChronos("mongodb://127.0.0.1:1") // never contacted
	w, err := New(ctx, ch, Options{MaxConcurrentWrites: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(ctx)
	r1, err1 := w.Slot(ctx, config.DefaultTenant)
	r2, err2 := w.Slot(ctx, config.DefaultTenant)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	// A third write waits until one of the two ends.
	got := make(chan error, 1)
	go func() {
		r3, err := w.Slot(ctx, config.DefaultTenant)
		if err == nil {
			r3(0, 0, nil)
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("third slot granted while two writes are in flight (err %v)", err)
	case <-time.After(100 * time.Millisecond):
	}
	r1(0, 0, nil)
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("third slot not granted after one write ended")
	}
	r2(0, 0, nil)
	// Waiting ends with the context.
	r4, _ := w.Slot(ctx, config.DefaultTenant)
	r5, _ := w.Slot(ctx, config.DefaultTenant)
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := w.Slot(cctx, config.DefaultTenant); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("full and context ended: got %v, want DeadlineExceeded", err)
	}
	r4(0, 0, nil)
	r5(0, 0, nil)
	// Unknown tenants are not held up (Insert reports them).
	if r, err := w.Slot(ctx, "nobody"); err != nil {
		t.Errorf("unknown tenant: %v", err)
	} else {
		r(0, 0, nil)
	}
}

func TestSlotUnboundedByDefault(t *testing.T) {
	ctx := context.Background()
	w, err := New(ctx, config.DefaultChronos("mongodb://127.0.0.1:1"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(ctx)
	for range 100 {
		if _, err := w.Slot(ctx, config.DefaultTenant); err != nil {
			t.Fatal(err)
		}
	}
}
