// Package budget bounds the bytes of stream entries the daemon holds in
// memory (read, batched or being written), across all tenants.
package budget

import (
	"context"
	"sync"
)

// Budget is a byte budget shared by the readers of every tenant: a reader
// acquires bytes before it reads, and they are released when the entries
// are acknowledged or given up. Waiters are served in order. A nil *Budget
// is unlimited: every method is a no-op.
type Budget struct {
	limit int64

	mu      sync.Mutex
	used    int64
	waiters []*waiter
}

type waiter struct {
	n     int64
	ready chan struct{}
}

// New returns a budget of limit bytes; limit <= 0 returns nil (unlimited).
func New(limit int64) *Budget {
	if limit <= 0 {
		return nil
	}
	return &Budget{limit: limit}
}

// Limit is the budget's size in bytes (0 when unlimited).
func (b *Budget) Limit() int64 {
	if b == nil {
		return 0
	}
	return b.limit
}

// Used is the number of bytes held now. It may exceed Limit by what reads
// returned beyond their reservation (see Add).
func (b *Budget) Used() int64 {
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// Acquire takes n bytes, waiting until they fit, behind earlier waiters. A
// request larger than the whole budget is granted when nothing else is held,
// so that one huge entry cannot block a reader forever. It returns ctx's
// error, holding nothing, if ctx ends first.
func (b *Budget) Acquire(ctx context.Context, n int64) error {
	if b == nil || n <= 0 {
		return nil
	}
	b.mu.Lock()
	if len(b.waiters) == 0 && b.fits(n) {
		b.used += n
		b.mu.Unlock()
		return nil
	}
	w := &waiter{n: n, ready: make(chan struct{})}
	b.waiters = append(b.waiters, w)
	b.mu.Unlock()

	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		b.mu.Lock()
		defer b.mu.Unlock()
		select {
		case <-w.ready:
			// Granted while ctx ended: give it back.
			b.used -= n
		default:
			for i, x := range b.waiters {
				if x == w {
					b.waiters = append(b.waiters[:i], b.waiters[i+1:]...)
					break
				}
			}
		}
		b.grantLocked()
		return ctx.Err()
	}
}

// Release gives back n bytes.
func (b *Budget) Release(n int64) {
	if b == nil || n == 0 {
		return
	}
	b.Add(-n)
}

// Add changes the bytes held by n without waiting: a reader settles its
// reservation with it once it knows what the read returned (n may be
// negative, or push Used past Limit for one read).
func (b *Budget) Add(n int64) {
	if b == nil || n == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used += n
	if n < 0 {
		b.grantLocked()
	}
}

func (b *Budget) fits(n int64) bool { return b.used+n <= b.limit || b.used == 0 }

// grantLocked serves waiters in order while the first one fits.
func (b *Budget) grantLocked() {
	for len(b.waiters) > 0 && b.fits(b.waiters[0].n) {
		w := b.waiters[0]
		b.waiters = b.waiters[1:]
		b.used += w.n
		close(w.ready)
	}
}
