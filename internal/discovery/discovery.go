// Package discovery finds Chronow's streams in Redis by key pattern and
// sorts them into those the persister consumes, those of tenants it is not
// configured for, and Chronow-shaped keys it cannot consume (with why).
package discovery

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/redisconn"
)

// Reasons a Chronow-shaped key is not consumed (label values of
// persister_keys_ignored).
const (
	// ReasonUnconfiguredTenant: the tenant has no database configured.
	ReasonUnconfiguredTenant = "unconfigured_tenant"
	// ReasonOtherPrefix: the key has the shape of a Chronow key under a
	// prefix other than REDIS_KEY_PREFIX.
	ReasonOtherPrefix = "other_prefix"
	// ReasonPrefixForm: the key is under the prefix, in the form that
	// PERSISTER_KEY_PREFIX_FORM does not accept.
	ReasonPrefixForm = "prefix_form"
	// ReasonAmbiguous: the key parses under the single and the doubled
	// prefix alike, and the configured tenants do not settle it.
	ReasonAmbiguous = "ambiguous_prefix"
	// ReasonConflict: the stream exists under the single and the doubled
	// prefix (two apps publish one topic with different redis.keyPrefix
	// settings). Both would be stored as the same topic, and entries with
	// equal ids would collide: the doubled form is consumed, this one not.
	ReasonConflict = "prefix_conflict"
)

// Reasons lists every reason, for metrics that export each at 0.
func Reasons() []string {
	return []string{ReasonUnconfiguredTenant, ReasonOtherPrefix, ReasonPrefixForm, ReasonAmbiguous, ReasonConflict}
}

// Ignored is a Chronow-shaped key that is not consumed.
type Ignored struct {
	Key    string
	Kind   keyspace.Kind
	Reason string
	// Hint says what to set to consume it.
	Hint string
}

// Result is one discovery pass.
type Result struct {
	// ByTenant maps a configured tenant to its stream keys, sorted.
	ByTenant map[string][]keyspace.Key
	// Unconfigured lists streams whose tenant is not configured.
	Unconfigured []keyspace.Key
	// Ignored lists the other Chronow-shaped streams that are not
	// consumed, sorted by key.
	Ignored []Ignored
}

// Scanner scans for stream keys of some kinds.
type Scanner struct {
	rdb    redis.UniversalClient
	layout keyspace.Layout
	kinds  []keyspace.Kind
	// Count is the SCAN COUNT hint.
	Count int64
}

// New returns a Scanner for the given kinds under the layout; the layout's
// Tenants are the configured tenants.
func New(rdb redis.UniversalClient, layout keyspace.Layout, kinds []keyspace.Kind) *Scanner {
	return &Scanner{rdb: rdb, layout: layout, kinds: kinds, Count: 1000}
}

// Pattern returns the SCAN MATCH pattern of every Chronow-shaped key of a
// kind under any prefix: the persister lists (never reads) keys outside its
// prefix only to say why it does not consume them.
func Pattern(kind keyspace.Kind) string {
	return "*:*:" + string(kind) + ":*"
}

// Scan runs one full SCAN per kind (on every master of a cluster).
func (s *Scanner) Scan(ctx context.Context) (Result, error) {
	res := Result{ByTenant: map[string][]keyspace.Key{}}
	var mu sync.Mutex
	seen := map[string]bool{}
	scanOne := func(ctx context.Context, c redis.Cmdable) error {
		for _, kind := range s.kinds {
			pattern := Pattern(kind)
			it := c.ScanType(ctx, 0, pattern, s.Count, "stream").Iterator()
			for it.Next(ctx) {
				name := it.Val()
				mu.Lock()
				if !seen[name] {
					seen[name] = true
					s.sort(&res, name, kind)
				}
				mu.Unlock()
			}
			if err := it.Err(); err != nil {
				return fmt.Errorf("scan %q: %w", pattern, err)
			}
		}
		return nil
	}
	err := redisconn.ForEachMaster(ctx, s.rdb, scanOne)
	if err != nil {
		return Result{}, err
	}
	var conflicts []Ignored
	for t := range res.ByTenant {
		res.ByTenant[t], conflicts = settleConflicts(res.ByTenant[t], conflicts)
		sortKeys(res.ByTenant[t])
	}
	if err := s.reportNonEmpty(ctx, &res, conflicts); err != nil {
		return Result{}, err
	}
	sortKeys(res.Unconfigured)
	sort.Slice(res.Ignored, func(i, j int) bool { return res.Ignored[i].Key < res.Ignored[j].Key })
	return res, nil
}

