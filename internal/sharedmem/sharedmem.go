// Package sharedmem carries Chronow's shared-memory keys into each tenant's
// shared_memory collection.
//
// Chronow keeps a shared-memory value as a plain Redis string
// {prefix}{tenant}:{namespace}:sm:{name} holding JSON.stringify(value), with
// a TTL. The Carrier finds changes by two paths that feed one writer:
//
//   - live: keyspace notifications (PSUBSCRIBE __keyspace@<db>__:{prefix}*:*:sm:*)
//     name the keys just written or deleted; their values are read at once;
//   - reconcile: a periodic SCAN of every master reads every value whose
//     hash (redis.sha1hex, computed by Redis) differs from the stored one;
//     it lists Chronow-shaped sm keys under any prefix, to count and report
//     those it does not carry (another prefix, say).
//
// Every read runs in a Lua script together with Redis' TIME, which becomes
// the observation's version. The writer keeps the newest observation per key,
// flushes every FlushInterval as bulk upserts per tenant, and each upsert is
// conditional on the stored version being older: an older observation never
// replaces a newer one. See docs/shared-memory.md for the guarantees and
// their limits.
package sharedmem

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/discovery"
	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/metrics"
)

// collection is the collection the values go to.
const collection = config.CollSharedMemory

// Reasons a key is ignored (label values of persister_sm_keys_ignored_total).
const (
	IgnoredUnconfiguredTenant = "unconfigured_tenant"
	IgnoredNotString          = "not_string"
)

// maxReportedTenants bounds the set of unconfigured tenants already logged.
const maxReportedTenants = 1000

// Config is the Carrier's configuration.
type Config struct {
	// Layout is where Chronow's keys are (REDIS_KEY_PREFIX and its forms).
	Layout keyspace.Layout
	// Tenants are the configured tenants; keys of others are skipped.
	Tenants []config.TenantDatabase
	// Notify enables the live path (PERSISTER_SM_NOTIFY=auto): check
	// notify-keyspace-events, add missing flags when allowed, subscribe.
	Notify bool
	// Tombstone marks deleted keys in the warm tier
	// (PERSISTER_SM_DELETE_MODE=tombstone); otherwise deletes change nothing.
	Tombstone bool
	// FlushInterval is the coalescing window.
	FlushInterval time.Duration
	// ReconcileInterval is the time between two reconcile passes.
	ReconcileInterval time.Duration
	// WriteTimeout bounds one database command.
	WriteTimeout time.Duration
	// MaxBackoff caps the wait between two attempts of a failing tenant.
	MaxBackoff time.Duration
	// MaxPending bounds the keys waiting for a flush.
	MaxPending int
	// CacheKeys bounds the in-memory hash cache.
	CacheKeys int
	// ScanCount is the SCAN COUNT hint.
	ScanCount int64
}

// ConfigFrom derives the Carrier's configuration from the daemon's.
func ConfigFrom(c *config.Config) Config {
	p := c.Persister
	return Config{
		Layout:            c.Layout(),
		Tenants:           c.Chronos.Tenants(),
		Notify:            p.SMNotify == config.SMNotifyAuto,
		Tombstone:         p.SMDeleteMode == config.SMDeleteTombstone,
		FlushInterval:     p.SMFlushInterval,
		ReconcileInterval: p.SMReconcileInterval,
		WriteTimeout:      p.WriteTimeout,
		MaxBackoff:        p.RetryMaxBackoff,
		MaxPending:        p.SMMaxPending,
		CacheKeys:         p.SMCacheKeys,
		ScanCount:         1000,
	}
}

// Carrier carries shared-memory values from Redis to MongoDB.
type Carrier struct {
	cfg     Config
	rdb     redis.UniversalClient
	m       *metrics.Metrics
	log     *slog.Logger
	tenants map[string]bool
	cache   *hashCache
	store   *store
	writer  *writer

	obs  chan []Observation
	kick chan struct{}

	subscribed atomic.Bool
	notifyOK   atomic.Bool

	mu           sync.Mutex
	reported     map[string]bool   // unconfigured tenants and ignored keys ("key "+key) already logged
	notifyReport map[string]string // last notify state logged, by server
}

