// Package discovery finds Chronow's streams in Redis by key pattern and
// sorts them into those of configured tenants and the rest.
package discovery

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/keyspace"
)

// Result is one discovery pass.
type Result struct {
	// ByTenant maps a configured tenant to its stream keys, sorted.
	ByTenant map[string][]keyspace.Key
	// Unconfigured lists streams whose tenant is not configured.
	Unconfigured []keyspace.Key
}

// Scanner scans for stream keys of some kinds.
type Scanner struct {
	rdb     redis.UniversalClient
	prefix  string
	kinds   []keyspace.Kind
	tenants map[string]bool
	// Count is the SCAN COUNT hint.
	Count int64
}

// New returns a Scanner for the given kinds and configured tenants.
func New(rdb redis.UniversalClient, prefix string, kinds []keyspace.Kind, tenants []string) *Scanner {
	t := make(map[string]bool, len(tenants))
	for _, id := range tenants {
		t[id] = true
	}
	return &Scanner{rdb: rdb, prefix: prefix, kinds: kinds, tenants: t, Count: 1000}
}

// Scan runs one full SCAN per kind (on every master of a cluster).
func (s *Scanner) Scan(ctx context.Context) (Result, error) {
	res := Result{ByTenant: map[string][]keyspace.Key{}}
	var mu sync.Mutex
	seen := map[string]bool{}
	scanOne := func(ctx context.Context, c redis.Cmdable) error {
		for _, kind := range s.kinds {
			pattern := keyspace.Pattern(s.prefix, kind)
			it := c.ScanType(ctx, 0, pattern, s.Count, "stream").Iterator()
			for it.Next(ctx) {
				k, err := keyspace.Parse(s.prefix, it.Val())
				if err != nil || k.Kind != kind {
					continue
				}
				mu.Lock()
				if !seen[it.Val()] {
					seen[it.Val()] = true
					if s.tenants[k.Tenant] {
						res.ByTenant[k.Tenant] = append(res.ByTenant[k.Tenant], k)
					} else {
						res.Unconfigured = append(res.Unconfigured, k)
					}
				}
				mu.Unlock()
			}
			if err := it.Err(); err != nil {
				return fmt.Errorf("scan %q: %w", pattern, err)
			}
		}
		return nil
	}
	var err error
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return scanOne(ctx, c) })
	} else {
		err = scanOne(ctx, s.rdb)
	}
	if err != nil {
		return Result{}, err
	}
	for t := range res.ByTenant {
		sortKeys(res.ByTenant[t])
	}
	sortKeys(res.Unconfigured)
	return res, nil
}

func sortKeys(ks []keyspace.Key) {
	sort.Slice(ks, func(i, j int) bool { return ks[i].String() < ks[j].String() })
}
