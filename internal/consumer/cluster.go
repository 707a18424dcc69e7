package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/retry"

	"github.com/chronow/persister/metrics"
)

// Defaults of the cluster poll intervals (ReaderConfig.Poll, IdlePoll).
const (
	DefaultPoll     = 50 * time.Millisecond
	DefaultIdlePoll = 500 * time.Millisecond
)

// pollTimeout bounds one pipelined poll of non-blocking reads.
const pollTimeout = time.Second

// In a Redis Cluster a multi-stream XREADGROUP may only name keys of one
// hash slot, and Chronow's keys carry no hash tags, so a tenant's streams
// lie on about as many slots as it has streams. A blocking read per slot
// would hold one connection per stream. The reader therefore polls: one
// non-blocking XREADGROUP per slot group, all due groups in one pipeline
// (go-redis sends each master its share in parallel, one round trip per
// master).
//
// When a group is due: the wait after a read is a quarter of the time since
// the group last returned an entry, at least Poll and at most IdlePoll. A
// stream whose read came back full (a backlog) or that is still re-reading
// its own pending entries is read again at once. So a busy stream is read
// as fast as the batcher takes entries; a stream with an entry every T
// waits about T/4 between reads (a few reads per entry, whatever T); a
// quiet one costs one command per IdlePoll; and an entry waits at most
// IdlePoll, and at most a quarter of the quiet before it, to be read.
//
// A reader whose streams all lie in one slot (one stream, or keys with a
// common hash tag) blocks as it does on a single Redis.
//
// A group whose read fails (its master is down or failing over) is retried
// with its own backoff while the other groups are read as usual; its
// streams restart from their own pending entries, since a read whose reply
// was lost may have delivered entries to this consumer.
type slotReader struct {
	// full is the set of streams whose last new-entry read returned the
	// whole count: more is probably waiting.
	full map[string]bool
	// slot holds the poll state of each slot read so far.
	slot map[int]*slotState
	// keys and groups cache the last BySlot.
	keys     []string
	groups   [][]string
	failures int // passes with a failed group, for log throttling
}

type slotState struct {
	next      time.Time // when the group is due
	lastEntry time.Time // when a read last returned entries
	failures  int       // consecutive failed reads
}

// quietShare is the share of a group's quiet time (since its last entry)
// the reader waits before reading it again.
const quietShare = 4

func newSlotReader() *slotReader {
	return &slotReader{full: map[string]bool{}, slot: map[int]*slotState{}}
}

// isCluster reports whether rdb is a Redis Cluster client.
func isCluster(rdb redis.UniversalClient) bool {
	_, ok := rdb.(*redis.ClusterClient)
	return ok
}

func (r *Reader) pollIntervals() (poll, idle time.Duration) {
	poll, idle = r.cfg.Poll, r.cfg.IdlePoll
	if poll <= 0 {
		poll = DefaultPoll
	}
	if idle <= 0 {
		idle = DefaultIdlePoll
	}
	return poll, max(idle, poll)
}

// readSlots makes one cluster read pass over keys (every stream's own
// pending entries from its cursor, new entries with ">"). When no group is
// due it waits for the first that is; changed ends the wait early.
func (r *Reader) readSlots(ctx context.Context, keys []string, changed <-chan struct{}) error {
	st := r.slots
	groups := st.bySlot(keys)
	urgent := func(k string) bool { return r.cursor[k] != ">" || st.full[k] }

	if len(groups) == 1 && !hasAny(keys, urgent) {
		// One slot: a blocking read costs one connection, as on one Redis.
		return r.readNew(ctx, keys)
	}

	poll, idle := r.pollIntervals()
	due, nkeys, next := st.dueGroups(groups, urgent, poll, time.Now())
	if len(due) == 0 {
		select {
		case <-time.After(time.Until(next)):
		case <-changed:
		case <-ctx.Done():
		}
		return nil
	}

	cmds, per, err := r.readGroups(ctx, due, nkeys)
	if err != nil {
		return err
	}
	failed, firstErr, err := r.handleGroups(ctx, due, cmds, per, poll, idle)
	if err != nil {
		return err
	}
	if failed == 0 {
		st.failures = 0
		return nil
	}
	if failed == len(due) && len(due) == len(groups) {
		// Nothing answered: the caller backs off (and recreates groups on
		// NOGROUP).
		return firstErr
	}
	r.someSlotsFailed(failed, len(due), firstErr)
	return nil
}

