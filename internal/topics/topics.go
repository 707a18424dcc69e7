// Package topics keeps each tenant's topics collection in step with the
// topic streams discovery finds: one document per (tenant, namespace, topic)
// with the shard count of its subscriptions, written only when a topic is
// first seen by this process or its shard count changes.
package topics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/redisconn"
	"github.com/chronow/persister/internal/sink"
)

// Store is what the Syncer needs of the database (sink.Writer).
type Store = sink.Databases

// Config tunes a Syncer.
type Config struct {
	// Layout is where Chronow's keys are.
	Layout keyspace.Layout
	// WriteTimeout bounds one upsert.
	WriteTimeout time.Duration
	// Refresh is how often subscription configs are read again when no
	// new topic appeared (default 1 minute).
	Refresh time.Duration
}

// Syncer upserts topics documents. Offer hands it the latest discovery
// result; Run does the work in its own goroutine, so a slow or absent
// database never delays discovery.
type Syncer struct {
	cfg   Config
	rdb   redis.UniversalClient
	store Store
	log   *slog.Logger

	offers chan map[string][]keyspace.Key

	// Owned by the goroutine running Sync.
	written  map[string]int32 // stream key → shards stored
	lastRead time.Time
	shards   map[string]int32 // stream key → shards from the last read

	mu      sync.Mutex
	warned  map[string]bool // subscription config keys reported as invalid
	lastErr map[string]bool // tenants whose last upsert failed
}

// New returns a Syncer.
func New(cfg Config, rdb redis.UniversalClient, store Store, log *slog.Logger) *Syncer {
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = time.Minute
	}
	return &Syncer{
		cfg: cfg, rdb: rdb, store: store, log: log,
		offers:  make(chan map[string][]keyspace.Key, 1),
		written: map[string]int32{},
		warned:  map[string]bool{}, lastErr: map[string]bool{},
	}
}

// Offer hands over the streams of one discovery pass, by tenant. It never
// blocks: a pass not yet synced is replaced by the newer one.
func (s *Syncer) Offer(byTenant map[string][]keyspace.Key) {
	for {
		select {
		case s.offers <- byTenant:
			return
		default:
		}
		select {
		case <-s.offers:
		default:
		}
	}
}

// Run syncs every offered pass until ctx ends.
func (s *Syncer) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case byTenant := <-s.offers:
			if err := s.Sync(ctx, byTenant); err != nil && ctx.Err() == nil {
				s.log.Warn("topics metadata sync failed; will retry after the next discovery", "err", err)
			}
		}
	}
}

// Sync upserts the topics document of every topic stream in byTenant that
// this process has not written yet or whose shard count changed. A tenant
// whose database fails is skipped until the next pass; the others go on.
func (s *Syncer) Sync(ctx context.Context, byTenant map[string][]keyspace.Key) error {
	var topics []keyspace.Key
	fresh := false
	for _, keys := range byTenant {
		for _, k := range keys {
			if k.Kind != keyspace.KindTopic {
				continue
			}
			topics = append(topics, k)
			if _, ok := s.written[k.String()]; !ok {
				fresh = true
			}
		}
	}
	if len(topics) == 0 {
		return nil
	}
	if fresh || s.shards == nil || time.Since(s.lastRead) >= s.cfg.Refresh {
		shards, err := s.readShards(ctx, topics)
		if err != nil {
			return err
		}
		s.shards, s.lastRead = shards, time.Now()
	}
	failed := map[string]error{}
	written := 0
	for _, k := range topics {
		if _, bad := failed[k.Tenant]; bad {
			continue
		}
		n := s.shards[k.String()]
		if n == 0 {
			n = 1
		}
		old, ok := s.written[k.String()]
		if ok && old == n {
			continue
		}
		if !ok {
			// First seen by this process: a document that already says
			// the same (written before a restart, or by another replica)
			// is left alone; reads are cheap, upserts are not.
			stored, err := s.stored(ctx, k)
			if err == nil && stored == n {
				s.written[k.String()] = n
				continue
			}
		}
		if err := s.upsert(ctx, k, n); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			failed[k.Tenant] = err
			continue
		}
		s.written[k.String()] = n
		written++
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for tenant := range byTenant {
		err, bad := failed[tenant]
		switch {
		case bad && !s.lastErr[tenant]:
			s.log.Warn("topics metadata not written; will retry after the next discovery", "tenant", tenant, "err", err)
		case !bad && s.lastErr[tenant]:
			s.log.Info("topics metadata written again", "tenant", tenant)
		}
		s.lastErr[tenant] = bad
	}
	if written > 0 {
		s.log.Debug("topics metadata written", "topics", written)
	}
	return nil
}

// stored returns the shard count of the topic's document, 0 when there is
// none.
func (s *Syncer) stored(ctx context.Context, k keyspace.Key) (int32, error) {
	db, err := s.store.Database(k.Tenant)
	if err != nil {
		return 0, err
	}
	fctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	defer cancel()
	var doc struct {
		Shards int32 `bson:"shards"`
	}
	err = db.Collection(config.CollTopics).FindOne(fctx, filterOf(k), options.FindOne().SetProjection(bson.D{{Key: "shards", Value: 1}})).Decode(&doc)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return 0, nil
	}
	return doc.Shards, err
}

