package daemon

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/chronow/persister/internal/batch"
	"github.com/chronow/persister/internal/budget"
	"github.com/chronow/persister/internal/consumer"
	"github.com/chronow/persister/internal/entry"
	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/message"
	"github.com/chronow/persister/metrics"
)

// tenantPipeline is one tenant's readers, decoder and batcher.
type tenantPipeline struct {
	tenant   string
	layout   keyspace.Layout
	streams  *consumer.Streams
	batcher  *batch.Batcher
	acker    *consumer.Acker
	decoders map[keyspace.Kind]entry.Decoder
	rdb      redis.UniversalClient
	readers  []*consumer.Reader
	claimer  *consumer.Claimer
	held     *inHand // entries handed to the batcher, not yet acked (claim.go)
	budget   *budget.Budget
	m        *metrics.Metrics
	log      *slog.Logger
}

func newTenantPipeline(d *Daemon, tenant string) *tenantPipeline {
	p := d.cfg.Persister
	log := d.log.With("tenant", tenant)
	tp := &tenantPipeline{
		tenant:   tenant,
		layout:   d.layout,
		streams:  consumer.NewStreams(),
		acker:    d.acker,
		decoders: d.decoders,
		rdb:      d.rdb,
		m:        d.m,
		log:      log,
		held:     newInHand(3 * p.ClaimMinIdle),
		budget:   d.budget,
	}
	tp.batcher = batch.New(batch.Config{
		Tenant: tenant, MaxItems: p.BatchSize, MaxBytes: p.BatchBytes, Linger: p.BatchLinger,
		Inflight: p.InflightBatches, MaxBackoff: p.RetryMaxBackoff, WriteTimeout: p.WriteTimeout,
		Budget: d.budget,
	}, d.sink, trackingAcker{Acker: d.acker, held: tp.held}, d.rescuer, d.m, d.log)
	for i := range p.Workers {
		var filter func(string) bool
		if p.Workers > 1 {
			filter = func(key string) bool {
				h := fnv.New32a()
				h.Write([]byte(key))
				return int(h.Sum32()%uint32(p.Workers)) == i
			}
		}
		tp.readers = append(tp.readers, consumer.NewReader(d.rdb, consumer.ReaderConfig{
			Group: p.Group, Consumer: p.Consumer, Count: p.BatchSize, Budget: d.budget, Block: p.ReadBlock, Filter: filter,
			Poll: p.ClusterPoll, IdlePoll: p.ClusterIdlePoll,
			OnError: func(op string, _ error) { d.m.RedisErrors.WithLabelValues(op).Inc() },
			Screen:  d.screen,
		}, tp.streams, tp.handle, log))
	}
	tp.claimer = newClaimer(d, tp)
	return tp
}

// run reads until readCtx ends, then flushes within drainCtx.
func (tp *tenantPipeline) run(readCtx, drainCtx context.Context) error {
	var g errgroup.Group
	g.Go(func() error { return tp.batcher.Run(drainCtx) })
	var readers errgroup.Group
	for _, r := range tp.readers {
		readers.Go(func() error { return r.Run(readCtx) })
	}
	readers.Go(func() error { return tp.claimer.Run(readCtx) })
	err := readers.Wait()
	tp.batcher.Close()
	return errors.Join(err, g.Wait())
}

// handle decodes entries of one stream and hands them to the batcher. The
// entries come charged to the memory budget (consumer.Handler): each item
// carries its entry's charge to the batcher, the rest is released here.
func (tp *tenantPipeline) handle(ctx context.Context, stream string, msgs []redis.XMessage) error {
	var keep int64 // charge handed on with items
	defer func() { tp.budget.Release(consumer.MessagesBytes(msgs) - keep) }()
	key, err := tp.layout.Parse(stream)
	if err != nil {
		return fmt.Errorf("stream %q: %w", stream, err)
	}
	dec, ok := tp.decoders[key.Kind]
	if !ok {
		return fmt.Errorf("stream %q: no decoder for kind %q", stream, key.Kind)
	}
	kind := string(key.Kind)
	tp.m.EntriesRead.WithLabelValues(tp.tenant, kind).Add(float64(len(msgs)))
	now := time.Now()
	var trimmed []string
	for _, msg := range msgs {
		if msg.Values == nil {
			trimmed = append(trimmed, msg.ID)
			continue
		}
		it, defects, err := dec.Decode(key, msg, now)
		for _, d := range defects {
			tp.m.Malformed.WithLabelValues(tp.tenant, string(d)).Inc()
		}
		if err != nil {
			if tp.rescueUndecodable(ctx, key, msg, err) {
				keep += consumer.EntryBytes(msg)
				continue
			}
			tp.log.Error("entry cannot be stored; left pending", "stream", stream, "id", msg.ID, "err", err)
			continue
		}
		it.Stream, it.ID, it.Kind = stream, msg.ID, kind
		it.Charge = consumer.EntryBytes(msg)
		// Entries read are in hand: a stop does not drop them. Add waits
		// for the batcher, which consumes until Close (after the grace
		// period it abandons, leaving them pending).
		tp.held.add(stream, msg.ID, now)
		if err := tp.batcher.Add(context.WithoutCancel(ctx), it); err != nil {
			tp.held.done(map[string][]string{stream: {msg.ID}})
			return err
		}
		keep += it.Charge
	}
	if len(trimmed) > 0 {
		tp.ackTrimmed(ctx, stream, kind, trimmed)
	}
	return nil
}

// rescueUndecodable hands an entry no document can be built for (e.g. one
// over the BSON limit) to the rescuer, when there is one.
func (tp *tenantPipeline) rescueUndecodable(ctx context.Context, key keyspace.Key, msg redis.XMessage, cause error) bool {
	r := tp.batcher.Rescuer()
	if r == nil {
		return false
	}
	it, ok := r.RescueEntry(ctx, key, msg, cause)
	if !ok {
		return false
	}
	it.Stream, it.ID, it.Kind = key.String(), msg.ID, string(key.Kind)
	it.Charge = consumer.EntryBytes(msg)
	if it.Time.IsZero() {
		it.Time, _ = message.IDTime(msg.ID)
	}
	return tp.batcher.Add(context.WithoutCancel(ctx), it) == nil
}

// ackTrimmed acknowledges pending entries whose body was trimmed away: they
// can never be stored, so they are counted as lost, never retried forever.
func (tp *tenantPipeline) ackTrimmed(ctx context.Context, stream, kind string, ids []string) {
	if err := tp.acker.Ack(ctx, map[string][]string{stream: ids}); err != nil {
		tp.log.Warn("ack of trimmed entries failed; will retry when re-read", "stream", stream, "err", err)
		return
	}
	tp.m.Lost.WithLabelValues(tp.tenant, metrics.CauseTrimmed).Add(float64(len(ids)))
	tp.log.Warn("pending entries were trimmed from the stream before they were stored; counted as lost",
		"stream", stream, "kind", kind, "count", len(ids), "first_id", ids[0], "last_id", ids[len(ids)-1])
}