// dueGroups picks the groups a pass reads now. A pass starts when a group
// is due (or urgent) and also reads the groups due within one Poll: fewer,
// fuller passes. When none is to be read, next is the earliest time one is
// due.
func (st *slotReader) dueGroups(groups [][]string, urgent func(string) bool, poll time.Duration, now time.Time) (due [][]string, nkeys int, next time.Time) {
	start := false
	for _, g := range groups {
		s := st.state(Slot(g[0]))
		switch {
		case s.failures > 0 && now.Before(s.next):
			next = earliest(next, s.next) // backing off
			continue
		case !now.Before(s.next) || hasAny(g, urgent):
			start = true
		case now.Add(poll).Before(s.next):
			next = earliest(next, s.next)
			continue
		}
		due = append(due, g)
		nkeys += len(g)
	}
	if !start {
		for _, g := range due {
			next = earliest(next, st.state(Slot(g[0])).next)
		}
		return nil, nkeys, next
	}
	return due, nkeys, next
}

// readGroups reserves memory for the pass (which sizes it) and reads every
// due group (nkeys streams in all), at most per entries a stream, one
// non-blocking XREADGROUP per group; cmds[i] holds the reply for due[i].
func (r *Reader) readGroups(ctx context.Context, due [][]string, nkeys int) (cmds []*redis.XStreamSliceCmd, per int64, err error) {
	reserved, err := r.reserve(ctx)
	if err != nil {
		return nil, 0, err
	}
	per = r.perStream(nkeys)
	reads := make([]*redis.XReadGroupArgs, len(due))
	for i, g := range due {
		args := make([]string, 0, 2*len(g))
		args = append(args, g...)
		for _, k := range g {
			args = append(args, r.cursor[k])
		}
		reads[i] = &redis.XReadGroupArgs{Group: r.cfg.Group, Consumer: r.cfg.Consumer, Streams: args, Count: per, Block: -1}
	}
	cmds = r.pipelineByMaster(ctx, reads)
	var all []redis.XStream
	for _, c := range cmds {
		if res, err := c.Result(); err == nil {
			all = append(all, res...)
		}
	}
	r.settle(reserved, all)
	return cmds, per, nil
}

// handleGroups hands each group's reply on and schedules its next read: a
// quarter of its quiet time, at least poll and at most idle; a failed group
// backs off. It returns how many groups failed and the first failure.
func (r *Reader) handleGroups(ctx context.Context, due [][]string, cmds []*redis.XStreamSliceCmd, per int64, poll, idle time.Duration) (failed int, firstErr, err error) {
	now := time.Now()
	for i, g := range due {
		s := r.slots.state(Slot(g[0]))
		res, err := cmds[i].Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			failed++
			firstErr = firstError(firstErr, err)
			r.slotFailed(s, g, err, now)
			continue
		}
		s.failures = 0
		n, err := r.handleSlot(ctx, g, res, per)
		if err != nil {
			return failed, firstErr, err
		}
		if n > 0 {
			s.lastEntry = now
		}
		wait := idle
		if !s.lastEntry.IsZero() {
			wait = min(max(now.Sub(s.lastEntry)/quietShare, poll), idle)
		}
		s.next = now.Add(wait)
	}
	return failed, firstErr, nil
}

// someSlotsFailed reports a pass in which some groups failed and the others
// were read: OnError, and a throttled warning.
func (r *Reader) someSlotsFailed(failed, due int, firstErr error) {
	st := r.slots
	st.failures++
	if r.cfg.OnError != nil {
		r.cfg.OnError(metrics.OpXReadGroup, firstErr)
	}
	if retry.Log(st.failures) {
		r.log.Warn("cluster read failed on some slots; the others are read as usual",
			"failed_groups", failed, "groups", due, "attempt", st.failures, "err", firstErr)
	}
}

