package dlq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/hold"
	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/message"
	"github.com/chronow/persister/internal/rescue"
	"github.com/chronow/persister/metrics"
)

// DefectPoison: the entry was delivered more than PERSISTER_MAX_DELIVERIES
// times without being stored.
const DefectPoison message.Defect = "max_deliveries_exceeded"

// suffixPoison ends the _id of a poison dead letter. Chronow's dead letters
// have _id "<ns>:<topic>:<ms>-<seq>"; a suffix after the stream id can never
// be one of those.
const suffixPoison = "#poison"

// PoisonID returns the _id of the dead letter the persister writes for an
// entry of the stream key that was delivered too often without being stored.
func PoisonID(key keyspace.Key, entryID string) string {
	return message.Identity(key.Namespace, key.Name, entryID) + "#" + string(key.Kind) + suffixPoison
}

// ReasonPoison is the persister_entries_dead_lettered_total reason of
// entries delivered too often without being stored.
const ReasonPoison = string(DefectPoison)

// Acker acknowledges entries (consumer.Acker).
type Acker = hold.Acker

// PoisonConfig tunes Poison.
type PoisonConfig struct {
	rescue.Config
	// Group is the persister's consumer group.
	Group string
	// MaxDeliveries is PERSISTER_MAX_DELIVERIES: an entry delivered more
	// often than this without being stored is poison.
	MaxDeliveries int64
}

// Poison finds entries delivered more than MaxDeliveries times (the
// delivery count of the group's pending list; XREADGROUP of pending
// entries and each XCLAIM counts one) and dead-letters them: a
// dead_letters document with the last error and the raw entry, then XACK.
// The reader's own-pending drain and the claim sweeper call Screen before
// handling what they re-read.
type Poison struct {
	cfg   PoisonConfig
	rdb   redis.Cmdable
	acker Acker
	w     *rescue.Writer
	memo  *Memo
	m     *metrics.Metrics
	log   *slog.Logger
}

// NewPoison returns a Poison. memo (may be nil) holds the last errors the
// Rescuer recorded.
func NewPoison(cfg PoisonConfig, rdb redis.Cmdable, store rescue.Store, acker Acker, memo *Memo, m *metrics.Metrics, log *slog.Logger) *Poison {
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = 3
	}
	w := rescue.NewWriter(store, cfg.WriteTimeout, cfg.Attempts, log)
	return &Poison{cfg: cfg, rdb: rdb, acker: acker, w: w, memo: memo, m: m, log: log}
}

// Check returns, for the ids of stream whose delivery count exceeds
// MaxDeliveries, that count. Ids no longer pending are left out.
func (p *Poison) Check(ctx context.Context, stream string, ids []string) (map[string]int64, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	cmds := make([]*redis.XPendingExtCmd, len(ids))
	_, err := p.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = pipe.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: stream, Group: p.cfg.Group, Start: id, End: id, Count: 1})
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("xpending %s: %w", stream, err)
	}
	out := map[string]int64{}
	for i, c := range cmds {
		for _, pe := range c.Val() {
			if pe.ID == ids[i] && pe.RetryCount > p.cfg.MaxDeliveries {
				out[pe.ID] = pe.RetryCount
			}
		}
	}
	return out, nil
}

// Screen dead-letters and acknowledges the poison among msgs (re-read from
// stream's pending list) and returns the others, to be handled as usual.
// Entries with a nil body (trimmed) are returned as they are. When Redis or
// the database fails, nothing is dead-lettered now: the entries without a
// known count are returned, the poison ones stay pending for next time.
func (p *Poison) Screen(ctx context.Context, stream string, msgs []redis.XMessage) []redis.XMessage {
	ids := make([]string, 0, len(msgs))
	for _, m := range msgs {
		if m.Values != nil {
			ids = append(ids, m.ID)
		}
	}
	poisoned, err := p.Check(ctx, stream, ids)
	if err != nil {
		p.log.Warn("delivery counts unavailable; handling re-read entries as usual", "stream", stream, "err", err)
		return msgs
	}
	if len(poisoned) == 0 {
		return msgs
	}
	rest := make([]redis.XMessage, 0, len(msgs))
	var bad []redis.XMessage
	for _, m := range msgs {
		if _, ok := poisoned[m.ID]; ok {
			bad = append(bad, m)
		} else {
			rest = append(rest, m)
		}
	}
	if err := p.deadLetter(ctx, stream, bad, poisoned); err != nil {
		p.log.Error("poison entries could not be dead-lettered; left pending", "stream", stream, "count", len(bad), "first_id", bad[0].ID, "err", err)
	}
	return rest
}

// deadLetter stores one dead letter per poison entry (unless its usual
// document is already stored: then it only needed the ack) and acks them.
func (p *Poison) deadLetter(ctx context.Context, stream string, msgs []redis.XMessage, deliveries map[string]int64) error {
	key, err := p.cfg.Layout.Parse(stream)
	if err != nil {
		return err
	}
	coll := rescue.Collection(key.Kind)
	now := time.Now()
	var docs [][]byte
	var acked []string
	var stored []string
	for _, msg := range msgs {
		found, err := p.w.Stored(ctx, key.Tenant, coll, message.Identity(key.Namespace, key.Name, msg.ID))
		if err != nil {
			return err
		}
		if found {
			stored = append(stored, msg.ID)
			acked = append(acked, msg.ID)
			continue
		}
		last, ok := p.memo.Last(stream, msg.ID)
		if !ok {
			last = "no error recorded by this process (it may have restarted while the entry was pending)"
		}
		n := deliveries[msg.ID]
		doc, err := p.w.DeadLetter(ctx, rescue.DeadLetter{
			ID: PoisonID(key, msg.ID), Key: key, Stream: stream, Msg: msg, Defect: DefectPoison,
			Reason: fmt.Sprintf("persister: not stored after %d deliveries (PERSISTER_MAX_DELIVERIES=%d)", n-1, p.cfg.MaxDeliveries),
			Error:  last, Deliveries: n - 1, Now: now,
		})
		if err != nil {
			return err
		}
		docs = append(docs, doc)
		acked = append(acked, msg.ID)
	}
	if len(docs) > 0 {
		if err := p.w.Insert(ctx, key.Tenant, config.CollDeadLetters, docs); err != nil {
			return err
		}
	}
	outs := make([]hold.Out, len(acked))
	for i, id := range acked {
		outs[i] = hold.Out{Stream: stream, ID: id} // screened before they were taken: no hold
	}
	if _, err := hold.Leave(ctx, p.acker, outs, hold.Acked); err != nil {
		return fmt.Errorf("ack: %w", err)
	}
	kind := string(key.Kind)
	p.m.Acked.WithLabelValues(key.Tenant, kind).Add(float64(len(acked)))
	if n := len(acked) - len(stored); n > 0 {
		p.m.DeadLettered.WithLabelValues(key.Tenant, ReasonPoison).Add(float64(n))
		p.log.Warn("poison entries dead-lettered and acknowledged", "stream", stream, "count", n,
			"first_id", msgs[0].ID, "max_deliveries", p.cfg.MaxDeliveries)
	}
	if len(stored) > 0 {
		p.log.Info("entries delivered too often were already stored; acknowledged", "stream", stream, "count", len(stored), "first_id", stored[0])
	}
	return nil
}
