// Package publisher writes entries to Redis exactly as Chronow v0.9 does, for
// the demo, the tests and the benchmark: topic entries (publish and
// publishBatch), retry entries (nack with requeue), dead letters, under the
// prefix once or twice (Doubled: an app that passes redis.keyPrefix), with
// JSON text as JavaScript's JSON.stringify writes it.
package publisher

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/keyspace"
)

// DefaultMaxLen is Chronow's default REDIS_MAX_STREAM_LEN.
const DefaultMaxLen = 100000

// RetryMaxLen is the MAXLEN ~ of a retry entry (hard-coded in Chronow).
const RetryMaxLen = 100000

// Message is one topic entry to publish.
type Message struct {
	Tenant, Namespace, Topic string
	// Payload is the JSON text of the payload (JSON.stringify(payload)).
	Payload string
	// Headers are the message headers, written as JSON.stringify would
	// (keys sorted, since a Go map has no order); nil is written as {}.
	Headers map[string]string
	// RawHeaders, when set, is written as the headers field verbatim (for
	// text a Go string cannot hold, such as a lone surrogate escape).
	RawHeaders string
	// PublishedAt defaults to now.
	PublishedAt time.Time
}

// headersText is the headers field: RawHeaders, or Headers as JSON.
func headersText(raw string, h map[string]string) string {
	if raw != "" {
		return raw
	}
	return StringifyHeaders(h)
}

// StringifyHeaders returns JSON.stringify(headers) for a string map, keys
// sorted; nil is {}.
func StringifyHeaders(h map[string]string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range slices.Sorted(maps.Keys(h)) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(Stringify(k))
		b.WriteByte(':')
		b.WriteString(Stringify(h[k]))
	}
	b.WriteByte('}')
	return b.String()
}