// pipelineByMaster sends cmds (cmds[i] reads group due[i]) in one
// pipeline per master, the masters in parallel. Separate pipelines keep a
// hung master from spoiling the others' replies: go-redis's cluster
// pipeline marks every command of a pipeline failed when its retry of one
// master's share runs out of time.
//
// The reads are not cancelled by a stop (as in readPending): a read
// cancelled after Redis delivered its entries would leave them pending
// with nobody holding them. They have their own short deadline instead, so
// that a hung master holds up the pass for pollTimeout, not the client's
// read timeout; a group that times out re-reads its own pending entries,
// which covers a lost reply.
func (r *Reader) pipelineByMaster(ctx context.Context, reads []*redis.XReadGroupArgs) []*redis.XStreamSliceCmd {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pollTimeout)
	defer cancel()
	byMaster := map[string][]int{}
	cc, _ := r.rdb.(*redis.ClusterClient)
	for i, a := range reads {
		addr := ""
		if cc != nil {
			if m, err := cc.MasterForKey(rctx, a.Streams[0]); err == nil {
				addr = m.Options().Addr
			}
		}
		byMaster[addr] = append(byMaster[addr], i)
	}
	cmds := make([]*redis.XStreamSliceCmd, len(reads))
	var wg sync.WaitGroup
	for _, idx := range byMaster {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = r.rdb.Pipelined(rctx, func(p redis.Pipeliner) error {
				for _, i := range idx {
					cmds[i] = p.XReadGroup(rctx, reads[i])
				}
				return nil
			})
		}()
	}
	wg.Wait()
	return cmds
}

// bySlot returns BySlot(keys), computed again only when the key set
// changed (Streams hands out the same slice until then), and drops the
// state of slots no stream lies in any more.
func (st *slotReader) bySlot(keys []string) [][]string {
	if len(keys) == len(st.keys) && len(keys) > 0 && &keys[0] == &st.keys[0] {
		return st.groups
	}
	st.keys, st.groups = keys, BySlot(keys)
	st.forget(st.groups)
	return st.groups
}

func (st *slotReader) state(slot int) *slotState {
	s := st.slot[slot]
	if s == nil {
		s = &slotState{}
		st.slot[slot] = s
	}
	return s
}

// forget drops the state of slots none of the current streams lie in.
func (st *slotReader) forget(groups [][]string) {
	if len(st.slot) <= len(groups) {
		return
	}
	live := make(map[int]bool, len(groups))
	for _, g := range groups {
		live[Slot(g[0])] = true
	}
	for s := range st.slot {
		if !live[s] {
			delete(st.slot, s)
		}
	}
}

// handleSlot hands one slot group's reply to the handler and moves the
// cursors: a stream re-reading its pending entries advances to the last id
// returned, or to ">" when none came back. It returns the number of
// entries read.
func (r *Reader) handleSlot(ctx context.Context, g []string, res []redis.XStream, per int64) (int, error) {
	got := make(map[string][]redis.XMessage, len(res))
	n := 0
	for _, s := range res {
		got[s.Stream] = s.Messages
		n += len(s.Messages)
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
			if msgs = r.screen(ctx, k, msgs); len(msgs) == 0 {
				continue
			}
		} else if int64(len(msgs)) >= per {
			r.slots.full[k] = true
		} else {
			delete(r.slots.full, k)
		}
		if len(msgs) == 0 {
			continue
		}
		if err := r.handle(ctx, k, msgs); err != nil {
			return n, fmt.Errorf("%w: %w", errHandler, err)
		}
	}
	return n, nil
}

// slotFailed backs a failed group off and makes its streams re-read their
// own pending entries (a lost reply may have delivered some); on NOGROUP
// their cursors are dropped instead, so that the next pass recreates the
// group at once.
func (r *Reader) slotFailed(s *slotState, g []string, err error, now time.Time) {
	for _, k := range g {
		delete(r.slots.full, k)
		if IsNoGroup(err) {
			delete(r.cursor, k)
		} else {
			r.cursor[k] = "0"
		}
	}
	if IsNoGroup(err) {
		s.next = now
		return
	}
	s.failures++
	s.next = now.Add(readBackoff().Delay(s.failures))
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
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
