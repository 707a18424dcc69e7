package retry

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	b := Backoff{Base: 100 * time.Millisecond, Max: time.Second}
	tests := []struct {
		attempt int
		lo, hi  time.Duration
	}{
		{0, 50 * time.Millisecond, 100 * time.Millisecond},
		{1, 50 * time.Millisecond, 100 * time.Millisecond},
		{2, 100 * time.Millisecond, 200 * time.Millisecond},
		{4, 400 * time.Millisecond, 800 * time.Millisecond},
		{5, 500 * time.Millisecond, time.Second}, // capped
		{100, 500 * time.Millisecond, time.Second},
	}
	for _, tt := range tests {
		for range 50 {
			if d := b.Delay(tt.attempt); d < tt.lo || d > tt.hi {
				t.Fatalf("Delay(%d) = %v, want in [%v, %v]", tt.attempt, d, tt.lo, tt.hi)
			}
		}
	}
	if d := (Backoff{}).Delay(3); d != 0 {
		t.Errorf("zero Backoff: %v", d)
	}
}

func TestWaitEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := (Backoff{Base: time.Hour, Max: time.Hour}).Wait(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait = %v, want context.Canceled", err)
	}
	if err := (Backoff{Base: time.Millisecond, Max: time.Millisecond}).Wait(context.Background(), 1); err != nil {
		t.Errorf("Wait = %v", err)
	}
}

func TestLog(t *testing.T) {
	var logged []int
	for n := 1; n <= 30; n++ {
		if Log(n) {
			logged = append(logged, n)
		}
	}
	if want := []int{1, 10, 20, 30}; len(logged) != len(want) || logged[1] != 10 || logged[3] != 30 {
		t.Errorf("logged %v, want %v", logged, want)
	}
}

func TestFailures(t *testing.T) {
	var buf strings.Builder
	log := slog.New(slog.NewTextHandler(&buf, nil))
	var f Failures
	for i := 1; i <= 2*LogEvery; i++ {
		if n := f.Fail(log, "down", errors.New("boom"), "k", "v"); n != i {
			t.Fatalf("Fail %d returned %d", i, n)
		}
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("logged %d lines, want 3 (1st, 10th, 20th):\n%s", len(lines), buf.String())
	}
	if want := "level=WARN msg=down attempt=10 k=v err=boom"; !strings.Contains(lines[1], want) {
		t.Errorf("line %q, want it to contain %q", lines[1], want)
	}
	if n := f.Reset(); n != 2*LogEvery {
		t.Errorf("Reset returned %d, want %d", n, 2*LogEvery)
	}
	buf.Reset()
	f.Fail(log, "down", errors.New("again"))
	if !strings.Contains(buf.String(), "attempt=1 ") {
		t.Errorf("after Reset: %q, want attempt=1", buf.String())
	}
}
