// Package pipeline is one tenant's way from Redis to MongoDB: its readers
// and claim sweeper, the decoding of entries, their holds, and its batcher.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/mongo"
	"golang.org/x/sync/errgroup"

	"github.com/chronow/persister/internal/batch"
	"github.com/chronow/persister/internal/budget"
	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/consumer"
	"github.com/chronow/persister/internal/entry"
	"github.com/chronow/persister/internal/hold"
	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/message"
	"github.com/chronow/persister/metrics"
)

// Deps is what a tenant pipeline is built from: the daemon's shared parts
// and settings.
type Deps struct {
	Tenant   string
	Layout   keyspace.Layout
	Settings config.Persister
	RDB      redis.UniversalClient
	// Store writes the documents (batch.Sink, with write slots) and is
	// asked about trimmed entries (Database): sink.Writer.
	Store interface {
		batch.Sink
		Database(tenant string) (*mongo.Database, error)
	}
	Acker    *consumer.Acker
	Rescuer  batch.Rescuer
	Decoders map[keyspace.Kind]entry.Decoder
	// Screen dead-letters the poison among re-read entries (dlq.Poison).
	Screen  func(ctx context.Context, stream string, msgs []redis.XMessage) []redis.XMessage
	Budget  *budget.Budget
	Metrics *metrics.Metrics
	Log     *slog.Logger
}

// Tenant is one tenant's readers, claim sweeper, decoder and batcher.
type Tenant struct {
	tenant   string
	layout   keyspace.Layout
	streams  *consumer.Streams
	batcher  *batch.Batcher
	acker    *consumer.Acker
	decoders map[keyspace.Kind]entry.Decoder
	rdb      redis.UniversalClient
	readers  []*consumer.Reader
	claimer  *consumer.Claimer
	holds    *hold.Set   // entries handed to the batcher, not yet let go
	trims    *trimChecks // second looks for trimmed entries (trimmed.go)
	budget   *budget.Budget
	m        *metrics.Metrics
	log      *slog.Logger
}

// New builds a tenant's pipeline; nothing runs until Run.
func New(d Deps) *Tenant {
	p := d.Settings
	log := d.Log.With("tenant", d.Tenant)
	tp := &Tenant{
		tenant:   d.Tenant,
		layout:   d.Layout,
		streams:  consumer.NewStreams(),
		acker:    d.Acker,
		decoders: d.Decoders,
		rdb:      d.RDB,
		m:        d.Metrics,
		log:      log,
		holds:    hold.NewSet(d.Budget, d.Metrics.InflightEntries.WithLabelValues(d.Tenant), 3*p.ClaimMinIdle),
		budget:   d.Budget,
	}
	tp.batcher = batch.New(batch.Config{
		Tenant: d.Tenant, MaxItems: p.BatchSize, MaxBytes: p.BatchBytes, Linger: p.BatchLinger,
		Inflight: p.InflightBatches, MaxBackoff: p.RetryMaxBackoff, WriteTimeout: p.WriteTimeout,
	}, d.Store, d.Acker, d.Rescuer, d.Metrics, d.Log)
	for i := range p.Workers {
		var filter func(string) bool
		if p.Workers > 1 {
			filter = func(key string) bool {
				h := fnv.New32a()
				h.Write([]byte(key))
				return int(h.Sum32()%uint32(p.Workers)) == i
			}
		}
		tp.readers = append(tp.readers, consumer.NewReader(d.RDB, consumer.ReaderConfig{
			Group: p.Group, Consumer: p.Consumer, Count: p.BatchSize, Budget: d.Budget, Block: p.ReadBlock, Filter: filter,
			Poll: p.ClusterPoll, IdlePoll: p.ClusterIdlePoll,
			OnError: func(op string, _ error) { d.Metrics.RedisErrors.WithLabelValues(op).Inc() },
			Screen:  d.Screen,
		}, tp.streams, tp.handle, log))
	}
	tp.trims = &trimChecks{tenant: d.Tenant, dbs: d.Store, acker: d.Acker, writeTimeout: p.WriteTimeout,
		in: make(chan trimMiss, 256), m: d.Metrics, log: log, deciding: map[trimKey]bool{}}
	tp.claimer = newClaimer(d, tp)
	return tp
}