// New builds a Carrier; nothing is contacted until Run.
func New(cfg Config, rdb redis.UniversalClient, dbs Databases, m *metrics.Metrics, log *slog.Logger) *Carrier {
	if cfg.ScanCount <= 0 {
		cfg.ScanCount = 1000
	}
	log = log.With("component", "shared_memory")
	c := &Carrier{
		cfg: cfg, rdb: rdb, m: m, log: log,
		tenants:  map[string]bool{},
		cache:    newHashCache(cfg.CacheKeys),
		store:    &store{dbs: dbs, writeTimeout: cfg.WriteTimeout},
		obs:      make(chan []Observation, 4),
		kick:     make(chan struct{}, 1),
		reported: map[string]bool{},

		notifyReport: map[string]string{},
	}
	for _, t := range cfg.Tenants {
		c.tenants[t.TenantID] = true
	}
	c.writer = newWriter(c.store, c.cache, m, log, cfg)
	return c
}

// Run captures and writes until ctx ends, then writes what it holds within
// drainCtx. It returns nil: Redis and MongoDB failures are logged, counted
// and retried, never fatal to the daemon. Run is called once per Carrier.
func (c *Carrier) Run(ctx, drainCtx context.Context) error {
	mode := "live notifications and reconcile"
	if !c.cfg.Notify {
		mode = "reconcile only (PERSISTER_SM_NOTIFY=off)"
		c.m.SMLiveCapture.Set(0)
	}
	c.log.Info("shared memory: carrying values to the warm tier", "mode", mode,
		"flush_interval", c.cfg.FlushInterval.String(), "reconcile_interval", c.cfg.ReconcileInterval.String(),
		"tombstones", c.cfg.Tombstone)
	var producers errgroup.Group
	if c.cfg.Notify {
		c.ensureNotify(ctx)
		producers.Go(func() error { return c.liveLoop(ctx) })
	}
	producers.Go(func() error { return c.reconcileLoop(ctx) })
	stopped := make(chan struct{})
	var wg sync.WaitGroup
	var werr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		werr = c.writer.run(drainCtx, c.obs, stopped)
	}()
	perr := producers.Wait()
	close(c.obs)
	close(stopped)
	wg.Wait()
	return errors.Join(perr, werr)
}

// send hands observations to the writer; false when ctx ended first.
func (c *Carrier) send(ctx context.Context, obs []Observation) bool {
	if len(obs) == 0 {
		return true
	}
	select {
	case <-ctx.Done():
		return false
	case c.obs <- obs:
		return true
	}
}

// kickReconcile asks for a reconcile pass soon.
func (c *Carrier) kickReconcile() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// parseKey parses a Redis key and keeps it when it is a shared-memory key
// of a configured tenant. A Chronow-shaped key that is not carried (another
// prefix, a pinned prefix form, ambiguous) is counted and logged once.
func (c *Carrier) parseKey(s string) (keyspace.Key, bool) {
	k, err := c.cfg.Layout.Parse(s)
	if err != nil || k.Kind != keyspace.KindSharedMemory {
		var ig discovery.Ignored
		ok := false
		if errors.Is(err, keyspace.ErrAmbiguous) {
			ig, ok = discovery.Ignored{Key: s, Kind: keyspace.KindSharedMemory, Reason: discovery.ReasonAmbiguous,
				Hint: "set PERSISTER_KEY_PREFIX_FORM=single or doubled"}, true
		} else {
			ig, ok = discovery.Classify(c.cfg.Layout, s, keyspace.KindSharedMemory)
		}
		if ok {
			c.ignored(ig)
		}
		return keyspace.Key{}, false
	}
	if !c.tenants[k.Tenant] {
		c.m.SMKeysIgnored.WithLabelValues(IgnoredUnconfiguredTenant).Inc()
		c.mu.Lock()
		first := !c.reported[k.Tenant] && len(c.reported) < maxReportedTenants
		if first {
			c.reported[k.Tenant] = true
		}
		c.mu.Unlock()
		if first {
			c.log.Warn("shared memory: keys of an unconfigured tenant are not carried", "tenant", k.Tenant, "example_key", s)
		}
		return keyspace.Key{}, false
	}
	return k, true
}

