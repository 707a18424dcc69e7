// Package hold keeps account of the entries a tenant pipeline holds in
// hand (read from Redis, handed on to be stored, not yet let go) and is
// their one way out: Leave.
//
// An entry in hand holds three things: its share of the memory budget
// (PERSISTER_MAX_INFLIGHT_BYTES), its count in persister_inflight_entries,
// and its in-hand record, which keeps the claim sweeper from handing the
// same entry on a second time while it is being written. Every entry a
// pipeline read leaves through Leave, whichever path it took (stored,
// duplicate, rescued, dead-lettered as poison, trimmed while pending, or
// given up at a stop): Leave sends the XACK when the entry is done with
// and lets go of its hold (Hold.Done) in the same call.
package hold

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/budget"
)

// Set is one tenant's entries in hand.
type Set struct {
	budget *budget.Budget
	gauge  prometheus.Gauge
	// ttl is how long the record of an entry given up without an ack is
	// kept: the sweeper then takes the entry up again (and poison
	// handling sees it).
	ttl time.Duration

	mu  sync.Mutex
	ids map[key]time.Time // -> when taken
}

type key struct{ stream, id string }

// NewSet returns an empty set; b (may be nil) is the budget the entries'
// charges go back to, gauge the tenant's persister_inflight_entries.
func NewSet(b *budget.Budget, gauge prometheus.Gauge, ttl time.Duration) *Set {
	return &Set{budget: b, gauge: gauge, ttl: ttl, ids: map[key]time.Time{}}
}

// Hold is one entry in hand. The zero Hold holds nothing (replay, tests).
type Hold struct {
	set        *Set
	stream, id string
	charge     int64
}

// Take records an entry handed on at now, with its charge: bytes of the
// budget already acquired for it, which Done gives back.
func (s *Set) Take(stream, id string, charge int64, now time.Time) Hold {
	s.mu.Lock()
	s.ids[key{stream, id}] = now
	s.mu.Unlock()
	s.gauge.Inc()
	return Hold{set: s, stream: stream, id: id, charge: charge}
}

// Done lets go of the entry: its budget share and its in-flight count, and
// its in-hand record when it was acknowledged (acked=false keeps the record
// until ttl, so the sweeper does not take the entry up again at once).
// Call it exactly once per Take.
func (h Hold) Done(acked bool) {
	s := h.set
	if s == nil {
		return
	}
	if acked {
		s.mu.Lock()
		delete(s.ids, key{h.stream, h.id})
		s.mu.Unlock()
	}
	s.gauge.Dec()
	s.budget.Release(h.charge)
}

// Filter drops from msgs (claimed from stream) the entries still in hand,
// and forgets the expired records. Entries with nil Values (trimmed) are
// kept.
func (s *Set) Filter(stream string, msgs []redis.XMessage, now time.Time) []redis.XMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	keep := msgs[:0:0]
	for _, m := range msgs {
		k := key{stream, m.ID}
		at, held := s.ids[k]
		if held && now.Sub(at) >= s.ttl {
			delete(s.ids, k)
			held = false
		}
		if held && m.Values != nil {
			continue
		}
		keep = append(keep, m)
	}
	return keep
}

// Prune forgets the records older than ttl (entries given up without an
// ack).
func (s *Set) Prune(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, at := range s.ids {
		if now.Sub(at) >= s.ttl {
			delete(s.ids, k)
		}
	}
}

// Len returns the number of in-hand records.
func (s *Set) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ids)
}
