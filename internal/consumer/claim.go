package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/retry"

	"github.com/chronow/persister/metrics"
)

// ClaimerConfig tunes a Claimer.
type ClaimerConfig struct {
	Group    string
	Consumer string
	// MinIdle is how long an entry must have been pending without being
	// delivered again before it is claimed (PERSISTER_CLAIM_MIN_IDLE).
	MinIdle time.Duration
	// Interval is the time between two sweeps (PERSISTER_CLAIM_INTERVAL).
	Interval time.Duration
	// Count is the number of entries asked for per step of a sweep (claimScript).
	Count int
	// IdleDelete is how long a consumer with nothing pending must have been
	// idle before it is deleted (PERSISTER_CONSUMER_IDLE_DELETE); 0 never
	// deletes consumers.
	IdleDelete time.Duration
	// Paused reports whether this sweep should claim nothing, e.g. while the
	// tenant's writes fail: claimed entries could not be stored, and every
	// claim raises their delivery count. May be nil.
	Paused func() bool
	// OnError is told of every Redis error (for metrics); may be nil.
	OnError func(op string, err error)
}

// Claimer sweeps the group's pending entries list of every stream in a set:
// entries pending longer than MinIdle (their consumer crashed, died for
// good, or could not store them) are claimed (claimScript) and handed to
// the handler like freshly read entries; entries trimmed from the stream
// while pending reach the handler with nil Values. Consumers idle for
// IdleDelete with nothing pending are removed.
type Claimer struct {
	rdb     redis.UniversalClient
	cfg     ClaimerConfig
	streams *Streams
	handle  Handler
	log     *slog.Logger
}

// NewClaimer returns a Claimer of the streams in s.
func NewClaimer(rdb redis.UniversalClient, cfg ClaimerConfig, s *Streams, h Handler, log *slog.Logger) *Claimer {
	if cfg.Count <= 0 {
		cfg.Count = 100
	}
	return &Claimer{rdb: rdb, cfg: cfg, streams: s, handle: h, log: log}
}

// SweepStats counts what one sweep did.
type SweepStats struct {
	// Claimed is the number of entries claimed and handed to the handler.
	Claimed int
	// Trimmed is the number of pending entries found trimmed from their
	// stream (handed to the handler with nil Values).
	Trimmed int
	// ConsumersDeleted is the number of idle consumers removed.
	ConsumersDeleted int
	// Paused is true when the sweep was skipped because Paused said so.
	Paused bool
}

// Run sweeps every Interval (with a little jitter, so replicas spread out)
// until ctx is cancelled or the handler fails. Redis errors are logged and
// the next sweep tries again.
func (c *Claimer) Run(ctx context.Context) error {
	var failures retry.Failures
	for {
		d := c.cfg.Interval
		d = d - d/10 + rand.N(d/5+1)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(d):
		}
		st, err := c.Sweep(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, errHandler):
			return err
		case err != nil:
			failures.Fail(c.log, "claim sweep failed; retrying at the next interval", err)
			continue
		}
		failures.Reset()
		if st.Claimed > 0 || st.Trimmed > 0 || st.ConsumersDeleted > 0 {
			c.log.Info("claim sweep", "claimed", st.Claimed, "trimmed", st.Trimmed, "consumers_deleted", st.ConsumersDeleted)
		}
	}
}

// Sweep makes one pass over every stream: claims what is pending too long,
// then removes idle consumers with nothing pending.
func (c *Claimer) Sweep(ctx context.Context) (SweepStats, error) {
	var st SweepStats
	if c.cfg.Paused != nil && c.cfg.Paused() {
		st.Paused = true
		return st, nil
	}
	keys, _ := c.streams.Get()
	for _, k := range keys {
		if ctx.Err() != nil {
			return st, ctx.Err()
		}
		if err := c.claimStream(ctx, k, &st); err != nil {
			return st, err
		}
		if c.cfg.IdleDelete > 0 {
			n, err := c.deleteIdle(ctx, k)
			st.ConsumersDeleted += n
			if err != nil {
				return st, err
			}
		}
	}
	return st, nil
}