// ignored counts a Chronow-shaped key that is not carried and logs it the
// first time (up to maxReportedTenants keys).
func (c *Carrier) ignored(ig discovery.Ignored) {
	c.m.SMKeysIgnored.WithLabelValues(ig.Reason).Inc()
	c.mu.Lock()
	first := !c.reported["key "+ig.Key] && len(c.reported) < maxReportedTenants
	if first {
		c.reported["key "+ig.Key] = true
	}
	c.mu.Unlock()
	if first {
		c.log.Warn("shared memory: key looks like Chronow's but is not carried", "key", ig.Key, "reason", ig.Reason, "hint", ig.Hint)
	}
}

// setLive records whether the subscriptions are up.
func (c *Carrier) setLive(up bool) {
	c.subscribed.Store(up)
	c.updateLiveGauge()
}

func (c *Carrier) updateLiveGauge() {
	v := 0.0
	if c.subscribed.Load() && c.notifyOK.Load() {
		v = 1
	}
	c.m.SMLiveCapture.Set(v)
}

// ensureNotify checks notify-keyspace-events on every master, enables what
// is missing when allowed, and logs when the state changes.
func (c *Carrier) ensureNotify(ctx context.Context) {
	required := requiredFlags(c.cfg.Tombstone)
	nodes, err := c.masters(ctx)
	if err != nil {
		c.m.RedisErrors.WithLabelValues(metrics.OpSMConfig).Inc()
		c.reportNotify("", "error", func() {
			c.log.Warn("shared memory: cannot check notify-keyspace-events", "err", err)
		})
		return
	}
	ok := true
	for _, n := range nodes {
		st := checkNotify(ctx, n, required, true)
		ok = ok && st.ok()
		switch {
		case st.readErr != nil:
			c.m.RedisErrors.WithLabelValues(metrics.OpSMConfig).Inc()
			c.reportNotify(st.addr, "unreadable", func() {
				c.log.Warn("shared memory: cannot read the Redis setting notify-keyspace-events; subscribing anyway. "+
					"If the server does not publish the needed events, values arrive only through reconcile",
					"addr", st.addr, "needed_flags", required, "reconcile_interval", c.cfg.ReconcileInterval.String(), "err", st.readErr)
			})
		case st.setErr != nil:
			c.reportNotify(st.addr, "missing:"+st.current, func() {
				c.log.Warn("shared memory: Redis does not publish the keyspace events the live path needs, and CONFIG SET was refused; "+
					"values arrive only through reconcile. Set notify-keyspace-events to include the missing flags on the server",
					"addr", st.addr, "notify_keyspace_events", st.current, "missing_flags", st.missing,
					"suggested_setting", st.current+st.missing, "reconcile_interval", c.cfg.ReconcileInterval.String(), "err", st.setErr)
			})
		case st.enabled != "":
			c.reportNotify(st.addr, "ok", func() {
				c.log.Info("shared memory: enabled keyspace notifications on Redis", "addr", st.addr,
					"was", st.current, "added_flags", st.enabled)
			})
		default:
			c.reportNotify(st.addr, "ok", func() {
				c.log.Info("shared memory: Redis publishes the keyspace events the live path needs", "addr", st.addr,
					"notify_keyspace_events", st.current)
			})
		}
	}
	c.notifyOK.Store(ok)
	c.updateLiveGauge()
}

// reportNotify logs when a server's state differs from the last one logged.
func (c *Carrier) reportNotify(addr, state string, log func()) {
	c.mu.Lock()
	changed := c.notifyReport[addr] != state
	c.notifyReport[addr] = state
	c.mu.Unlock()
	if changed {
		log()
	}
}
