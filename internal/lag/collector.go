// Package lag measures each stream's lag, pending count, oldest unstored age
// and unseen trims for the persister's consumer group.
//
// One Collector runs per daemon. Every Interval it runs a Lua script on each
// consumed stream (pipelined; a cluster client splits pipelines by slot)
// that reads XINFO STREAM, XINFO GROUPS and XPENDING atomically, counts the
// entries after the group's last-delivered-id (bounded), and detects entries
// that were trimmed before the group saw them. Such entries are counted in
// persister_entries_lost_total{cause="trimmed_before_stored"} and the group's
// entries-read counter is corrected in the same atomic step, so a loss is
// counted once across passes, restarts and replicas: sum() over replicas is
// the true total. The gauges (lag, pending, oldest age) describe shared
// Redis state: every replica reports the same values, so dashboards take
// max() over replicas, not sum().
package lag

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/keyspace"
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
	Prefix   string
	Interval time.Duration
	// Kinds are exported as 0 for every listed tenant even when it has no
	// stream of that kind, so alerts see a series rather than nothing.
	Kinds []string
	// CountCap bounds the entries walked per stream (DefaultCountCap if 0).
	CountCap int
}

// Collector refreshes the stream-level gauges.
type Collector struct {
	cfg       Config
	ms        *Measurer
	list      Lister
	m         *metrics.Metrics
	log       *slog.Logger
	collected prometheus.Gauge

	// shown holds the label pairs set by the last pass; owned by the
	// goroutine calling Collect.
	shown map[series]bool
}

type series struct{ tenant, kind string }

type totals struct {
	lag, pending int64
	age          time.Duration
}

// New returns a Collector; it registers its own gauge
// persister_lag_collected_timestamp_seconds on reg.
func New(rdb redis.UniversalClient, cfg Config, list Lister, m *metrics.Metrics, reg prometheus.Registerer, log *slog.Logger) *Collector {
	if cfg.CountCap <= 0 {
		cfg.CountCap = DefaultCountCap
	}
	c := &Collector{
		cfg:  cfg,
		ms:   NewMeasurer(rdb, cfg.Group, cfg.CountCap, true),
		list: list,
		m:    m,
		log:  log,
		collected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "persister_lag_collected_timestamp_seconds",
			Help: "Unix time of the last pass that measured every consumed stream (lag, pending, oldest age, unseen trims).",
		}),
		shown: map[series]bool{},
	}
	reg.MustRegister(c.collected)
	return c
}

// Run collects now and then every Interval until ctx ends. Failed passes are
// counted in persister_redis_errors_total{op="lag"} and logged (the first,
// then every tenth); the gauges keep their last measured values.
func (c *Collector) Run(ctx context.Context) error {
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	failures := 0
	for {
		if err := c.Collect(ctx); err != nil && ctx.Err() == nil {
			failures++
			if failures == 1 || failures%10 == 0 {
				c.log.Warn("lag measurement failed; gauges keep their last values", "attempt", failures, "err", err)
			}
		} else if err == nil {
			if failures > 0 {
				c.log.Info("lag measurement recovered", "after_failures", failures)
			}
			failures = 0
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
			key, err := keyspace.Parse(c.cfg.Prefix, k)
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
			c.m.Lost.WithLabelValues(s.tenant, metrics.CauseTrimmed).Add(float64(r.Lost))
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
		c.m.RedisErrors.WithLabelValues("lag").Add(float64(nerr))
		return fmt.Errorf("%d of %d streams not measured: %w", nerr, len(keys), firstErr)
	}
	c.collected.SetToCurrentTime()
	return nil
}
