// Package retry holds the one backoff and the one log throttle that every
// retrying loop of the persister uses.
package retry

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"
)

// Backoff is exponential with jitter: attempt 1 waits about Base, each
// further attempt twice as long, up to Max; the wait is drawn uniformly in
// [d/2, d] so that retrying replicas and tenants spread out.
type Backoff struct {
	Base time.Duration
	Max  time.Duration
}

// Delay returns the wait before the given attempt (1 = the first retry).
func (b Backoff) Delay(attempt int) time.Duration {
	d := b.Base << min(max(attempt-1, 0), 30)
	if d > b.Max || d <= 0 {
		d = b.Max
	}
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d/2+1)
}

// Wait sleeps Delay(attempt), or until ctx ends (then it returns ctx.Err()).
func (b Backoff) Wait(ctx context.Context, attempt int) error {
	return Sleep(ctx, b.Delay(attempt))
}

// Sleep sleeps d, or until ctx ends (then it returns ctx.Err()). With d <= 0
// it only returns ctx.Err().
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// LogEvery is how often a failure that repeats is logged.
const LogEvery = 10

// Log says whether the n-th consecutive failure (1-based) is logged: the
// first, then every LogEvery-th, so that an outage is visible at once and
// stays visible without flooding the log.
func Log(n int) bool { return n == 1 || n%LogEvery == 0 }

// Failures counts a loop's consecutive failures and logs them under Log's
// throttle. The zero value is ready.
type Failures struct{ n int }

// Fail counts a failure and, when Log says so, logs msg at warn level with
// the attempt number, args and err. It returns the count.
func (f *Failures) Fail(log *slog.Logger, msg string, err error, args ...any) int {
	f.n++
	if Log(f.n) {
		attrs := append([]any{"attempt", f.n}, args...)
		log.Warn(msg, append(attrs, "err", err)...)
	}
	return f.n
}

// Reset ends a run of failures and returns how many there were.
func (f *Failures) Reset() int {
	n := f.n
	f.n = 0
	return n
}
