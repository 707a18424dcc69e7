package consumer

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultPoll is how often, in a Redis Cluster, a reader polls the streams
// that had no backlog at their last read, when ReaderConfig.Poll is 0.
const DefaultPoll = 50 * time.Millisecond

// In a Redis Cluster a multi-stream XREADGROUP may only name keys of one
// hash slot, and Chronow's keys carry no hash tags, so a tenant's streams
// lie on as many slots as it has streams. A blocking read per slot would
// take one connection per stream. The reader therefore polls: one
// non-blocking XREADGROUP per slot group, all in one pipeline (go-redis
// sends each node its share in parallel, one round trip per node). Streams
// whose last read came back full (a backlog) or that are still re-reading
// their own pending entries are read again at once; the others every Poll.
// A reader whose streams all lie in one slot (one stream, or hash-tagged
// keys) blocks as it does on a single Redis.
//
// A slot group whose read fails (its master is down or failing over) is
// retried with its own backoff while the other groups are read as usual;
// its streams restart from their own pending entries, since a read whose
// reply was lost may have delivered entries to this consumer.
type slotReader struct {
	// full is the set of streams whose last new-entry read returned the
	// whole count: more is probably waiting.
	full map[string]bool
	// lastAll is when every group was last polled.
	lastAll time.Time
	// down holds the backoff of slots whose last read failed.
	down     map[int]*slotDown
	failures int // reads with a failed group, for log throttling
}

type slotDown struct {
	until    time.Time
	failures int
}

func newSlotReader() *slotReader {
	return &slotReader{full: map[string]bool{}, down: map[int]*slotDown{}}
}

// isCluster reports whether rdb is a Redis Cluster client.
func isCluster(rdb redis.UniversalClient) bool {
	_, ok := rdb.(*redis.ClusterClient)
	return ok
}

func (r *Reader) poll() time.Duration {
	if r.cfg.Poll > 0 {
		return r.cfg.Poll
	}
	return DefaultPoll
}

// readSlots makes one cluster read pass over keys (every stream's own
// pending entries from its cursor, new entries with ">"). It waits up to
// Poll when no stream needs reading at once; changed ends the wait early.
func (r *Reader) readSlots(ctx context.Context, keys []string, changed <-chan struct{}) error {
	st := r.slots
	groups := BySlot(keys)
	urgent := func(k string) bool { return r.cursor[k] != ">" || st.full[k] }

	anyUrgent := false
	for _, k := range keys {
		if urgent(k) {
			anyUrgent = true
			break
		}
	}
	if len(groups) == 1 && !anyUrgent {
		// One slot: a blocking read costs one connection, as on one Redis.
		st.lastAll = time.Now()
		return r.readNew(ctx, keys)
	}
	all := time.Since(st.lastAll) >= r.poll()
	if !anyUrgent && !all {
		select {
		case <-time.After(time.Until(st.lastAll.Add(r.poll()))):
		case <-changed:
			return nil
		case <-ctx.Done():
			return nil
		}
		all = true
	}

	now := time.Now()
	var read [][]string
	nkeys := 0
	for _, g := range groups {
		if d := st.down[Slot(g[0])]; d != nil && now.Before(d.until) {
			continue
		}
		if !all && !hasAny(g, urgent) {
			continue
		}
		read = append(read, g)
		nkeys += len(g)
	}
	if all {
		st.lastAll = now
	}
	if len(read) == 0 {
		// Every group due is backing off: wait for the nearest retry, or
		// the next poll of the others.
		return r.waitDown(ctx, changed)
	}
	per := r.perStream(nkeys)
	cmds := make([]*redis.XStreamSliceCmd, len(read))
	_, _ = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, g := range read {
			args := make([]string, 0, 2*len(g))
			args = append(args, g...)
			for _, k := range g {
				args = append(args, r.cursor[k])
			}
			cmds[i] = p.XReadGroup(ctx, &redis.XReadGroupArgs{
				Group: r.cfg.Group, Consumer: r.cfg.Consumer, Streams: args,
				Count: per, Block: -1,
			})
		}
		return nil
	})

	var firstErr error
	failed := 0
	for i, g := range read {
		res, err := cmds[i].Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			if ctx.Err() != nil {
				return nil
			}
			failed++
			firstErr = firstError(firstErr, err)
			r.slotFailed(g, err)
			continue
		}
		delete(st.down, Slot(g[0]))
		if err := r.handleSlot(ctx, g, res, per); err != nil {
			return err
		}
	}
	if failed == 0 {
		st.failures = 0
		return nil
	}
	if failed == len(read) {
		// Nothing answered: the caller backs off (and recreates groups on
		// NOGROUP).
		return firstErr
	}
	st.failures++
	if r.cfg.OnError != nil {
		r.cfg.OnError("xreadgroup", firstErr)
	}
	if st.failures == 1 || st.failures%20 == 0 {
		r.log.Warn("cluster read failed on some slots; the others are read as usual",
			"failed_groups", failed, "groups", len(read), "attempt", st.failures, "err", firstErr)
	}
	return nil
}

