// Package lag measures each stream's lag, pending count, oldest unstored age
// and unseen trims for the persister's consumer group.
//
// One Collector runs per daemon. Every Interval it runs a Lua script on each
// consumed stream (pipelined; a cluster client splits pipelines by slot)
// that reads XINFO STREAM, XINFO GROUPS and XPENDING atomically, counts the
// entries after the group's last-delivered-id (bounded), and detects entries
// that were trimmed before the group saw them. Such entries are counted in
// persister_entries_lost_total{cause="trimmed_before_read"} and the group's
// entries-read counter is corrected in the same atomic step, so a loss is
// counted once across passes, restarts and replicas: sum() over replicas is
// the true total. The gauges (lag, pending, oldest age) describe shared
// Redis state: every replica reports the same values, so dashboards take
// max() over replicas, not sum().
package lag

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/retry"
	"github.com/chronow/persister/metrics"
)

// DefaultCountCap is how many entries a pass walks at most, per stream, to
// count its lag exactly.
const DefaultCountCap = 1000

// Lister returns the consumed stream keys by tenant, as discovery last saw
// them.
type Lister func() map[string][]string

// Config tunes a Collector.
type Config struct {
	Group    string
	Layout   keyspace.Layout
	Interval time.Duration
	// Kinds are exported as 0 for every listed tenant even when it has no
	// stream of that kind, so alerts see a series rather than nothing.
	Kinds []string
	// CountCap bounds the entries walked per stream (DefaultCountCap if 0).
	CountCap int
	// TopStreams, when > 0, exports lag and oldest age with a stream label
	// for at most this many streams: those with entries not yet stored,
	// the oldest first. 0 keeps the labels to tenant and kind.
	TopStreams int
}

// Collector refreshes the stream-level gauges.
type Collector struct {
	cfg       Config
	ms        *Measurer
	list      Lister
	m         *metrics.Metrics
	log       *slog.Logger
	collected prometheus.Gauge
	topLag    *prometheus.GaugeVec // nil unless TopStreams > 0
	topAge    *prometheus.GaugeVec

	// shown and topShown hold the label sets of the last pass; owned by
	// the goroutine calling Collect.
	shown    map[series]bool
	topShown map[topKey]bool
}

type topKey struct{ tenant, kind, stream string }

type series struct{ tenant, kind string }

type totals struct {
	lag, pending int64
	age          time.Duration
}

// New returns a Collector; with TopStreams it registers the per-stream
// gauges on reg.
func New(rdb redis.UniversalClient, cfg Config, list Lister, m *metrics.Metrics, reg prometheus.Registerer, log *slog.Logger) *Collector {
	if cfg.CountCap <= 0 {
		cfg.CountCap = DefaultCountCap
	}
	c := &Collector{
		cfg:       cfg,
		ms:        NewMeasurer(rdb, cfg.Group, cfg.CountCap, true),
		list:      list,
		m:         m,
		log:       log,
		collected: m.LagCollected,
		shown:     map[series]bool{},
		topShown:  map[topKey]bool{},
	}
	if cfg.TopStreams > 0 {
		top := metrics.RegisterTopStreams(reg)
		c.topLag, c.topAge = top.Lag, top.Age
	}
	return c
}

