// Package daemon wires the persister together: discovery, one pipeline per
// tenant, the HTTP endpoints, and the order in which they stop.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/chronow/persister/internal/acl"
	"github.com/chronow/persister/internal/batch"
	"github.com/chronow/persister/internal/budget"
	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/consumer"
	"github.com/chronow/persister/internal/discovery"
	"github.com/chronow/persister/internal/dlq"
	"github.com/chronow/persister/internal/entry"
	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/lag"
	"github.com/chronow/persister/internal/pipeline"
	"github.com/chronow/persister/internal/redisconn"
	"github.com/chronow/persister/internal/retry"
	"github.com/chronow/persister/internal/sharedmem"
	"github.com/chronow/persister/internal/sink"
	"github.com/chronow/persister/internal/topics"
	"github.com/chronow/persister/metrics"
)

// Daemon is the running persister.
type Daemon struct {
	cfg      *config.Config
	log      *slog.Logger
	reg      *prometheus.Registry
	m        *metrics.Metrics
	rdb      redis.UniversalClient
	sink     *sink.Writer
	acker    *consumer.Acker
	rescuer  batch.Rescuer
	poison   *dlq.Poison
	topics   *topics.Syncer
	decoders map[keyspace.Kind]entry.Decoder
	layout   keyspace.Layout // where Chronow's keys are
	tenants  map[string]*pipeline.Tenant
	// budget bounds the bytes of entries in hand across tenants.
	budget *budget.Budget

	// refusals are the commands the Redis ACL refused (NOPERM).
	refusals *acl.Refusals

	lag *lag.Collector
	sm  *sharedmem.Carrier // nil when PERSISTER_SM_ENABLED=false

	mu           sync.Mutex
	unconfigured map[string]bool // stream keys not consumed, already logged
	httpAddr     string          // bound HTTP address, once Run listens
	probeAddr    string          // bound probe address (PERSISTER_PROBE_ADDR)
}

// New builds the daemon's parts; nothing is contacted yet.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger, version string) (*Daemon, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	m := metrics.New(reg, version)
	p := cfg.Persister
	tenants := cfg.Chronos.Tenants()
	rdb, err := redisconn.New(cfg.Redis, len(tenants)*p.Workers+16)
	if err != nil {
		return nil, err
	}
	w, err := sink.New(ctx, cfg.Chronos, sink.Options{AppName: "chronow-persister", MaxConcurrentWrites: p.MaxConcurrentWrites, Concurrency: p.WriteConcurrency, Log: log})
	if err != nil {
		_ = rdb.Close()
		return nil, err
	}
	d := &Daemon{
		cfg: cfg, log: log, reg: reg, m: m, rdb: rdb, sink: w,
		acker:        consumer.NewAcker(rdb, p.Group),
		decoders:     entry.Decoders(),
		layout:       cfg.Layout(),
		tenants:      map[string]*pipeline.Tenant{},
		unconfigured: map[string]bool{},
		budget:       budget.New(int64(p.MaxInflightBytes)),
	}
	d.refusals = acl.Watch(rdb, log)
	metrics.RegisterBudget(reg, d.budget.Used, d.budget.Limit())
	metrics.RegisterWriteLimits(reg, d.writeLimits)
	d.setupBadInput()
	for _, t := range tenants {
		d.tenants[t.TenantID] = pipeline.New(pipeline.Deps{
			Tenant: t.TenantID, Layout: d.layout, Settings: p, RDB: rdb, Store: w, Acker: d.acker,
			Rescuer: d.rescuer, Decoders: d.decoders, Screen: d.screen, Budget: d.budget, Metrics: m, Log: log,
		})
	}
	d.lag = d.newLagCollector()
	if p.SMEnabled {
		d.sm = sharedmem.New(sharedmem.ConfigFrom(cfg), rdb, w, m, log)
	}
	d.initSeries()
	return d, nil
}

// Registry returns the metrics registry (tests scrape it).
func (d *Daemon) Registry() *prometheus.Registry { return d.reg }

