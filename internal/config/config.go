// Package config loads and validates the persister's configuration from the
// environment and the chronos-db JSON config.
package config

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/sethvargo/go-envconfig"

	"github.com/chronow/persister/internal/keyspace"
)

// ErrInvalid marks every configuration error; main maps it to exit code 2.
var ErrInvalid = errors.New("invalid configuration")

// Config is the whole configuration of the daemon and its tools.
type Config struct {
	Redis     Redis
	Mongo     Mongo
	Persister Persister

	// Web protects the HTTP endpoints (security.go).
	Web Web

	// Chronos is the tenant routing loaded from CHRONOS_CONFIG, or derived
	// from MONGO_URI when CHRONOS_CONFIG is not set.
	Chronos Chronos
}

// Redis holds Chronow's own Redis settings; a sidecar reads the same names.
type Redis struct {
	URL      string `env:"REDIS_URL, default=redis://127.0.0.1:6379/0"`
	Username string `env:"REDIS_USERNAME"`
	Password string `env:"REDIS_PASSWORD"`
	// DB overrides the database of REDIS_URL when >= 0.
	DB           int    `env:"REDIS_DB, default=-1"`
	TLS          bool   `env:"REDIS_TLS, default=false"`
	CACert       string `env:"REDIS_CA_CERT"`
	KeyPrefix    string `env:"REDIS_KEY_PREFIX, default=cw:"`
	ClusterNodes string `env:"REDIS_CLUSTER_NODES"`
	// KeyPrefixForm says which forms of the prefix Chronow's keys have:
	// auto (both: an app that passes redis.keyPrefix writes it twice,
	// cw:cw:tenant:..., one that does not writes it once), single or
	// doubled.
	KeyPrefixForm string `env:"PERSISTER_KEY_PREFIX_FORM, default=auto"`

	// RedisTLS is the client certificate for mutual TLS (security.go).
	RedisTLS
}

// Mongo holds where tenant databases live.
type Mongo struct {
	// URI is used when ChronosConfig is empty: one tenant "default".
	URI           string `env:"MONGO_URI, default=mongodb://127.0.0.1:27017"`
	ChronosConfig string `env:"CHRONOS_CONFIG"`
}

