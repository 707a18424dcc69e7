package daemon

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/batch"
)

// inHand remembers the entries a tenant pipeline has handed to its batcher
// and not yet acknowledged. The claim sweeper claims every entry pending
// longer than min-idle, this process's own included; when writes are slow
// an entry still in hand can be that old. Claiming it again is harmless
// for the data (a duplicate) but doubles the write work just when MongoDB
// is struggling, and each claim counts a delivery toward poison. So claimed
// entries still in hand are not handed on a second time.
//
// Entries the batcher gives up without an ack (refused and not rescued)
// never leave the set by an ack: they expire after ttl, so the sweeper
// takes them up again (and poison handling sees them).
type inHand struct {
	ttl time.Duration

	mu  sync.Mutex
	ids map[inHandKey]time.Time // -> when handed to the batcher
}

type inHandKey struct{ stream, id string }

func newInHand(ttl time.Duration) *inHand {
	return &inHand{ttl: ttl, ids: map[inHandKey]time.Time{}}
}

// add records an entry handed to the batcher at now.
func (h *inHand) add(stream, id string, now time.Time) {
	h.mu.Lock()
	h.ids[inHandKey{stream, id}] = now
	h.mu.Unlock()
}

// done forgets acknowledged entries (or an entry Add did not take).
func (h *inHand) done(ids map[string][]string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for stream, list := range ids {
		for _, id := range list {
			delete(h.ids, inHandKey{stream, id})
		}
	}
}

// filter drops from msgs (claimed from stream) the entries still in hand,
// and forgets the expired ones. Entries with nil Values (trimmed) are kept.
func (h *inHand) filter(stream string, msgs []redis.XMessage, now time.Time) []redis.XMessage {
	h.mu.Lock()
	defer h.mu.Unlock()
	keep := msgs[:0:0]
	for _, m := range msgs {
		k := inHandKey{stream, m.ID}
		at, held := h.ids[k]
		if held && now.Sub(at) >= h.ttl {
			delete(h.ids, k)
			held = false
		}
		if held && m.Values != nil {
			continue
		}
		keep = append(keep, m)
	}
	return keep
}

// prune forgets entries older than ttl (given up without an ack).
func (h *inHand) prune(now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for k, at := range h.ids {
		if now.Sub(at) >= h.ttl {
			delete(h.ids, k)
		}
	}
}

// len returns the number of entries in hand (tests).
func (h *inHand) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.ids)
}

// trackingAcker is the batcher's Acker: it acknowledges, then forgets the
// acknowledged entries from the tenant's in-hand set.
type trackingAcker struct {
	batch.Acker
	held *inHand
}

func (a trackingAcker) Ack(ctx context.Context, ids map[string][]string) error {
	if err := a.Acker.Ack(ctx, ids); err != nil {
		return err
	}
	a.held.done(ids)
	return nil
}
