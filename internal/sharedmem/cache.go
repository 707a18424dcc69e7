package sharedmem

import "sync"

// hashCache remembers, per Redis key, the hash and version the collection is
// known to hold, so unchanged values are skipped without a database read.
// It is an optimization only: a missing entry, or one with an empty hash,
// means "unknown: ask the database".
//
// Every entry carries the sequence number of the change that set it. A
// database lookup started at mark m only replaces entries older than m, so a
// slow lookup never overwrites what a write confirmed while it ran.
type hashCache struct {
	mu  sync.Mutex
	max int
	seq uint64
	m   map[string]cacheEntry
}

type cacheEntry struct {
	hash    string
	version int64
	seq     uint64
}

func newHashCache(max int) *hashCache {
	return &hashCache{max: max, m: map[string]cacheEntry{}}
}

// get returns the entry for key; its hash is "" when the state is unknown.
func (c *hashCache) get(key string) cacheEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[key]
}

// set records that the collection holds hash at version for key.
func (c *hashCache) set(key, hash string, version int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(key, cacheEntry{hash: hash, version: version})
}

func (c *hashCache) putLocked(key string, e cacheEntry) {
	if _, ok := c.m[key]; !ok && len(c.m) >= c.max {
		// Full: start again rather than track recency. Lookups refill it.
		clear(c.m)
	}
	c.seq++
	e.seq = c.seq
	c.m[key] = e
}

// drop marks key's stored state unknown. The empty entry stays, so that a
// lookup started earlier cannot bring back what it read before.
func (c *hashCache) drop(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(key, cacheEntry{})
}

// mark returns the current sequence number, taken before a lookup.
func (c *hashCache) mark() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seq
}

// applyLookup records what a lookup started at mark found for key: the
// stored state, or found=false for no document. Entries set after mark win.
func (c *hashCache) applyLookup(key string, found bool, st storedState, mark uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[key]; ok && e.seq > mark {
		return
	}
	if !found || st.hash == "" {
		delete(c.m, key)
		return
	}
	c.putLocked(key, cacheEntry{hash: st.hash, version: st.version})
}

// len returns the number of entries.
func (c *hashCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
