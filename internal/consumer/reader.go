package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/acl"
	"github.com/chronow/persister/internal/budget"
	"github.com/chronow/persister/internal/retry"

	"github.com/chronow/persister/metrics"
)

// Streams is a set of stream keys that discovery updates and readers follow.
type Streams struct {
	mu      sync.Mutex
	keys    []string
	changed chan struct{}
}

// NewStreams returns an empty set.
func NewStreams() *Streams { return &Streams{changed: make(chan struct{})} }

// Set replaces the set; readers notice at their next read.
func (s *Streams) Set(keys []string) {
	keys = slices.Clone(keys)
	slices.Sort(keys)
	s.mu.Lock()
	defer s.mu.Unlock()
	if slices.Equal(keys, s.keys) {
		return
	}
	s.keys = keys
	close(s.changed)
	s.changed = make(chan struct{})
}

// Remove drops one key (a stream that vanished); discovery adds it back if
// it appears again.
func (s *Streams) Remove(key string) {
	s.mu.Lock()
	keys := slices.DeleteFunc(slices.Clone(s.keys), func(k string) bool { return k == key })
	s.mu.Unlock()
	s.Set(keys)
}

// Get returns the current keys and a channel closed at the next change.
func (s *Streams) Get() ([]string, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys, s.changed
}

// Handler receives the entries read from one stream. Entries whose body was
// trimmed while pending have nil Values. Returning an error stops the reader.
// The handler owns the entries' share of the reader's memory budget
// (EntryBytes each): it releases what it does not hand on, and whoever it
// hands them to releases the rest when they are acknowledged or given up.
type Handler func(ctx context.Context, stream string, msgs []redis.XMessage) error

// ReaderConfig tunes a Reader.
type ReaderConfig struct {
	Group    string
	Consumer string
	// Count is the most entries wanted per read across all streams.
	Count int
	// Budget bounds the bytes of entries held across readers: each read
	// acquires its expected size first (see budget.go). nil is unlimited.
	Budget *budget.Budget
	// Block is how long a read of new entries waits.
	Block time.Duration
	// Poll and IdlePoll bound, in a Redis Cluster, the wait between two
	// reads of a stream without a backlog: a quarter of the time since it
	// last had entries, at least Poll, at most IdlePoll (see cluster.go);
	// 0 means DefaultPoll, DefaultIdlePoll.
	Poll, IdlePoll time.Duration
	// Filter keeps the keys this reader owns (when several readers share a
	// tenant); nil keeps all.
	Filter func(key string) bool
	// OnError is told of every Redis error (for metrics); may be nil.
	OnError func(op string, err error)
	// Screen, when set, sees the entries re-read from this consumer's
	// pending list before the handler and returns those to handle (the
	// others it has dealt with, e.g. dead-lettered poison: dlq.Poison).
	Screen func(ctx context.Context, stream string, msgs []redis.XMessage) []redis.XMessage
}

// Reader reads a set of streams through the group, first this consumer's own
// pending entries, then new ones.
type Reader struct {
	rdb     redis.UniversalClient
	cfg     ReaderConfig
	streams *Streams
	handle  Handler
	log     *slog.Logger

	// cursor per stream: "0" or an id while draining own pending entries,
	// ">" once drained.
	cursor map[string]string
	// slots is the read state on a Redis Cluster; nil on a single Redis.
	slots *slotReader
	// want is the number of entries the next read asks for, meanBytes the
	// mean EntryBytes seen: together the budget a read reserves.
	want      int
	meanBytes int64
}

// NewReader returns a Reader of the streams in s.
func NewReader(rdb redis.UniversalClient, cfg ReaderConfig, s *Streams, h Handler, log *slog.Logger) *Reader {
	if cfg.Count < 1 {
		cfg.Count = 1
	}
	r := &Reader{rdb: rdb, cfg: cfg, streams: s, handle: h, log: log, cursor: map[string]string{},
		want: min(minRead, cfg.Count), meanBytes: defaultEntryBytes}
	if isCluster(rdb) {
		r.slots = newSlotReader()
	}
	return r
}

// Run reads until ctx is cancelled or the handler fails. Redis errors are
// retried with backoff.
func (r *Reader) Run(ctx context.Context) error {
	failures := 0
	for ctx.Err() == nil {
		keys, changed := r.streams.Get()
		keys = r.own(keys)
		if len(keys) == 0 {
			select {
			case <-changed:
			case <-ctx.Done():
			}
			continue
		}
		if err := r.sync(ctx, keys); err != nil {
			r.fail(ctx, metrics.OpXGroupCreate, err, &failures)
			continue
		}
		var err error
		if r.slots != nil {
			err = r.readSlots(ctx, keys, changed)
		} else if pend := r.pendingKeys(keys); len(pend) > 0 {
			err = r.readPending(ctx, pend)
		} else {
			err = r.readNew(ctx, keys)
		}
		switch {
		case err == nil:
			failures = 0
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, errHandler):
			return err
		case IsNoGroup(err):
			// A stream or its group vanished (Redis restarted empty, or
			// purgeTopic): recreate groups at 0 and drain again.
			r.log.Warn("group missing on a stream; recreating at 0", "err", err)
			r.cursor = map[string]string{}
		default:
			r.fail(ctx, metrics.OpXReadGroup, err, &failures)
		}
	}
	return nil
}

var errHandler = errors.New("handler failed")