// Persister holds the daemon's own settings.
type Persister struct {
	Group              string        `env:"PERSISTER_GROUP, default=persister"`
	Consumer           string        `env:"PERSISTER_CONSUMER"`
	BatchSize          int           `env:"PERSISTER_BATCH_SIZE, default=500"`
	BatchBytes         int           `env:"PERSISTER_BATCH_BYTES, default=8388608"`
	BatchLinger        time.Duration `env:"PERSISTER_BATCH_LINGER, default=20ms"`
	Workers            int           `env:"PERSISTER_WORKERS, default=1"`
	InflightBatches    int           `env:"PERSISTER_INFLIGHT_BATCHES, default=2"`
	ReadBlock          time.Duration `env:"PERSISTER_READ_BLOCK, default=1s"`
	DiscoveryInterval  time.Duration `env:"PERSISTER_DISCOVERY_INTERVAL, default=10s"`
	HTTPAddr           string        `env:"PERSISTER_HTTP_ADDR, default=:9464"`
	ShutdownGrace      time.Duration `env:"PERSISTER_SHUTDOWN_GRACE, default=25s"`
	WriteTimeout       time.Duration `env:"PERSISTER_WRITE_TIMEOUT, default=30s"`
	RetryMaxBackoff    time.Duration `env:"PERSISTER_RETRY_MAX_BACKOFF, default=30s"`
	ClaimMinIdle       time.Duration `env:"PERSISTER_CLAIM_MIN_IDLE, default=60s"`
	ClaimInterval      time.Duration `env:"PERSISTER_CLAIM_INTERVAL, default=15s"`
	ConsumerIdleDelete time.Duration `env:"PERSISTER_CONSUMER_IDLE_DELETE, default=1h"`
	MaxDeliveries      int           `env:"PERSISTER_MAX_DELIVERIES, default=10"`
	LogLevel           string        `env:"PERSISTER_LOG_LEVEL, default=info"`
	LogFormat          string        `env:"PERSISTER_LOG_FORMAT, default=json"`
	// MetricsInterval is how often stream lag, pending counts, oldest age
	// and unseen trims are measured (internal/lag).
	MetricsInterval time.Duration `env:"PERSISTER_METRICS_INTERVAL, default=10s"`
	// ClusterPoll and ClusterIdlePoll bound the wait between two reads of
	// a stream without a backlog on a Redis Cluster (where one blocking
	// read cannot span slots): a quarter of the time since the stream last
	// had entries, at least ClusterPoll, at most ClusterIdlePoll
	// (docs/scaling.md).
	ClusterPoll     time.Duration `env:"PERSISTER_CLUSTER_POLL, default=50ms"`
	ClusterIdlePoll time.Duration `env:"PERSISTER_CLUSTER_IDLE_POLL, default=500ms"`
	// MetricsTopStreams, when > 0, also exports lag and oldest age with a
	// stream label for this many streams (the oldest unstored first).
	MetricsTopStreams int `env:"PERSISTER_METRICS_TOP_STREAMS, default=0"`
	// PPROF serves Go's /debug/pprof/ profiles on the HTTP address (opt-in:
	// they reveal internals and cost CPU while a profile is taken).
	PPROF bool `env:"PERSISTER_PPROF, default=false"`
	// MaxConcurrentWrites bounds the bulk inserts in flight on each MongoDB
	// connection across all its tenants (InflightBatches is per tenant).
	MaxConcurrentWrites int `env:"PERSISTER_MAX_CONCURRENT_WRITES, default=4"`
	// WriteConcurrency is adaptive (the limit of writes in flight per
	// connection and per database moves within [1, MaxConcurrentWrites]
	// with their latency and throughput: internal/arc) or fixed
	// (MaxConcurrentWrites per connection, always).
	WriteConcurrency string `env:"PERSISTER_WRITE_CONCURRENCY, default=adaptive"`
	// MaxInflightBytes bounds the bytes of stream entries held in memory
	// (read, batched or being written) across all tenants: a read waits
	// until the entries it may return fit (internal/budget).
	MaxInflightBytes int `env:"PERSISTER_MAX_INFLIGHT_BYTES, default=8388608"`
	// MemoryLimit is the Go runtime's soft memory limit in bytes: 0 (auto)
	// is 32 MiB + MaxInflightBytes unless GOMEMLIMIT is set, -1 is off
	// (see SoftMemoryLimit).
	MemoryLimit int64 `env:"PERSISTER_MEMORY_LIMIT, default=0"`

	// Shared memory (internal/sharedmem, docs/shared-memory.md).
	// SMEnabled carries Chronow's sm keys into each tenant's shared_memory.
	SMEnabled bool `env:"PERSISTER_SM_ENABLED, default=true"`
	// SMNotify is auto (check notify-keyspace-events, add the missing flags
	// when CONFIG SET is allowed, subscribe) or off (reconcile only).
	SMNotify string `env:"PERSISTER_SM_NOTIFY, default=auto"`
	// SMReconcileInterval is the time between two SCAN passes that write
	// every value whose content differs from the stored one.
	SMReconcileInterval time.Duration `env:"PERSISTER_SM_RECONCILE_INTERVAL, default=1m"`
	// SMFlushInterval is the coalescing window: the values of one key set
	// within it become one write of the latest.
	SMFlushInterval time.Duration `env:"PERSISTER_SM_FLUSH_INTERVAL, default=1s"`
	// SMDeleteMode is keep (a deleted key changes nothing in the warm tier)
	// or tombstone (_system.tombstone and _system.deletedAt are set).
	SMDeleteMode string `env:"PERSISTER_SM_DELETE_MODE, default=keep"`
	// SMMaxPending bounds the keys waiting for a flush (backpressure).
	SMMaxPending int `env:"PERSISTER_SM_MAX_PENDING, default=100000"`
	// SMCacheKeys bounds the in-memory cache of stored hashes (about 150
	// bytes per key).
	SMCacheKeys int `env:"PERSISTER_SM_CACHE_KEYS, default=200000"`
}

// Values of PERSISTER_SM_NOTIFY and PERSISTER_SM_DELETE_MODE.
const (
	SMNotifyAuto      = "auto"
	SMNotifyOff       = "off"
	SMDeleteKeep      = "keep"
	SMDeleteTombstone = "tombstone"

	WriteConcurrencyAdaptive = "adaptive"
	WriteConcurrencyFixed    = "fixed"
)

// Load reads the configuration from the process environment and validates it.
// Every error wraps ErrInvalid and names the setting at fault.
func Load(ctx context.Context) (*Config, error) {
	return LoadFrom(ctx, envconfig.OsLookuper())
}

