package sharedmem

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/keyspace"
)

// Source says which path captured an observation.
type Source uint8

// The two capture paths.
const (
	SourceLive Source = iota + 1
	SourceReconcile
)

// tombstoneHash is the hash a cache entry holds for a stored tombstone. It
// is never a SHA-1 hex string, so every value differs from it.
const tombstoneHash = "-"

// Observation is the state of one shared-memory key as read from Redis at
// one instant.
type Observation struct {
	Key keyspace.Key
	// Version is the Redis server's clock (TIME) at the read, in
	// microseconds since the epoch. The read and the clock come from one
	// Lua script, so they are atomic: no write to the key lies between them.
	Version int64
	// Deleted marks a key found missing after a delete notification
	// (tombstone mode only).
	Deleted bool
	// Unchanged marks a read whose value hashed to the hash the caller
	// already knew; Value is then nil.
	Unchanged bool
	// Value is the raw string value (JSON text, normally).
	Value []byte
	// Hash is the SHA-1 hex of Value ("" for Deleted).
	Hash string
	// Source is the path that captured it.
	Source Source
	// refusal is the server's error when the value itself was refused: the
	// observation is then written as a rescue (val null, the exact text in
	// _system.raw.val, defect refused_by_server), so the warm copy never
	// silently keeps an older value.
	refusal string
}

// millis returns the observation's Redis time in milliseconds since the epoch.
func (o *Observation) millis() int64 { return o.Version / 1000 }

// captureScript reads a key and the server clock atomically. ARGV[1] is the
// hash the caller already knows ("" for none): when the value hashes to it,
// the value itself is not sent back.
//
// Returns {sec, usec, status[, hash[, value]]}, status one of missing,
// wrongtype, same, value.
const captureScript = `
local t = redis.call('TIME')
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'table' and v['err'] then return {t[1], t[2], 'wrongtype'} end
if not v then return {t[1], t[2], 'missing'} end
local h = redis.sha1hex(v)
if h == ARGV[1] then return {t[1], t[2], 'same', h} end
return {t[1], t[2], 'value', h, v}
`

// captureStatus is what the script found.
type captureStatus uint8

const (
	statusMissing captureStatus = iota + 1
	statusWrongType
	statusSame
	statusValue
)

type captured struct {
	key     keyspace.Key
	status  captureStatus
	version int64
	hash    string
	value   []byte
}

// capture reads keys (with the hash already known for each, or "") in one
// pipeline. It returns one result per key, in order. A Redis error for one
// key fails the whole call: the caller retries later, nothing is half done.
func capture(ctx context.Context, rdb redis.UniversalClient, keys []keyspace.Key, known []string) ([]captured, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	pipe := rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.Eval(ctx, captureScript, []string{k.String()}, known[i])
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("capture %d shared-memory keys: %w", len(keys), err)
	}
	out := make([]captured, len(keys))
	for i, cmd := range cmds {
		c, err := parseCapture(cmd.Val())
		if err != nil {
			return nil, fmt.Errorf("capture %s: %w", keys[i], err)
		}
		c.key = keys[i]
		out[i] = c
	}
	return out, nil
}

func parseCapture(v any) (captured, error) {
	arr, ok := v.([]any)
	if !ok || len(arr) < 3 {
		return captured{}, fmt.Errorf("unexpected script reply %T %v", v, v)
	}
	sec, err1 := strconv.ParseInt(fmt.Sprint(arr[0]), 10, 64)
	usec, err2 := strconv.ParseInt(fmt.Sprint(arr[1]), 10, 64)
	if err1 != nil || err2 != nil {
		return captured{}, fmt.Errorf("unexpected TIME in script reply %v", arr[:2])
	}
	c := captured{version: sec*1_000_000 + usec}
	switch s := fmt.Sprint(arr[2]); s {
	case "missing":
		c.status = statusMissing
	case "wrongtype":
		c.status = statusWrongType
	case "same":
		if len(arr) < 4 {
			return captured{}, fmt.Errorf("short script reply %v", arr)
		}
		c.status = statusSame
		c.hash = fmt.Sprint(arr[3])
	case "value":
		if len(arr) < 5 {
			return captured{}, fmt.Errorf("short script reply %v", arr)
		}
		c.status = statusValue
		c.hash = fmt.Sprint(arr[3])
		val, ok := arr[4].(string)
		if !ok {
			return captured{}, fmt.Errorf("value of type %T in script reply", arr[4])
		}
		c.value = []byte(val)
	default:
		return captured{}, fmt.Errorf("unknown status %q in script reply", s)
	}
	return c, nil
}

// Hash returns the content hash stored in _system.hash: SHA-1 hex of the raw
// value, the same as Redis' redis.sha1hex, so reconcile can compare hashes
// without reading values.
func Hash(value []byte) string {
	s := sha1.Sum(value)
	return hex.EncodeToString(s[:])
}