func filterOf(k keyspace.Key) bson.D {
	return bson.D{{Key: "topic", Value: k.Name}, {Key: "tenantId", Value: k.Tenant}, {Key: "namespace", Value: k.Namespace}}
}

// upsert writes one topics document: shards and _system.updatedAt always,
// createdAt only when the document is created.
func (s *Syncer) upsert(ctx context.Context, k keyspace.Key, shards int32) error {
	if err := s.store.EnsureSchema(ctx, k.Tenant); err != nil {
		return err
	}
	db, err := s.store.Database(k.Tenant)
	if err != nil {
		return err
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	filter := filterOf(k)
	update := bson.D{
		{Key: "$set", Value: bson.D{{Key: "shards", Value: shards}, {Key: "_system.updatedAt", Value: now}}},
		{Key: "$setOnInsert", Value: bson.D{{Key: "createdAt", Value: now}}},
	}
	// Two replicas may insert the same new topic at once; the loser gets a
	// duplicate key error and its second try updates the winner's document.
	for attempt := 0; ; attempt++ {
		uctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
		_, err = db.Collection(config.CollTopics).UpdateOne(uctx, filter, update, options.Update().SetUpsert(true))
		cancel()
		if err == nil || attempt > 0 || !mongo.IsDuplicateKeyError(err) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("upsert topics document of %s: %w", k.String(), err)
	}
	return nil
}

// readShards returns, per topic stream key, the largest shardCount among
// its subscriptions' configs ({topicKey}:sub:{name}:config, field config).
// Topics without a subscription config are left out (1 shard).
func (s *Syncer) readShards(ctx context.Context, topics []keyspace.Key) (map[string]int32, error) {
	known := make(map[string]bool, len(topics))
	for _, k := range topics {
		known[k.String()] = true
	}
	cfgKeys, err := s.scanConfigs(ctx)
	if err != nil {
		return nil, err
	}
	owner := map[string]string{} // config key → topic stream key
	for _, ck := range cfgKeys {
		if t, ok := topicOf(ck, known); ok {
			owner[ck] = t
		}
	}
	out := map[string]int32{}
	if len(owner) == 0 {
		return out, nil
	}
	cmds := map[string]*redis.StringCmd{}
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for ck := range owner {
			cmds[ck] = p.HGet(ctx, ck, "config")
		}
		return nil
	})
	if err != nil && !isNilOnly(cmds) {
		return nil, fmt.Errorf("read subscription configs: %w", err)
	}
	for ck, c := range cmds {
		v, err := c.Result()
		if err != nil {
			continue // no config field: counts as no shards given
		}
		n, ok := ShardCount(v)
		if !ok {
			s.warnOnce(ck)
			continue
		}
		if t := owner[ck]; n > out[t] {
			out[t] = n
		}
	}
	return out, nil
}

func isNilOnly(cmds map[string]*redis.StringCmd) bool {
	for _, c := range cmds {
		if err := c.Err(); err != nil && err != redis.Nil {
			return false
		}
	}
	return true
}

func (s *Syncer) warnOnce(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.warned[key] {
		return
	}
	s.warned[key] = true
	s.log.Warn("subscription config has no valid shardCount; ignored for the topic's shard count", "key", key)
}

// scanConfigs lists the subscription config hashes under the prefix (on
// every master of a cluster).
func (s *Syncer) scanConfigs(ctx context.Context) ([]string, error) {
	pattern := s.cfg.Layout.Pattern(keyspace.KindTopic) + ":sub:*:config"
	var mu sync.Mutex
	var out []string
	scan := func(ctx context.Context, c redis.Cmdable) error {
		it := c.ScanType(ctx, 0, pattern, 1000, "hash").Iterator()
		for it.Next(ctx) {
			mu.Lock()
			out = append(out, it.Val())
			mu.Unlock()
		}
		if err := it.Err(); err != nil {
			return fmt.Errorf("scan %q: %w", pattern, err)
		}
		return nil
	}
	err := redisconn.ForEachMaster(ctx, s.rdb, scan)
	return out, err
}

// topicOf returns the topic stream key a subscription config key belongs to:
// the longest prefix before ":sub:" that is a known topic stream (topic and
// subscription names may contain ':').
func topicOf(cfgKey string, known map[string]bool) (string, bool) {
	rest, ok := strings.CutSuffix(cfgKey, ":config")
	if !ok {
		return "", false
	}
	best := ""
	for i := 0; ; {
		j := strings.Index(rest[i:], ":sub:")
		if j < 0 {
			break
		}
		cand := rest[:i+j]
		if known[cand] {
			best = cand
		}
		i += j + 1
	}
	return best, best != ""
}

// ShardCount reads shardCount from a subscription config JSON; ok is false
// when it is missing or not a positive integer.
func ShardCount(configJSON string) (int32, bool) {
	var c struct {
		ShardCount *json.Number `json:"shardCount"`
	}
	d := json.NewDecoder(strings.NewReader(configJSON))
	d.UseNumber()
	if err := d.Decode(&c); err != nil || c.ShardCount == nil {
		return 0, false
	}
	n, err := c.ShardCount.Int64()
	if err != nil || n < 1 || n > 1<<30 {
		return 0, false
	}
	return int32(n), true
}