// Stringify returns JSON.stringify(s) for a string: quotes, backslashes and
// control characters escaped as JavaScript does (\b \f \n \r \t, others
// \u00XX), everything else as it is (no HTML escaping and no escaping of
// U+2028/U+2029, unlike encoding/json). A Go string cannot hold a lone
// surrogate; write such text as raw JSON (RawHeaders, or in Payload).
func Stringify(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\f':
			b.WriteString(`\f`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// Key returns the topic stream key of m under prefix (as given: pass the
// prefix twice for an app that sets redis.keyPrefix).
func (m Message) Key(prefix string) string {
	return keyspace.Key{Prefix: prefix, Tenant: m.Tenant, Namespace: m.Namespace, Kind: keyspace.KindTopic, Name: m.Topic}.String()
}

// Values returns the entry's fields in Chronow's order.
func (m Message) Values() []any {
	sum := sha256.Sum256([]byte(m.Payload))
	at := m.PublishedAt
	if at.IsZero() {
		at = time.Now()
	}
	return []any{
		"payload", m.Payload,
		"headers", headersText(m.RawHeaders, m.Headers),
		"hash", hex.EncodeToString(sum[:]),
		"size", strconv.Itoa(len(m.Payload)),
		"publishedAt", at.UTC().Format("2006-01-02T15:04:05.000Z"),
	}
}

// Publisher XADDs Chronow entries.
type Publisher struct {
	RDB    redis.UniversalClient
	Prefix string
	// Doubled writes the prefix twice, as Chronow does when the app passes
	// redis.keyPrefix (ioredis adds it, and Chronow's key builder too).
	Doubled bool
	// MaxLen is the approximate trim length (MAXLEN ~); 0 means DefaultMaxLen,
	// negative means no trimming.
	MaxLen int64
}

// KeyPrefix is the prefix as the keys hold it: Prefix, twice when Doubled.
func (p *Publisher) KeyPrefix() string {
	if p.Doubled {
		return p.Prefix + p.Prefix
	}
	return p.Prefix
}

// Publish adds one topic entry and returns its id.
func (p *Publisher) Publish(ctx context.Context, m Message) (string, error) {
	return p.xadd(ctx, m.Key(p.KeyPrefix()), m.Values())
}

// xadd adds one entry to stream, trimmed as configured, and returns its id.
func (p *Publisher) xadd(ctx context.Context, stream string, values []any) (string, error) {
	args := &redis.XAddArgs{Stream: stream, Values: values, ID: "*"}
	p.trim(args)
	id, err := p.RDB.XAdd(ctx, args).Result()
	if err != nil {
		return "", fmt.Errorf("xadd %s: %w", args.Stream, err)
	}
	return id, nil
}

// PublishBatch adds many entries in one pipeline and returns their ids in order.
func (p *Publisher) PublishBatch(ctx context.Context, ms []Message) ([]string, error) {
	cmds := make([]*redis.StringCmd, len(ms))
	_, err := p.RDB.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, m := range ms {
			args := &redis.XAddArgs{Stream: m.Key(p.KeyPrefix()), Values: m.Values(), ID: "*"}
			p.trim(args)
			cmds[i] = pipe.XAdd(ctx, args)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("xadd pipeline: %w", err)
	}
	ids := make([]string, len(ms))
	for i, c := range cmds {
		ids[i] = c.Val()
	}
	return ids, nil
}

func (p *Publisher) trim(args *redis.XAddArgs) {
	switch {
	case p.MaxLen == 0:
		args.MaxLen, args.Approx = DefaultMaxLen, true
	case p.MaxLen > 0:
		args.MaxLen, args.Approx = p.MaxLen, true
	}
}

// DeadLetter is one dead-letter entry as Chronow writes it.
type DeadLetter struct {
	Tenant, Namespace, Topic string
	OriginalMsgID            string
	Payload                  string
	Headers                  map[string]string
	RawHeaders               string // as Message.RawHeaders
	Reason                   string
	Deliveries               int
	FailedAt                 time.Time
}

// Key returns the dead-letter stream key under prefix.
func (d DeadLetter) Key(prefix string) string {
	return keyspace.Key{Prefix: prefix, Tenant: d.Tenant, Namespace: d.Namespace, Kind: keyspace.KindDLQ, Name: d.Topic}.String()
}

// Values returns the entry's fields in Chronow's order.
func (d DeadLetter) Values() []any {
	at := d.FailedAt
	if at.IsZero() {
		at = time.Now()
	}
	return []any{
		"originalMsgId", d.OriginalMsgID,
		"payload", d.Payload,
		"headers", headersText(d.RawHeaders, d.Headers),
		"reason", d.Reason,
		"deliveries", strconv.Itoa(d.Deliveries),
		"failedAt", at.UTC().Format("2006-01-02T15:04:05.000Z"),
	}
}

// PublishDeadLetter adds one dead-letter entry and returns its id.
func (p *Publisher) PublishDeadLetter(ctx context.Context, d DeadLetter) (string, error) {
	return p.xadd(ctx, d.Key(p.KeyPrefix()), d.Values())
}

// Retry is a retry entry as Chronow's consumer adds it to the topic stream
// when a message nacked with requeue is due: payload and headers
// re-encoded, retryOf (the original entry id) and attempt; no hash, size or
// publishedAt.
type Retry struct {
	Tenant, Namespace, Topic string
	RetryOf                  string
	Attempt                  int
	// Payload is the JSON text, as JSON.stringify(JSON.parse(original))
	// gives it (integers above 2^53 come back rounded).
	Payload    string
	Headers    map[string]string
	RawHeaders string // as Message.RawHeaders
}

// Values returns the entry's fields in Chronow's order.
func (r Retry) Values() []any {
	return []any{
		"payload", r.Payload,
		"headers", headersText(r.RawHeaders, r.Headers),
		"retryOf", r.RetryOf,
		"attempt", strconv.Itoa(r.Attempt),
	}
}

// PublishRetry adds one retry entry (MAXLEN ~ RetryMaxLen, as Chronow) and
// returns its id.
func (p *Publisher) PublishRetry(ctx context.Context, r Retry) (string, error) {
	key := Message{Tenant: r.Tenant, Namespace: r.Namespace, Topic: r.Topic}.Key(p.KeyPrefix())
	args := &redis.XAddArgs{Stream: key, Values: r.Values(), ID: "*", MaxLen: RetryMaxLen, Approx: true}
	id, err := p.RDB.XAdd(ctx, args).Result()
	if err != nil {
		return "", fmt.Errorf("xadd %s: %w", key, err)
	}
	return id, nil
}