// LoadFrom is Load with an explicit lookuper (tests use a map).
func LoadFrom(ctx context.Context, l envconfig.Lookuper) (*Config, error) {
	var c Config
	// Secret settings may come from NAME_FILE (security.go).
	l, err := withSecretFiles(l)
	if err != nil {
		return nil, err
	}
	for _, target := range []any{&c.Redis, &c.Mongo, &c.Persister, &c.Web} {
		if err := envconfig.ProcessWith(ctx, &envconfig.Config{Target: target, Lookuper: l}); err != nil {
			return nil, fmt.Errorf("%w: %s", ErrInvalid, scrubAll(envNames(target, err.Error()), l))
		}
	}
	if c.Persister.Consumer == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return nil, fmt.Errorf("%w: PERSISTER_CONSUMER: not set and host name unavailable", ErrInvalid)
		}
		c.Persister.Consumer = h
	}
	if c.Mongo.ChronosConfig != "" {
		ch, err := ReadChronos(c.Mongo.ChronosConfig)
		if err != nil {
			return nil, err
		}
		c.Chronos = *ch
	} else {
		c.Chronos = DefaultChronos(c.Mongo.URI)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate checks every field and returns all problems at once, each naming
// the setting and the reason.
func (c *Config) Validate() error {
	var ps problems
	c.Redis.validate(&ps)
	p := c.Persister
	p.validateNames(&ps)
	p.validatePositive(&ps)
	p.validateNumbers(&ps)
	p.validateModes(&ps)
	errs := ps.errs
	if err := c.Chronos.Validate(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.validateSecurity()...) // security.go
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrInvalid, errors.Join(errs...))
}

// problems collects what Validate finds wrong, each naming the setting.
type problems struct {
	errs []error
}

func (ps *problems) bad(field, format string, a ...any) {
	ps.errs = append(ps.errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, a...)))
}

// validate checks the REDIS_* settings.
func (r Redis) validate(ps *problems) {
	if r.ClusterNodes == "" {
		if err := validateRedisURL(r.URL); err != nil {
			ps.bad("REDIS_URL", "%v", err)
		}
	} else if _, err := r.Nodes(); err != nil {
		ps.bad("REDIS_CLUSTER_NODES", "%v", err)
	}
	if r.DB < -1 {
		ps.bad("REDIS_DB", "must be >= 0, got %d", r.DB)
	}
	if r.CACert != "" {
		if _, err := os.Stat(r.CACert); err != nil {
			ps.bad("REDIS_CA_CERT", "cannot read %q: %v", r.CACert, errors.Unwrap(err))
		}
	}
	if strings.ContainsAny(r.KeyPrefix, "*?[]") {
		// Escaped in patterns anyway; refused to keep keys unambiguous.
		ps.bad("REDIS_KEY_PREFIX", "must not contain glob characters *?[], got %q", r.KeyPrefix)
	}
	if _, err := keyspace.ParseForm(r.KeyPrefixForm); err != nil {
		ps.bad("PERSISTER_KEY_PREFIX_FORM", "%v", err)
	}
}

// validateNames checks the consumer group and consumer names.
func (p Persister) validateNames(ps *problems) {
	if p.Group == "" || strings.HasPrefix(p.Group, "sub:") || p.Group == "_init" {
		ps.bad("PERSISTER_GROUP", "must be non-empty and not a Chronow group name (sub:*, _init), got %q", p.Group)
	}
	if strings.ContainsAny(p.Consumer, " \t\n") {
		ps.bad("PERSISTER_CONSUMER", "must not contain white space, got %q", p.Consumer)
	}
}