// claimScript is one step of a claim sweep, atomic in Redis: KEYS[1] the
// stream, ARGV[1] the group, ARGV[2] the claiming consumer, ARGV[3] the
// minimum idle time (ms), ARGV[4] where to start (an id, "(" for after it,
// or "-"), ARGV[5] how many pending entries to look at. Of the group's
// entries pending at least min-idle from the start on, it claims
// (XCLAIM) those still in the stream and returns the ids of those trimmed
// away while pending without touching them: unlike XAUTOCLAIM and XCLAIM,
// which drop such ids from the pending list as they find them (Redis 7),
// the trimmed entries stay pending on their consumer until the persister
// has decided them (stored after all, or counted as lost) and acked them,
// so a claimer killed in between leaves them to the next sweep instead of
// losing their count.
//
// Deciding costs a look in MongoDB, so one replica does it: the trimmed
// ids go only to the claimer whose name is the smallest among the
// consumers of the group active within min-idle (a live replica reads all
// the time; a dead one's idle time grows) and itself. Two replicas that
// both think so both decide (XACK tells which counts); none is left once
// the one chosen dies, since its idle time then passes min-idle.
//
// Returns {last id looked at ("" if none), claimed entries (XCLAIM's
// reply), trimmed ids for this claimer, number of pending entries looked
// at}.
var claimScript = redis.NewScript(`
local pend = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], ARGV[4], '+', ARGV[5])
local live, trimmed, last = {}, {}, ''
for _, p in ipairs(pend) do
  last = p[1]
  if #redis.call('XRANGE', KEYS[1], p[1], p[1]) > 0 then
    live[#live + 1] = p[1]
  else
    trimmed[#trimmed + 1] = p[1]
  end
end
if #trimmed > 0 then
  local decider = ARGV[2]
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
    local name, idle
    for i = 1, #c, 2 do
      if c[i] == 'name' then name = c[i + 1] elseif c[i] == 'idle' then idle = c[i + 1] end
    end
    if name and idle and idle < tonumber(ARGV[3]) and name < decider then decider = name end
  end
  if decider ~= ARGV[2] then trimmed = {} end
end
local claimed = {}
if #live > 0 then
  claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], unpack(live))
end
return {last, claimed, trimmed, #pend}
`)

