package sharedmem

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/chronow/persister/internal/discovery"
	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/redisconn"
	"github.com/chronow/persister/internal/retry"

	"github.com/chronow/persister/metrics"
)

// verifyEvery makes every verifyEvery-th reconcile pass compare every key
// with the database instead of trusting the in-memory hash cache, so a
// document changed or removed behind the persister's back is repaired.
const verifyEvery = 12

// reconcileChunk is how many keys are looked up and read at once. Large
// enough that FerretDB, which scans the collection for every lookup query,
// is asked few times; only changed values are transferred.
const reconcileChunk = 1024

// minPassGap is the least time between two passes when passes are asked
// for (a subscription came back, a read failed).
const minPassGap = time.Second

// reconcileLoop runs a pass at start, then every ReconcileInterval and when
// kicked, until ctx ends.
func (c *Carrier) reconcileLoop(ctx context.Context) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	pass := 0
	var failures retry.Failures
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-c.kick:
			timer.Stop() // Go >= 1.23: no stale tick is delivered after Stop
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(minPassGap):
			}
		}
		if c.cfg.Notify {
			c.ensureNotify(ctx)
		}
		pass++
		start := time.Now()
		st, err := c.reconcileOnce(ctx, pass%verifyEvery == 1)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			c.m.RedisErrors.WithLabelValues(metrics.OpSMReconcile).Inc()
			failures.Fail(c.log, "shared memory: reconcile pass failed; will retry", err)
		} else {
			failures.Reset()
			d := time.Since(start)
			c.m.SMReconcileDuration.Observe(d.Seconds())
			c.m.SMReconcileLast.SetToCurrentTime()
			c.log.Debug("shared memory: reconcile pass done", "keys", st.keys, "read", st.read, "unchanged", st.same, "duration", d.String())
		}
		timer.Reset(c.cfg.ReconcileInterval)
	}
}

// passStats counts one pass.
type passStats struct {
	keys, read, same atomic.Int64
}

type passResult struct{ keys, read, same int64 }

// reconcileOnce scans every master for shared-memory string keys and sends
// the values whose hash differs from the stored one to the writer. With
// verify, stored hashes are read from the database for every key.
func (c *Carrier) reconcileOnce(ctx context.Context, verify bool) (passResult, error) {
	var st passStats
	pattern := discovery.Pattern(keyspace.KindSharedMemory)
	scanNode := func(ctx context.Context, node redis.Cmdable) error {
		it := node.ScanType(ctx, 0, pattern, c.cfg.ScanCount, "string").Iterator()
		chunk := make([]keyspace.Key, 0, reconcileChunk)
		for it.Next(ctx) {
			k, ok := c.parseKey(it.Val())
			if !ok {
				continue
			}
			st.keys.Add(1)
			c.m.SMReconcileKeys.Inc()
			chunk = append(chunk, k)
			if len(chunk) == reconcileChunk {
				if err := c.reconcileChunk(ctx, chunk, verify, &st); err != nil {
					return err
				}
				chunk = chunk[:0]
			}
		}
		if err := it.Err(); err != nil {
			return fmt.Errorf("scan %q: %w", pattern, err)
		}
		return c.reconcileChunk(ctx, chunk, verify, &st)
	}
	err := redisconn.ForEachMaster(ctx, c.rdb, scanNode)
	return passResult{keys: st.keys.Load(), read: st.read.Load(), same: st.same.Load()}, err
}

// reconcileChunk makes sure the cache knows the stored hash of each key
// (reading the database for those it does not know), then reads each key
// from Redis, the value only where its hash differs, and hands the result to
// the writer.
func (c *Carrier) reconcileChunk(ctx context.Context, keys []keyspace.Key, verify bool, st *passStats) error {
	if len(keys) == 0 {
		return nil
	}
	var unknown []keyspace.Key
	for _, k := range keys {
		if verify || c.cache.get(k.String()).hash == "" {
			unknown = append(unknown, k)
		}
	}
	if err := c.lookupStored(ctx, unknown); err != nil {
		// Not fatal: without the stored hash, values are read and the
		// writer's conditional upsert sorts it out.
		c.m.RedisErrors.WithLabelValues(metrics.OpSMLookup).Inc()
		c.log.Debug("shared memory: reading stored hashes failed", "err", err)
	}
	known := make([]string, len(keys))
	for i, k := range keys {
		known[i] = c.cache.get(k.String()).hash
	}
	res, err := capture(ctx, c.rdb, keys, known)
	if err != nil {
		return err
	}
	obs := make([]Observation, 0, len(res))
	for _, r := range res {
		switch r.status {
		case statusValue:
			st.read.Add(1)
			obs = append(obs, Observation{Key: r.key, Version: r.version, Value: r.value, Hash: r.hash, Source: SourceReconcile})
		case statusSame:
			st.same.Add(1)
			obs = append(obs, Observation{Key: r.key, Version: r.version, Hash: r.hash, Unchanged: true, Source: SourceReconcile})
		case statusWrongType:
			c.m.SMKeysIgnored.WithLabelValues(IgnoredNotString).Inc()
		}
	}
	if !c.send(ctx, obs) {
		return ctx.Err()
	}
	return nil
}

// lookupStored reads the stored hash of keys from their tenants' databases
// into the cache, one query per tenant and namespace.
func (c *Carrier) lookupStored(ctx context.Context, keys []keyspace.Key) error {
	if len(keys) == 0 {
		return nil
	}
	type group struct{ prefix, tenant, ns string }
	groups := map[group][]string{}
	for _, k := range keys {
		g := group{k.Prefix, k.Tenant, k.Namespace}
		groups[g] = append(groups[g], k.Name)
	}
	var eg errgroup.Group
	eg.SetLimit(4)
	for g, names := range groups {
		eg.Go(func() error {
			mark := c.cache.mark()
			found, err := c.store.lookup(ctx, g.tenant, g.ns, names)
			if err != nil {
				return err
			}
			for _, name := range names {
				st, ok := found[name]
				k := keyspace.Key{Prefix: g.prefix, Tenant: g.tenant, Namespace: g.ns, Kind: keyspace.KindSharedMemory, Name: name}
				c.cache.applyLookup(k.String(), ok, st, mark)
			}
			return nil
		})
	}
	return eg.Wait()
}