// validatePositive checks that every size, count, interval and timeout is
// positive.
func (p Persister) validatePositive(ps *problems) {
	count := func(name string, v int) positiveSetting {
		return positiveSetting{name, v > 0, fmt.Sprintf("must be > 0, got %d", v)}
	}
	duration := func(name string, v time.Duration) positiveSetting {
		return positiveSetting{name, v > 0, fmt.Sprintf("must be a positive duration, got %s", v)}
	}
	for _, s := range []positiveSetting{
		count("PERSISTER_BATCH_SIZE", p.BatchSize),
		count("PERSISTER_BATCH_BYTES", p.BatchBytes),
		count("PERSISTER_WORKERS", p.Workers),
		count("PERSISTER_INFLIGHT_BATCHES", p.InflightBatches),
		count("PERSISTER_MAX_CONCURRENT_WRITES", p.MaxConcurrentWrites),
		count("PERSISTER_MAX_INFLIGHT_BYTES", p.MaxInflightBytes),
		count("PERSISTER_MAX_DELIVERIES", p.MaxDeliveries),
		count("PERSISTER_SM_MAX_PENDING", p.SMMaxPending),
		count("PERSISTER_SM_CACHE_KEYS", p.SMCacheKeys),
		duration("PERSISTER_BATCH_LINGER", p.BatchLinger),
		duration("PERSISTER_READ_BLOCK", p.ReadBlock),
		duration("PERSISTER_CLUSTER_POLL", p.ClusterPoll),
		duration("PERSISTER_CLUSTER_IDLE_POLL", p.ClusterIdlePoll),
		duration("PERSISTER_DISCOVERY_INTERVAL", p.DiscoveryInterval),
		duration("PERSISTER_SHUTDOWN_GRACE", p.ShutdownGrace),
		duration("PERSISTER_WRITE_TIMEOUT", p.WriteTimeout),
		duration("PERSISTER_RETRY_MAX_BACKOFF", p.RetryMaxBackoff),
		duration("PERSISTER_CLAIM_MIN_IDLE", p.ClaimMinIdle),
		duration("PERSISTER_CLAIM_INTERVAL", p.ClaimInterval),
		duration("PERSISTER_CONSUMER_IDLE_DELETE", p.ConsumerIdleDelete),
		duration("PERSISTER_METRICS_INTERVAL", p.MetricsInterval),
		duration("PERSISTER_SM_RECONCILE_INTERVAL", p.SMReconcileInterval),
		duration("PERSISTER_SM_FLUSH_INTERVAL", p.SMFlushInterval),
	} {
		if !s.ok {
			ps.bad(s.name, "%s", s.problem)
		}
	}
}

// positiveSetting is one setting validatePositive checks.
type positiveSetting struct {
	name    string
	ok      bool
	problem string
}

// validateNumbers checks the limits of sizes and counts beyond being
// positive.
func (p Persister) validateNumbers(ps *problems) {
	if floor := int64(p.MaxInflightBytes) + 16<<20; p.MemoryLimit < -1 || (p.MemoryLimit > 0 && p.MemoryLimit < floor) {
		ps.bad("PERSISTER_MEMORY_LIMIT", "must be 0 (auto), -1 (off) or at least PERSISTER_MAX_INFLIGHT_BYTES + 16 MiB (%d), got %d", floor, p.MemoryLimit)
	}
	if p.MetricsTopStreams < 0 || p.MetricsTopStreams > 1000 {
		ps.bad("PERSISTER_METRICS_TOP_STREAMS", "must be between 0 (off) and 1000, got %d", p.MetricsTopStreams)
	}
	if p.BatchSize > 100000 {
		ps.bad("PERSISTER_BATCH_SIZE", "must be <= 100000 (MongoDB's maxWriteBatchSize), got %d", p.BatchSize)
	}
}

// validateModes checks the settings that take one of a few words.
func (p Persister) validateModes(ps *problems) {
	switch strings.ToLower(p.LogLevel) {
	case "debug", "info", "warn", "error":
	default:
		ps.bad("PERSISTER_LOG_LEVEL", "must be debug, info, warn or error, got %q", p.LogLevel)
	}
	if p.SMNotify != SMNotifyAuto && p.SMNotify != SMNotifyOff {
		ps.bad("PERSISTER_SM_NOTIFY", "must be auto or off, got %q", p.SMNotify)
	}
	if p.WriteConcurrency != WriteConcurrencyAdaptive && p.WriteConcurrency != WriteConcurrencyFixed {
		ps.bad("PERSISTER_WRITE_CONCURRENCY", "must be adaptive or fixed, got %q", p.WriteConcurrency)
	}
	if p.SMDeleteMode != SMDeleteKeep && p.SMDeleteMode != SMDeleteTombstone {
		ps.bad("PERSISTER_SM_DELETE_MODE", "must be keep or tombstone, got %q", p.SMDeleteMode)
	}
	switch p.LogFormat {
	case "json", "text":
	default:
		ps.bad("PERSISTER_LOG_FORMAT", "must be json or text, got %q", p.LogFormat)
	}
}

// Nodes parses REDIS_CLUSTER_NODES (a JSON array of host:port).
func (r Redis) Nodes() ([]string, error) {
	if r.ClusterNodes == "" {
		return nil, nil
	}
	var nodes []string
	if err := json.Unmarshal([]byte(r.ClusterNodes), &nodes); err != nil {
		return nil, fmt.Errorf("must be a JSON array of \"host:port\" strings: %v", err)
	}
	if len(nodes) == 0 {
		return nil, errors.New("must list at least one host:port")
	}
	for i, n := range nodes {
		host, port, ok := strings.Cut(n, ":")
		if !ok || host == "" || port == "" {
			return nil, fmt.Errorf("entry %d %q is not host:port", i, n)
		}
	}
	return nodes, nil
}

func validateRedisURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a URL (redis://[user:password@]host:port/db)")
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix" {
		return fmt.Errorf("scheme must be redis, rediss or unix, got %q in %s", u.Scheme, u.Redacted())
	}
	if u.Scheme != "unix" && u.Host == "" {
		return fmt.Errorf("no host in %s", u.Redacted())
	}
	return nil
}

// envNames rewrites the Go field names in an envconfig error into the
// environment variable names the operator set.
func envNames(target any, msg string) string {
	t := reflect.TypeOf(target).Elem()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
		if name != "" && strings.HasPrefix(msg, f.Name+":") {
			return name + ":" + strings.TrimPrefix(msg, f.Name+":")
		}
	}
	return msg
}

// scrubAll removes the values of secret settings from an error text.
func scrubAll(s string, l envconfig.Lookuper) string {
	for _, k := range []string{"REDIS_PASSWORD", "REDIS_URL", "MONGO_URI"} {
		if v, ok := l.Lookup(k); ok && v != "" {
			s = strings.ReplaceAll(s, v, "xxxxx")
		}
	}
	return s
}

// Layout is where Chronow's keys are: the prefix, its forms, and the
// configured tenants (which settle a key that parses under both forms).
func (c *Config) Layout() keyspace.Layout {
	form, err := keyspace.ParseForm(c.Redis.KeyPrefixForm) // validated by Load
	if err != nil {
		form = keyspace.FormAuto
	}
	tenants := map[string]bool{}
	for _, t := range c.Chronos.Tenants() {
		tenants[t.TenantID] = true
	}
	return keyspace.Layout{Prefix: c.Redis.KeyPrefix, Form: form, Tenants: tenants}
}

// Summary is a loggable view of the configuration with every secret removed.
func (c *Config) Summary() map[string]any {
	tenants := make([]string, 0, len(c.Chronos.Tenants()))
	for _, t := range c.Chronos.Tenants() {
		tenants = append(tenants, t.TenantID+"->"+t.DBConnRef+"/"+t.DBName)
	}
	conns := map[string]string{}
	for name, dc := range c.Chronos.DBConnections {
		conns[name] = RedactURI(dc.MongoURI)
	}
	m := map[string]any{
		"redis_url":          RedactURI(c.Redis.URL),
		"redis_cluster":      c.Redis.ClusterNodes,
		"redis_password":     c.Redis.Password != "",
		"key_prefix":         c.Redis.KeyPrefix,
		"key_prefix_form":    c.Redis.KeyPrefixForm,
		"connections":        conns,
		"tenants":            tenants,
		"group":              c.Persister.Group,
		"consumer":           c.Persister.Consumer,
		"batch_size":         c.Persister.BatchSize,
		"batch_linger":       c.Persister.BatchLinger.String(),
		"workers":            c.Persister.Workers,
		"inflight":           c.Persister.InflightBatches,
		"max_writes":         c.Persister.MaxConcurrentWrites,
		"write_concurrency":  c.Persister.WriteConcurrency,
		"max_inflight_bytes": c.Persister.MaxInflightBytes,
		"memory_limit":       c.Persister.MemoryLimit,
		"http_addr":          c.Persister.HTTPAddr,
	}
	c.securitySummary(m) // security.go
	return m
}

// SoftMemoryLimit is the soft memory limit the daemon gives the Go runtime
// (runtime/debug.SetMemoryLimit), and why; 0 means leave the runtime as it
// is. gomemlimit is the GOMEMLIMIT environment variable, which the runtime
// applies itself and which wins over the auto value.
//
// The memory budget (MaxInflightBytes) bounds the entries in hand; the
// limit makes the garbage collector return what they leave behind before
// the heap doubles: the process stays near limit + the binary's own pages.
// The auto value was 32 MiB + 2 × the budget (48 MiB) until peak RSS on a
// 1M-entry drain measured 62-64 MiB with it; 40 MiB keeps it well below
// 64 MiB (docs/performance.md).
func (p Persister) SoftMemoryLimit(gomemlimit string) (int64, string) {
	switch {
	case p.MemoryLimit > 0:
		return p.MemoryLimit, "PERSISTER_MEMORY_LIMIT"
	case p.MemoryLimit < 0:
		return 0, "off (PERSISTER_MEMORY_LIMIT=-1)"
	case gomemlimit != "":
		return 0, "GOMEMLIMIT=" + gomemlimit
	default:
		return 32<<20 + int64(p.MaxInflightBytes), "auto: 32 MiB + PERSISTER_MAX_INFLIGHT_BYTES"
	}
}