// Run runs until ctx is cancelled (SIGTERM), then stops reading, flushes and
// acks what is in hand within the grace period, and returns nil. Entries not
// flushed by then stay pending in Redis and are read again at the next start.
func (d *Daemon) Run(ctx context.Context) error {
	defer d.close()
	ln, err := net.Listen("tcp", d.cfg.Persister.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on PERSISTER_HTTP_ADDR %q: %w", d.cfg.Persister.HTTPAddr, err)
	}
	d.setHTTPAddr(ln.Addr().String())
	probe, err := d.listenProbe() // web.go
	if err != nil {
		_ = ln.Close()
		return err
	}
	srv := &http.Server{Handler: d.handler(), ReadHeaderTimeout: 5 * time.Second}
	d.log.Info("persister starting", "config", d.cfg.Summary(), "http", ln.Addr().String())

	// drainCtx outlives ctx by the grace period, for flushing and acking.
	drainCtx, cancelDrain := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelDrain()
	g, gctx := errgroup.WithContext(ctx)
	// The grace period starts at any stop: SIGTERM, or a part failing
	// (gctx). Without it a drain against an unreachable MongoDB would
	// never end.
	stopGrace := context.AfterFunc(gctx, func() {
		d.log.Info("stopping: no more reads; flushing what is in hand", "grace", d.cfg.Persister.ShutdownGrace.String())
		time.AfterFunc(d.cfg.Persister.ShutdownGrace, cancelDrain)
	})
	defer stopGrace()
	httpDone := make(chan struct{})
	g.Go(func() error {
		defer close(httpDone)
		if err := d.serveHTTP(srv, ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http server: %w", err)
		}
		return nil
	})
	if probe != nil {
		g.Go(probe.run)
	}
	g.Go(func() error { return d.discoverLoop(gctx) })
	g.Go(func() error { return d.lag.Run(gctx) })
	g.Go(func() error { return d.topics.Run(gctx) })
	var pipelines sync.WaitGroup
	for _, tp := range d.tenants {
		pipelines.Add(1)
		g.Go(func() error {
			defer pipelines.Done()
			return tp.Run(gctx, drainCtx)
		})
	}
	if d.sm != nil {
		pipelines.Add(1)
		g.Go(func() error {
			defer pipelines.Done()
			return d.sm.Run(gctx, drainCtx)
		})
	}
	// The HTTP server stops last, after every pipeline has flushed.
	g.Go(func() error {
		<-gctx.Done()
		pipelines.Wait()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-httpDone
		if probe != nil {
			probe.stop(sctx)
		}
		return nil
	})
	err = g.Wait()
	if drainCtx.Err() != nil {
		d.log.Warn("grace period ended before every batch was stored; the rest stays pending in Redis")
	}
	d.log.Info("persister stopped")
	return err
}

// writeLimits reads the sink's write limiters for the metrics.
func (d *Daemon) writeLimits() []metrics.WriteLimit {
	ls := d.sink.Limits()
	out := make([]metrics.WriteLimit, len(ls))
	for i, l := range ls {
		out[i] = metrics.WriteLimit{Scope: l.Scope, Name: l.Name, Limit: l.Limit, InFlight: l.InFlight, Floor: l.Floor.Seconds()}
	}
	return out
}

func (d *Daemon) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d.sink.Close(ctx)
	_ = d.rdb.Close()
}

// discoverLoop scans for streams now and then every DiscoveryInterval, and
// hands each tenant its streams.
func (d *Daemon) discoverLoop(ctx context.Context) error {
	kinds := make([]keyspace.Kind, 0, len(d.decoders))
	for k := range d.decoders {
		kinds = append(kinds, k)
	}
	sc := discovery.New(d.rdb, d.layout, kinds)
	t := time.NewTicker(d.cfg.Persister.DiscoveryInterval)
	defer t.Stop()
	var failures retry.Failures
	for {
		if err := d.discoverOnce(ctx, sc); err != nil && ctx.Err() == nil {
			d.m.RedisErrors.WithLabelValues(metrics.OpScan).Inc()
			failures.Fail(d.log, "stream discovery failed; will retry", err)
		} else {
			failures.Reset()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (d *Daemon) discoverOnce(ctx context.Context, sc *discovery.Scanner) error {
	res, err := sc.Scan(ctx)
	if err != nil {
		return err
	}
	counts := map[string]int{}
	for id, tp := range d.tenants {
		keys := make([]string, 0, len(res.ByTenant[id]))
		for _, k := range res.ByTenant[id] {
			keys = append(keys, k.String())
			counts[string(k.Kind)]++
		}
		before, _ := tp.Streams().Get()
		known := make(map[string]bool, len(before))
		for _, k := range before {
			known[k] = true
		}
		for _, k := range keys {
			if !known[k] {
				d.log.Info("stream discovered", "tenant", id, "stream", k)
			}
		}
		tp.Streams().Set(keys)
	}
	d.topics.Offer(res.ByTenant)
	unconf := map[string]int{}
	ignored := map[[2]string]int{}
	for _, k := range res.Unconfigured {
		unconf[string(k.Kind)]++
		ignored[[2]string{string(k.Kind), discovery.ReasonUnconfiguredTenant}]++
		d.reportOnce(k.String(), "stream of an unconfigured tenant is not consumed", "stream", k.String(), "tenant", k.Tenant,
			"hint", "add the tenant to the chronos-db config (CHRONOS_CONFIG)")
	}
	for _, ig := range res.Ignored {
		ignored[[2]string{string(ig.Kind), ig.Reason}]++
		d.reportOnce(ig.Key, "stream looks like Chronow's but is not consumed", "stream", ig.Key, "reason", ig.Reason, "hint", ig.Hint)
	}
	for kind := range d.decoders {
		d.m.Streams.WithLabelValues(string(kind), metrics.StateConsumed).Set(float64(counts[string(kind)]))
		d.m.Streams.WithLabelValues(string(kind), metrics.StateUnconfiguredTenant).Set(float64(unconf[string(kind)]))
		for _, reason := range discovery.Reasons() {
			d.m.KeysIgnored.WithLabelValues(string(kind), reason).Set(float64(ignored[[2]string{string(kind), reason}]))
		}
	}
	return nil
}

// maxReported bounds the stream keys remembered as already logged.
const maxReported = 10000

// reportOnce logs a warning about a key the first time it is seen (up to
// maxReported keys; the metrics count them all).
func (d *Daemon) reportOnce(key, msg string, args ...any) {
	d.mu.Lock()
	first := !d.unconfigured[key] && len(d.unconfigured) < maxReported
	if first {
		d.unconfigured[key] = true
	}
	d.mu.Unlock()
	if first {
		d.log.Warn(msg, args...)
	}
}
