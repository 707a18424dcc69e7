// Package replay rebuilds and verifies the cold tier from what Redis still
// holds: it reads streams with XRANGE (never through a consumer group) and
// writes through the daemon's idempotent insert path.
package replay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/chronow/persister/internal/batch"
	"github.com/chronow/persister/internal/discovery"
	"github.com/chronow/persister/internal/entry"
	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/rescue"
)

// Store is the part of sink.Writer replay uses (inserts and a tenant's
// database), the same part as rescue needs.
type Store = rescue.Store

// ErrFatal wraps a write error that retrying cannot fix (authentication,
// authorization, a conflicting legacy index).
var ErrFatal = errors.New("fatal write error")

// Config sets up a Replayer.
type Config struct {
	// Layout is where Chronow's keys are (REDIS_KEY_PREFIX and its forms;
	// its Tenants are the configured tenants).
	Layout keyspace.Layout
	// Tenants are the configured tenant ids; other tenants' streams are
	// reported and skipped.
	Tenants []string
	// Decoders maps each stream kind to its decoder (entry.Decoders()).
	Decoders map[keyspace.Kind]entry.Decoder
	// PageSize is the XRANGE COUNT (default 500).
	PageSize int
	// MaxBatchBytes bounds one insert (default 8 MiB).
	MaxBatchBytes int
	// Rate limits entries per second (0: no limit).
	Rate float64
	// Attempts bounds the tries of a write that fails with a retryable
	// error before the replay stops (default 8).
	Attempts int
	// WriteTimeout bounds one insert (default 30s).
	WriteTimeout time.Duration
	// Rescuer, when set, stores documents MongoDB refuses for good another
	// way, as the daemon does.
	Rescuer batch.Rescuer
	// Topics, when set, writes the topics documents of the replayed topic
	// streams afterwards (the daemon's topics.Syncer).
	Topics TopicSyncer
	// Progress receives progress lines (nil: none); TTY rewrites one line.
	Progress io.Writer
	TTY      bool
}

// TopicSyncer upserts the topics documents of topic streams, by tenant.
type TopicSyncer interface {
	Sync(ctx context.Context, byTenant map[string][]keyspace.Key) error
}

// Replayer replays and verifies streams.
type Replayer struct {
	rdb   redis.UniversalClient
	store Store
	cfg   Config
}

// New returns a Replayer.
func New(rdb redis.UniversalClient, store Store, cfg Config) *Replayer {
	if cfg.Layout.Tenants == nil {
		cfg.Layout.Tenants = make(map[string]bool, len(cfg.Tenants))
		for _, t := range cfg.Tenants {
			cfg.Layout.Tenants[t] = true
		}
	}
	if cfg.PageSize <= 0 {
		cfg.PageSize = 500
	}
	if cfg.Rate > 0 && float64(cfg.PageSize) > cfg.Rate {
		// Small pages keep a rate limit smooth.
		cfg.PageSize = max(1, int(cfg.Rate))
	}
	if cfg.MaxBatchBytes <= 0 {
		cfg.MaxBatchBytes = 8 << 20
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = 8
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	return &Replayer{rdb: rdb, store: store, cfg: cfg}
}

// Filter selects streams and a range of entries.
type Filter struct {
	// Tenant, Namespace and Topic match exactly when not empty.
	Tenant, Namespace, Topic string
	// Kinds are the stream kinds (empty: every kind with a decoder).
	Kinds []keyspace.Kind
	// Range is the inclusive id range (the zero value is empty: use All).
	Range Range
}

// orAll returns f with an empty (zero) Range replaced by All, as Replay and
// Verify read it.
func (f Filter) orAll() Filter {
	if f.Range == (Range{}) {
		f.Range = All
	}
	return f
}

// stopwatch starts timing a report: the returned func, deferred, sets
// *seconds to the time since and then calls total.
func stopwatch(seconds *float64, total func()) func() {
	start := time.Now()
	return func() {
		*seconds = time.Since(start).Seconds()
		total()
	}
}

func (f Filter) match(k keyspace.Key) bool {
	return (f.Tenant == "" || k.Tenant == f.Tenant) &&
		(f.Namespace == "" || k.Namespace == f.Namespace) &&
		(f.Topic == "" || k.Name == f.Topic)
}

// Kinds returns the kinds the replayer can decode, sorted.
func (r *Replayer) Kinds() []keyspace.Kind {
	ks := make([]keyspace.Kind, 0, len(r.cfg.Decoders))
	for k := range r.cfg.Decoders {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool { return ks[i] < ks[j] })
	return ks
}

// Streams discovers the streams a filter selects, and the streams of
// tenants that are not configured (which are never replayed).
func (r *Replayer) Streams(ctx context.Context, f Filter) (selected, unconfigured []keyspace.Key, err error) {
	kinds := f.Kinds
	if len(kinds) == 0 {
		kinds = r.Kinds()
	}
	for _, k := range kinds {
		if _, ok := r.cfg.Decoders[k]; !ok {
			return nil, nil, fmt.Errorf("stream kind %q has no decoder in this build (have %v)", k, r.Kinds())
		}
	}
	res, err := discovery.New(r.rdb, r.cfg.Layout, kinds).Scan(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("discover streams: %w", err)
	}
	tenants := make([]string, 0, len(res.ByTenant))
	for t := range res.ByTenant {
		tenants = append(tenants, t)
	}
	sort.Strings(tenants)
	for _, t := range tenants {
		for _, k := range res.ByTenant[t] {
			if f.match(k) {
				selected = append(selected, k)
			}
		}
	}
	for _, k := range res.Unconfigured {
		if f.match(k) {
			unconfigured = append(unconfigured, k)
		}
	}
	return selected, unconfigured, nil
}

// page reads up to PageSize entries of key from start to the end of rng.
func (r *Replayer) page(ctx context.Context, key string, start ID, rng Range) ([]redis.XMessage, error) {
	end := Range{From: start, To: rng.To}
	msgs, err := r.rdb.XRangeN(ctx, key, end.start(), end.end(), int64(r.cfg.PageSize)).Result()
	if err != nil {
		return nil, fmt.Errorf("xrange %s %s: %w", key, end, err)
	}
	return msgs, nil
}

// estimate guesses how many entries of key lie in rng, for progress: the
// stream length, scaled by how much of the stream's time span the range
// covers when it is bounded.
func (r *Replayer) estimate(ctx context.Context, key string, rng Range) int64 {
	info, err := r.rdb.XInfoStream(ctx, key).Result()
	if err != nil || info.Length == 0 {
		return 0
	}
	if !rng.Bounded() {
		return info.Length
	}
	first, err1 := ParseID(info.FirstEntry.ID)
	last, err2 := ParseID(info.LastEntry.ID)
	if err1 != nil || err2 != nil {
		return info.Length
	}
	lo, hi := max(first.Ms, rng.From.Ms), min(last.Ms, rng.To.Ms)
	if hi < lo {
		return 0
	}
	if last.Ms == first.Ms {
		return info.Length
	}
	return int64(float64(info.Length) * float64(hi-lo+1) / float64(last.Ms-first.Ms+1))
}

// docID returns the _id of a BSON document as a string.
func docID(doc []byte) string {
	v, err := bson.Raw(doc).LookupErr("_id")
	if err != nil {
		return ""
	}
	if s, ok := v.StringValueOK(); ok {
		return s
	}
	return v.String()
}
