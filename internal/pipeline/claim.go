package pipeline

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/consumer"
)

// newClaimer builds the tenant's reclaim sweeper: it claims entries of the
// tenant's streams left pending longer than PERSISTER_CLAIM_MIN_IDLE (by a
// replica that died, or by this one before a restart under another name)
// and feeds them through the same decode and batch path as read entries.
//
// It pauses while the tenant's writes fail, and for one min-idle after they
// recover: claiming then would only raise the delivery counts of entries
// that cannot be stored anyway, and would re-claim the entries this process
// still holds in hand (pending on itself, idle since the outage began),
// writing each twice. Once writes have been healthy for min-idle, whatever
// is still pending that long is really stranded.
func newClaimer(d Deps, tp *Tenant) *consumer.Claimer {
	p := d.Settings
	count := min(p.BatchSize, 1000)
	var badAt time.Time // only the claimer's goroutine calls Paused
	paused := func() bool {
		if tp.batcher.State().LastErr != nil {
			badAt = time.Now()
			return true
		}
		return !badAt.IsZero() && time.Since(badAt) < p.ClaimMinIdle
	}
	return consumer.NewClaimer(d.RDB, consumer.ClaimerConfig{
		Group: p.Group, Consumer: p.Consumer,
		MinIdle: p.ClaimMinIdle, Interval: p.ClaimInterval, Count: count,
		IdleDelete: p.ConsumerIdleDelete,
		Paused:     paused,
		OnError:    func(op string, _ error) { d.Metrics.RedisErrors.WithLabelValues(op).Inc() },
	}, tp.streams, func(ctx context.Context, stream string, msgs []redis.XMessage) error {
		return tp.handleClaimed(ctx, stream, msgs, d.Screen)
	}, tp.log.With("part", "claimer"))
}

// handleClaimed drops the claimed entries this process still holds in hand
// (hold.Set: claiming them again would write each twice just when writes
// are slow, and count a delivery toward poison), counts the others, lets screen dead-letter the poison
// among them (delivered more than PERSISTER_MAX_DELIVERIES times; each
// claim counts one delivery) and hands the rest to handle. Entries with nil
// Values were trimmed while pending (they stay pending on their consumer
// until decided); take decides them at its first look (trimmed).
func (tp *Tenant) handleClaimed(ctx context.Context, stream string, msgs []redis.XMessage,
	screen func(ctx context.Context, stream string, msgs []redis.XMessage) []redis.XMessage) error {
	now := time.Now()
	tp.holds.Prune(now)
	if msgs = tp.holds.Filter(stream, msgs, now); len(msgs) == 0 {
		return nil
	}
	n := 0
	for _, m := range msgs {
		if m.Values != nil {
			n++
		}
	}
	if n > 0 {
		kind := "unknown"
		if k, err := tp.layout.Parse(stream); err == nil {
			kind = string(k.Kind)
		}
		tp.m.Claimed.WithLabelValues(tp.tenant, kind).Add(float64(n))
	}
	if screen != nil {
		if msgs = screen(ctx, stream, msgs); len(msgs) == 0 {
			return nil
		}
	}
	// Claimed entries are charged like read ones (handle releases what it
	// does not hand on); the claim waits for room, bounded by its count.
	if err := tp.budget.Acquire(ctx, consumer.MessagesBytes(msgs)); err != nil {
		return err
	}
	return tp.take(ctx, stream, msgs, true)
}