// reportNonEmpty reports the streams left out by settleConflicts that hold
// entries. An empty one is what Chronow v0.9 itself makes for an app that
// passes redis.keyPrefix: its XGROUP CREATE ... MKSTREAM is not prefixed
// by ioredis, so ensureTopic and ensureSubscription leave an empty stream
// with the app's groups under the single prefix; nothing there is lost.
func (s *Scanner) reportNonEmpty(ctx context.Context, res *Result, conflicts []Ignored) error {
	for _, ig := range conflicts {
		n, err := s.rdb.XLen(ctx, ig.Key).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("xlen %q: %w", ig.Key, err)
		}
		if n > 0 {
			res.Ignored = append(res.Ignored, ig)
		}
	}
	return nil
}

// settleConflicts keeps one stream of each (namespace, kind, name): when a
// stream exists under the single and the doubled prefix, the doubled one
// (what Chronow writes when the app passes redis.keyPrefix, as its
// configFromEnv does); the other is appended to conflicts.
func settleConflicts(keys []keyspace.Key, conflicts []Ignored) ([]keyspace.Key, []Ignored) {
	type logical struct {
		ns   string
		kind keyspace.Kind
		name string
	}
	best := make(map[logical]int, len(keys))
	out := keys[:0:0]
	for _, k := range keys {
		l := logical{k.Namespace, k.Kind, k.Name}
		i, dup := best[l]
		if !dup {
			best[l] = len(out)
			out = append(out, k)
			continue
		}
		keep, drop := out[i], k
		if len(k.Prefix) > len(keep.Prefix) {
			keep, drop = k, keep
		}
		out[i] = keep
		conflicts = append(conflicts, Ignored{Key: drop.String(), Kind: drop.Kind, Reason: ReasonConflict,
			Hint: fmt.Sprintf("%q is consumed instead (the same topic under the doubled prefix: apps publish it with different redis.keyPrefix settings, and their entries would collide in the warm tier); give the apps one setting, or pin PERSISTER_KEY_PREFIX_FORM=single in a second persister with its own PERSISTER_GROUP and databases", keep.String())})
	}
	return out, conflicts
}

// sort files one key found by the pattern of kind.
func (s *Scanner) sort(res *Result, name string, kind keyspace.Kind) {
	k, err := s.layout.Parse(name)
	switch {
	case err == nil && k.Kind == kind:
		if s.layout.Tenants[k.Tenant] {
			res.ByTenant[k.Tenant] = append(res.ByTenant[k.Tenant], k)
		} else {
			res.Unconfigured = append(res.Unconfigured, k)
		}
		return
	case errors.Is(err, keyspace.ErrAmbiguous):
		res.Ignored = append(res.Ignored, Ignored{Key: name, Kind: kind, Reason: ReasonAmbiguous,
			Hint: "set PERSISTER_KEY_PREFIX_FORM=single or doubled, or configure only the tenant it belongs to"})
		return
	}
	if ig, ok := Classify(s.layout, name, kind); ok {
		res.Ignored = append(res.Ignored, ig)
	}
}

// Classify says why a key that the layout does not accept is not consumed,
// when it has the shape of a Chronow key of kind under some prefix
// ({prefix}{tenant}:{namespace}:{kind}:{name}); ok is false for keys of
// another shape.
func Classify(layout keyspace.Layout, name string, kind keyspace.Kind) (Ignored, bool) {
	if !chronowShaped(name, kind) {
		return Ignored{}, false
	}
	if layout.Prefix != "" && layout.Form != keyspace.FormAuto {
		other := keyspace.FormSingle
		if layout.Form == keyspace.FormSingle {
			other = keyspace.FormDoubled
		}
		if k, err := (keyspace.Layout{Prefix: layout.Prefix, Form: other}).Parse(name); err == nil && k.Kind == kind {
			return Ignored{Key: name, Kind: kind, Reason: ReasonPrefixForm,
				Hint: fmt.Sprintf("the key has the prefix %s form; set PERSISTER_KEY_PREFIX_FORM=auto (or %s)", other, other)}, true
		}
	}
	return Ignored{Key: name, Kind: kind, Reason: ReasonOtherPrefix,
		Hint: fmt.Sprintf("the key is not under REDIS_KEY_PREFIX=%q; set REDIS_KEY_PREFIX to the app's prefix to consume it", layout.Prefix)}, true
}

// chronowShaped reports whether name holds ":{kind}:" after at least two
// non-empty segments (tenant and namespace) and before a non-empty name.
func chronowShaped(name string, kind keyspace.Kind) bool {
	sep := ":" + string(kind) + ":"
	for i := strings.Index(name, sep); i >= 0; {
		before, after := name[:i], name[i+len(sep):]
		parts := strings.Split(before, ":")
		if after != "" && len(parts) >= 2 && parts[len(parts)-1] != "" && parts[len(parts)-2] != "" {
			return true
		}
		j := strings.Index(name[i+1:], sep)
		if j < 0 {
			break
		}
		i += 1 + j
	}
	return false
}

func sortKeys(ks []keyspace.Key) {
	sort.Slice(ks, func(i, j int) bool { return ks[i].String() < ks[j].String() })
}
