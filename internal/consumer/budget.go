package consumer

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// Per-entry and per-field overhead of an entry as go-redis returns it (the
// XMessage, its map, the boxed strings), on top of the strings' bytes.
const (
	entryOverhead = 64
	fieldOverhead = 48
)

// EntryBytes is what an entry read from Redis counts against the memory
// budget: its id, field names and values, and the reply's own overhead.
func EntryBytes(m redis.XMessage) int64 {
	n := entryOverhead + len(m.ID)
	for k, v := range m.Values {
		n += fieldOverhead + len(k)
		if s, ok := v.(string); ok {
			n += len(s)
		}
	}
	return int64(n)
}

// MessagesBytes is the sum of EntryBytes of msgs.
func MessagesBytes(msgs []redis.XMessage) int64 {
	var n int64
	for _, m := range msgs {
		n += EntryBytes(m)
	}
	return n
}

// minRead is the fewest entries a read asks for: the size of a read after
// one that found nothing (a blocking read of a quiet stream holds only this
// much of the budget while it waits).
const minRead = 32

// defaultEntryBytes is the size assumed before the first entry is seen.
const defaultEntryBytes = 2048

// reserve acquires the budget for the next read: r.want entries of the mean
// size seen so far, at most a quarter of the budget (so that with a small
// budget the tenants' reads still interleave instead of each waiting for an
// empty budget).
func (r *Reader) reserve(ctx context.Context) (int64, error) {
	if l := r.cfg.Budget.Limit(); l > 0 {
		r.want = int(min(int64(r.want), max(1, l/4/r.meanBytes)))
	}
	n := int64(r.want) * r.meanBytes
	if err := r.cfg.Budget.Acquire(ctx, n); err != nil {
		return 0, err
	}
	return n, nil
}

// settle charges the entries a read returned instead of its reservation,
// and sizes the next read: twice what this one returned, between minRead
// and Count, so that a stream with a backlog is read in full-size reads and
// a quiet one holds little of the budget while it waits.
func (r *Reader) settle(reserved int64, res []redis.XStream) {
	var got int
	var bytes int64
	for _, s := range res {
		got += len(s.Messages)
		bytes += MessagesBytes(s.Messages)
	}
	r.cfg.Budget.Add(bytes - reserved)
	if got > 0 {
		r.meanBytes = max(bytes/int64(got), 1)
	}
	r.want = min(max(2*got, minRead), r.cfg.Count)
}

// screen runs cfg.Screen on entries re-read from this consumer's pending
// list and releases the budget of those it dealt with.
func (r *Reader) screen(ctx context.Context, stream string, msgs []redis.XMessage) []redis.XMessage {
	if r.cfg.Screen == nil {
		return msgs
	}
	before := MessagesBytes(msgs)
	out := r.cfg.Screen(ctx, stream, msgs)
	r.cfg.Budget.Release(before - MessagesBytes(out))
	return out
}