// Run collects now and then every Interval until ctx ends. Failed passes are
// counted in persister_redis_errors_total{op="lag"} and logged (the first,
// then every tenth); the gauges keep their last measured values.
func (c *Collector) Run(ctx context.Context) error {
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	var failures retry.Failures
	for {
		if err := c.Collect(ctx); err != nil && ctx.Err() == nil {
			failures.Fail(c.log, "lag measurement failed; gauges keep their last values", err)
		} else if err == nil {
			if n := failures.Reset(); n > 0 {
				c.log.Info("lag measurement recovered", "after_failures", n)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Collect runs one pass over every listed stream and updates the gauges. A
// (tenant, kind) pair with a stream that could not be measured keeps its
// previous values. Losses found are counted even when other streams fail.
func (c *Collector) Collect(ctx context.Context) error {
	byTenant := c.list()
	var keys []string
	var refs []series
	agg := map[series]*totals{}
	for tenant, ks := range byTenant {
		for _, kind := range c.cfg.Kinds {
			agg[series{tenant, kind}] = &totals{}
		}
		for _, k := range ks {
			key, err := c.cfg.Layout.Parse(k)
			if err != nil {
				continue // discovery only lists parsable keys
			}
			keys = append(keys, k)
			refs = append(refs, series{tenant, string(key.Kind)})
		}
	}
	pctx, cancel := context.WithTimeout(ctx, max(c.cfg.Interval, 5*time.Second))
	defer cancel()
	res, errs := c.ms.Measure(pctx, keys)

	failed := map[series]bool{}
	var top []topEntry
	var firstErr error
	nerr := 0
	for i, s := range refs {
		if errs[i] != nil {
			failed[s] = true
			nerr++
			if firstErr == nil {
				firstErr = errs[i]
			}
			continue
		}
		r := res[i]
		if r.Lost > 0 {
			c.m.Lost.WithLabelValues(s.tenant, metrics.CauseTrimmedUnread).Add(float64(r.Lost))
			c.log.Warn("entries were removed from the stream before the persister read them; counted as lost",
				"tenant", s.tenant, "stream", r.Stream, "count", r.Lost,
				"after_id", r.LastDelivered, "next_id", r.NextID)
		}
		t := agg[s]
		if t == nil {
			t = &totals{}
			agg[s] = t
		}
		if r.Status == StatusGone {
			continue
		}
		t.lag += r.Lag
		t.pending += r.Pending
		t.age = max(t.age, r.Age())
		if c.topLag != nil && r.Lag+r.Pending > 0 {
			top = append(top, topEntry{topKey{s.tenant, s.kind, r.Stream}, r})
		}
	}
	if c.topLag != nil {
		c.setTop(top, failed)
	}
	for s, t := range agg {
		if failed[s] {
			continue
		}
		c.m.StreamLag.WithLabelValues(s.tenant, s.kind).Set(float64(t.lag))
		c.m.StreamPending.WithLabelValues(s.tenant, s.kind).Set(float64(t.pending))
		c.m.OldestUnackedAge.WithLabelValues(s.tenant, s.kind).Set(t.age.Seconds())
	}
	for s := range c.shown {
		if _, ok := agg[s]; !ok {
			c.m.StreamLag.DeleteLabelValues(s.tenant, s.kind)
			c.m.StreamPending.DeleteLabelValues(s.tenant, s.kind)
			c.m.OldestUnackedAge.DeleteLabelValues(s.tenant, s.kind)
		}
	}
	c.shown = make(map[series]bool, len(agg))
	for s := range agg {
		c.shown[s] = true
	}
	if nerr > 0 {
		c.m.RedisErrors.WithLabelValues(metrics.OpLag).Add(float64(nerr))
		return fmt.Errorf("%d of %d streams not measured: %w", nerr, len(keys), firstErr)
	}
	c.collected.SetToCurrentTime()
	return nil
}

type topEntry struct {
	key topKey
	m   Measurement
}

// setTop exports the TopStreams streams with the oldest unstored entries
// (then the largest backlog) and removes the series of streams that left
// the top, unless their (tenant, kind) could not be measured this pass.
func (c *Collector) setTop(top []topEntry, failed map[series]bool) {
	slices.SortFunc(top, func(a, b topEntry) int {
		if d := cmp.Compare(b.m.Age(), a.m.Age()); d != 0 {
			return d
		}
		if d := cmp.Compare(b.m.Lag+b.m.Pending, a.m.Lag+a.m.Pending); d != 0 {
			return d
		}
		return cmp.Compare(a.key.stream, b.key.stream)
	})
	top = top[:min(len(top), c.cfg.TopStreams)]
	now := make(map[topKey]bool, len(top))
	for _, e := range top {
		now[e.key] = true
		c.topLag.WithLabelValues(e.key.tenant, e.key.kind, e.key.stream).Set(float64(e.m.Lag))
		c.topAge.WithLabelValues(e.key.tenant, e.key.kind, e.key.stream).Set(e.m.Age().Seconds())
	}
	for k := range c.topShown {
		if now[k] {
			continue
		}
		if failed[series{k.tenant, k.kind}] {
			now[k] = true // keep it until it can be measured again
			continue
		}
		c.topLag.DeleteLabelValues(k.tenant, k.kind, k.stream)
		c.topAge.DeleteLabelValues(k.tenant, k.kind, k.stream)
	}
	c.topShown = now
}