func (r *Reader) own(keys []string) []string {
	if r.cfg.Filter == nil {
		return keys
	}
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		if r.cfg.Filter(k) {
			out = append(out, k)
		}
	}
	return out
}

// sync creates the group on streams seen for the first time and starts them
// in pending-drain mode.
func (r *Reader) sync(ctx context.Context, keys []string) error {
	live := make(map[string]bool, len(keys))
	for _, k := range keys {
		live[k] = true
		if _, ok := r.cursor[k]; ok {
			continue
		}
		if err := EnsureGroup(ctx, r.rdb, k, r.cfg.Group); err != nil {
			if errors.Is(err, ErrStreamGone) {
				r.log.Info("stream vanished; dropped until discovery finds it again", "stream", k)
				r.streams.Remove(k)
				continue
			}
			return err
		}
		r.cursor[k] = "0"
	}
	for k := range r.cursor {
		if !live[k] {
			delete(r.cursor, k)
		}
	}
	return nil
}

func (r *Reader) pendingKeys(keys []string) []string {
	var out []string
	for _, k := range keys {
		if c, ok := r.cursor[k]; ok && c != ">" {
			out = append(out, k)
		}
	}
	return out
}

func (r *Reader) perStream(n int) int64 {
	c := r.want / n
	if c < 1 {
		c = 1
	}
	return int64(c)
}

// readPending re-reads this consumer's own pending entries (left by a crash
// or a failed write) from each stream's cursor, without blocking.
func (r *Reader) readPending(ctx context.Context, keys []string) error {
	args := make([]string, 0, 2*len(keys))
	args = append(args, keys...)
	for _, k := range keys {
		args = append(args, r.cursor[k])
	}
	reserved, err := r.reserve(ctx)
	if err != nil {
		return err
	}
	// Not cancelled by a stop: a read cancelled after Redis delivered its
	// entries would leave them pending on this consumer without anyone
	// holding them. It is short (no BLOCK; bounded by the read timeout).
	res, err := r.rdb.XReadGroup(context.WithoutCancel(ctx), &redis.XReadGroupArgs{
		Group: r.cfg.Group, Consumer: r.cfg.Consumer, Streams: args,
		Count: r.perStream(len(keys)), Block: -1,
	}).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		r.cfg.Budget.Release(reserved)
		return err
	}
	r.settle(reserved, res)
	got := map[string]bool{}
	for _, s := range res {
		if len(s.Messages) == 0 {
			continue
		}
		got[s.Stream] = true
		r.cursor[s.Stream] = s.Messages[len(s.Messages)-1].ID
		msgs := r.screen(ctx, s.Stream, s.Messages)
		if len(msgs) == 0 {
			continue
		}
		if err := r.handle(ctx, s.Stream, msgs); err != nil {
			return fmt.Errorf("%w: %w", errHandler, err)
		}
	}
	for _, k := range keys {
		if !got[k] {
			if r.cursor[k] != "0" {
				r.log.Debug("own pending entries drained", "stream", k)
			}
			r.cursor[k] = ">"
		}
	}
	return nil
}

// readNew reads entries never delivered to the group, blocking up to Block.
func (r *Reader) readNew(ctx context.Context, keys []string) error {
	args := make([]string, 0, 2*len(keys))
	args = append(args, keys...)
	for range keys {
		args = append(args, ">")
	}
	reserved, err := r.reserve(ctx)
	if err != nil {
		return err
	}
	// Not cancelled by a stop (see readPending): a stop waits at most Block
	// (plus the read timeout if Redis hangs), and what this last read
	// delivered is handed on, flushed and acked like the rest.
	res, err := r.rdb.XReadGroup(context.WithoutCancel(ctx), &redis.XReadGroupArgs{
		Group: r.cfg.Group, Consumer: r.cfg.Consumer, Streams: args,
		Count: r.perStream(len(keys)), Block: r.cfg.Block,
	}).Result()
	if errors.Is(err, redis.Nil) {
		r.settle(reserved, nil)
		return nil
	}
	if err != nil {
		r.cfg.Budget.Release(reserved)
		return err
	}
	r.settle(reserved, res)
	for _, s := range res {
		if len(s.Messages) == 0 {
			continue
		}
		if err := r.handle(ctx, s.Stream, s.Messages); err != nil {
			return fmt.Errorf("%w: %w", errHandler, err)
		}
	}
	return nil
}

func (r *Reader) fail(ctx context.Context, op string, err error, failures *int) {
	*failures++
	if r.cfg.OnError != nil {
		r.cfg.OnError(op, err)
	}
	if acl.IsNoPerm(err) {
		// Not an outage: the ACL lacks a permission. Said as such, and
		// tried again only every 30s (until the operator grants it).
		if retry.Log(*failures) {
			r.log.Error("redis read refused by the ACL (NOPERM): grant the command to the persister's user (README, Security)",
				"op", op, "attempt", *failures, "err", err)
		}
		select {
		case <-time.After(30 * time.Second):
		case <-ctx.Done():
		}
		return
	}
	if retry.Log(*failures) {
		r.log.Warn("redis read failed; retrying", "op", op, "attempt", *failures, "err", err)
	}
	_ = readBackoff().Wait(ctx, *failures)
}

// readBackoff spaces the reads of a failing Redis: 200ms doubling to 6.4s.
func readBackoff() retry.Backoff {
	return retry.Backoff{Base: 200 * time.Millisecond, Max: 6400 * time.Millisecond}
}