// claimStream walks the stream's pending entries idle at least MinIdle,
// Count at a time (claimScript), and hands each step's claimed entries and
// trimmed ids (with nil Values) to the handler.
func (c *Claimer) claimStream(ctx context.Context, stream string, st *SweepStats) error {
	start := "-"
	for {
		// Not cancelled by a stop: a claim whose reply is lost would leave
		// the entries pending on this consumer with nobody holding them.
		res, err := claimScript.Run(context.WithoutCancel(ctx), c.rdb, []string{stream},
			c.cfg.Group, c.cfg.Consumer, c.cfg.MinIdle.Milliseconds(), start, c.cfg.Count).Slice()
		if err != nil {
			if gone(err) {
				// The stream or its group vanished; the reader recreates
				// the group when the stream is back.
				return nil
			}
			c.report(metrics.OpClaim, err)
			return fmt.Errorf("claim pending entries of %s: %w", stream, err)
		}
		last, msgs, seen, err := parseClaim(res)
		if err != nil {
			return fmt.Errorf("claim pending entries of %s: %w", stream, err)
		}
		for _, m := range msgs {
			if m.Values == nil {
				st.Trimmed++
			} else {
				st.Claimed++
			}
		}
		if len(msgs) > 0 {
			if err := c.handle(ctx, stream, msgs); err != nil {
				return fmt.Errorf("%w: %w", errHandler, err)
			}
		}
		if seen < c.cfg.Count || last == "" {
			return nil
		}
		start = "(" + last
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// parseClaim reads claimScript's reply: the last id looked at, the claimed
// entries followed by the trimmed ids (nil Values), and how many pending
// entries the step looked at.
func parseClaim(res []any) (last string, msgs []redis.XMessage, seen int, err error) {
	if len(res) != 4 {
		return "", nil, 0, fmt.Errorf("claim script: %d values in its reply, want 4", len(res))
	}
	last, _ = res[0].(string)
	claimed, _ := res[1].([]any)
	trimmed, _ := res[2].([]any)
	for _, e := range claimed {
		m, err := parseEntry(e)
		if err != nil {
			return "", nil, 0, fmt.Errorf("claim script: %w", err)
		}
		msgs = append(msgs, m)
	}
	for _, id := range trimmed {
		s, ok := id.(string)
		if !ok {
			return "", nil, 0, fmt.Errorf("claim script: trimmed id %v is not a string", id)
		}
		msgs = append(msgs, redis.XMessage{ID: s})
	}
	n, _ := res[3].(int64)
	return last, msgs, int(n), nil
}

// parseEntry reads one entry of XCLAIM's reply as a script returns it:
// {id, {field, value, ...}}.
func parseEntry(v any) (redis.XMessage, error) {
	e, ok := v.([]any)
	if !ok || len(e) != 2 {
		return redis.XMessage{}, fmt.Errorf("claimed entry %v is not {id, fields}", v)
	}
	id, ok := e[0].(string)
	if !ok {
		return redis.XMessage{}, fmt.Errorf("claimed entry id %v is not a string", e[0])
	}
	kv, _ := e[1].([]any)
	if len(kv)%2 != 0 {
		return redis.XMessage{}, fmt.Errorf("claimed entry %s: %d field values, want pairs", id, len(kv))
	}
	vals := make(map[string]any, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		f, _ := kv[i].(string)
		vals[f] = kv[i+1]
	}
	return redis.XMessage{ID: id, Values: vals}, nil
}

// deleteConsumer removes consumer ARGV[2] of group ARGV[1] on stream KEYS[1]
// if, at that instant, it has nothing pending and has been idle at least
// ARGV[3] ms. The check and the delete are one atomic step: XGROUP
// DELCONSUMER drops a consumer's pending entries, so a consumer that read
// something between a separate check and the delete would lose it. Returns
// 1 when deleted, 0 when kept, -1 when there is no such consumer.
var deleteConsumer = redis.NewScript(`
local cs = redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
for _, c in ipairs(cs) do
  local name, pending, idle
  for i = 1, #c, 2 do
    if c[i] == 'name' then name = c[i+1]
    elseif c[i] == 'pending' then pending = c[i+1]
    elseif c[i] == 'idle' then idle = c[i+1] end
  end
  if name == ARGV[2] then
    if pending == 0 and idle ~= nil and idle >= tonumber(ARGV[3]) then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
      return 1
    end
    return 0
  end
end
return -1
`)

// deleteIdle removes the consumers of stream's group, other than this one,
// that have nothing pending and were idle longer than IdleDelete.
func (c *Claimer) deleteIdle(ctx context.Context, stream string) (int, error) {
	consumers, err := c.rdb.XInfoConsumers(ctx, stream, c.cfg.Group).Result()
	if err != nil {
		if gone(err) {
			return 0, nil
		}
		c.report(metrics.OpXInfoConsumers, err)
		return 0, fmt.Errorf("xinfo consumers %s: %w", stream, err)
	}
	deleted := 0
	for _, cs := range consumers {
		if cs.Name == c.cfg.Consumer || cs.Pending > 0 || cs.Idle < c.cfg.IdleDelete {
			continue
		}
		n, err := deleteConsumer.Run(ctx, c.rdb, []string{stream},
			c.cfg.Group, cs.Name, c.cfg.IdleDelete.Milliseconds()).Int()
		if err != nil {
			if gone(err) {
				return deleted, nil
			}
			c.report("xgroup_delconsumer", err)
			return deleted, fmt.Errorf("delete consumer %q of %s: %w", cs.Name, stream, err)
		}
		if n == 1 {
			deleted++
			c.log.Info("idle consumer with nothing pending deleted", "stream", stream, "consumer", cs.Name, "idle", cs.Idle.Round(time.Second).String())
		}
	}
	return deleted, nil
}

// gone reports whether err says the stream or its group does not exist.
func gone(err error) bool {
	return IsNoGroup(err) || strings.Contains(err.Error(), "no such key")
}

func (c *Claimer) report(op string, err error) {
	if c.cfg.OnError != nil {
		c.cfg.OnError(op, err)
	}
}