// handleSlot hands one slot group's reply to the handler and moves the
// cursors: a stream re-reading its pending entries advances to the last id
// returned, or to ">" when none came back.
func (r *Reader) handleSlot(ctx context.Context, g []string, res []redis.XStream, per int64) error {
	got := make(map[string][]redis.XMessage, len(res))
	for _, s := range res {
		got[s.Stream] = s.Messages
	}
	for _, k := range g {
		msgs := got[k]
		if c := r.cursor[k]; c != ">" {
			if len(msgs) == 0 {
				if c != "0" {
					r.log.Debug("own pending entries drained", "stream", k)
				}
				r.cursor[k] = ">"
				continue
			}
			r.cursor[k] = msgs[len(msgs)-1].ID
			if r.cfg.Screen != nil {
				if msgs = r.cfg.Screen(ctx, k, msgs); len(msgs) == 0 {
					continue
				}
			}
		} else {
			if int64(len(msgs)) >= per {
				r.slots.full[k] = true
			} else {
				delete(r.slots.full, k)
			}
		}
		if len(msgs) == 0 {
			continue
		}
		if err := r.handle(ctx, k, msgs); err != nil {
			return fmt.Errorf("%w: %w", errHandler, err)
		}
	}
	return nil
}

// slotFailed backs a failed group off and makes its streams re-read their
// own pending entries (a lost reply may have delivered some); on NOGROUP
// their cursors are dropped instead, so that the next pass recreates the
// group at once.
func (r *Reader) slotFailed(g []string, err error) {
	for _, k := range g {
		delete(r.slots.full, k)
		if IsNoGroup(err) {
			delete(r.cursor, k)
		} else {
			r.cursor[k] = "0"
		}
	}
	if IsNoGroup(err) {
		return
	}
	slot := Slot(g[0])
	d := r.slots.down[slot]
	if d == nil {
		d = &slotDown{}
		r.slots.down[slot] = d
	}
	d.failures++
	back := 100 * time.Millisecond << min(d.failures, 6)
	d.until = time.Now().Add(back/2 + rand.N(back/2+1))
}

// waitDown sleeps until the earliest backed-off slot may be retried, or
// the next poll of every group is due.
func (r *Reader) waitDown(ctx context.Context, changed <-chan struct{}) error {
	next := r.slots.lastAll.Add(r.poll())
	for _, d := range r.slots.down {
		if next.IsZero() || d.until.Before(next) {
			next = d.until
		}
	}
	select {
	case <-time.After(time.Until(next)):
	case <-changed:
	case <-ctx.Done():
	}
	return nil
}

func hasAny(keys []string, f func(string) bool) bool {
	for _, k := range keys {
		if f(k) {
			return true
		}
	}
	return false
}

// firstError keeps the first error, preferring NOGROUP (the caller
// recreates groups on it).
func firstError(first, err error) error {
	if first == nil || IsNoGroup(err) && !IsNoGroup(first) {
		return err
	}
	return first
}