// Streams is the set of streams the tenant's readers read (discovery sets it).
func (tp *Tenant) Streams() *consumer.Streams { return tp.streams }

// State is the tenant's write health (readiness).
func (tp *Tenant) State() batch.State { return tp.batcher.State() }

// Run reads until readCtx ends, then flushes within drainCtx.
func (tp *Tenant) Run(readCtx, drainCtx context.Context) error {
	var g errgroup.Group
	g.Go(func() error { return tp.batcher.Run(drainCtx) })
	g.Go(func() error { tp.trims.run(drainCtx); return nil })
	var readers errgroup.Group
	for _, r := range tp.readers {
		readers.Go(func() error { return r.Run(readCtx) })
	}
	readers.Go(func() error { return tp.claimer.Run(readCtx) })
	err := readers.Wait()
	tp.batcher.Close()
	tp.trims.close()
	return errors.Join(err, g.Wait())
}

// handle decodes entries of one stream and hands them to the batcher. The
// entries come charged to the memory budget (consumer.Handler): each item
// handed on takes a hold on its entry's charge (hold.Set.Take), which the
// batcher lets go when the entry leaves it; the rest is released here.
func (tp *Tenant) handle(ctx context.Context, stream string, msgs []redis.XMessage) error {
	return tp.take(ctx, stream, msgs, false)
}

// take is handle for entries read (claimed false) or claimed: the two
// differ only in how entries trimmed while pending are decided (trimmed).
func (tp *Tenant) take(ctx context.Context, stream string, msgs []redis.XMessage, claimed bool) error {
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
		it, ok := tp.decode(ctx, key, dec, msg, now)
		if !ok {
			continue
		}
		it.Stream, it.ID, it.Kind = stream, msg.ID, kind
		charge := consumer.EntryBytes(msg)
		// Entries read are in hand: a stop does not drop them. Add waits
		// for the batcher, which consumes until Close (after the grace
		// period it lets them go unacknowledged, leaving them pending).
		it.Hold = tp.holds.Take(stream, msg.ID, charge, now)
		keep += charge
		if err := tp.batcher.Add(context.WithoutCancel(ctx), it); err != nil {
			// The batcher is closed (a stop): the entry stays pending.
			_, _ = hold.Leave(ctx, tp.acker, []hold.Out{{Stream: stream, ID: msg.ID, Hold: it.Hold}}, hold.GivenUp)
			return err
		}
	}
	if len(trimmed) > 0 {
		tp.trimmed(ctx, key, trimmed, now, claimed)
	}
	return nil
}

// decode builds the item of one entry, counting its defects. An entry no
// document can be built for (e.g. one over the BSON limit) goes to the
// rescuer; if even that fails it stays pending, with an error log line.
func (tp *Tenant) decode(ctx context.Context, key keyspace.Key, dec entry.Decoder, msg redis.XMessage, now time.Time) (batch.Item, bool) {
	it, defects, err := dec.Decode(key, msg, now)
	for _, d := range defects {
		tp.m.Malformed.WithLabelValues(tp.tenant, string(d)).Inc()
	}
	if err == nil {
		return it, true
	}
	if r := tp.batcher.Rescuer(); r != nil {
		if it, ok := r.RescueEntry(ctx, key, msg, err); ok {
			if it.Time.IsZero() {
				it.Time, _ = message.IDTime(msg.ID)
			}
			return it, true
		}
	}
	tp.log.Error("entry cannot be stored; left pending", "stream", key.String(), "id", msg.ID, "err", err)
	return batch.Item{}, false
}
