// Package publisher writes entries to Redis exactly as Chronow v0.9 does, for
// the demo, the tests and the benchmark.
package publisher

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/keyspace"
)

// DefaultMaxLen is Chronow's default REDIS_MAX_STREAM_LEN.
const DefaultMaxLen = 100000

// Message is one topic entry to publish.
type Message struct {
	Tenant, Namespace, Topic string
	// Payload is the JSON text of the payload (JSON.stringify(payload)).
	Payload string
	// Headers are the message headers; nil is written as {}.
	Headers map[string]string
	// PublishedAt defaults to now.
	PublishedAt time.Time
}

// Key returns the topic stream key of m under prefix.
func (m Message) Key(prefix string) string {
	return keyspace.Key{Prefix: prefix, Tenant: m.Tenant, Namespace: m.Namespace, Kind: keyspace.KindTopic, Name: m.Topic}.String()
}

// Values returns the entry's fields in Chronow's order.
func (m Message) Values() []any {
	h := m.Headers
	if h == nil {
		h = map[string]string{}
	}
	hj, _ := json.Marshal(h)
	sum := sha256.Sum256([]byte(m.Payload))
	at := m.PublishedAt
	if at.IsZero() {
		at = time.Now()
	}
	return []any{
		"payload", m.Payload,
		"headers", string(hj),
		"hash", hex.EncodeToString(sum[:]),
		"size", strconv.Itoa(len(m.Payload)),
		"publishedAt", at.UTC().Format("2006-01-02T15:04:05.000Z"),
	}
}

// Publisher XADDs Chronow entries.
type Publisher struct {
	RDB    redis.UniversalClient
	Prefix string
	// MaxLen is the approximate trim length (MAXLEN ~); 0 means DefaultMaxLen,
	// negative means no trimming.
	MaxLen int64
}

// Publish adds one topic entry and returns its id.
func (p *Publisher) Publish(ctx context.Context, m Message) (string, error) {
	args := &redis.XAddArgs{Stream: m.Key(p.Prefix), Values: m.Values(), ID: "*"}
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
			args := &redis.XAddArgs{Stream: m.Key(p.Prefix), Values: m.Values(), ID: "*"}
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
	h := d.Headers
	if h == nil {
		h = map[string]string{}
	}
	hj, _ := json.Marshal(h)
	at := d.FailedAt
	if at.IsZero() {
		at = time.Now()
	}
	return []any{
		"originalMsgId", d.OriginalMsgID,
		"payload", d.Payload,
		"headers", string(hj),
		"reason", d.Reason,
		"deliveries", strconv.Itoa(d.Deliveries),
		"failedAt", at.UTC().Format("2006-01-02T15:04:05.000Z"),
	}
}

// PublishDeadLetter adds one dead-letter entry and returns its id.
func (p *Publisher) PublishDeadLetter(ctx context.Context, d DeadLetter) (string, error) {
	args := &redis.XAddArgs{Stream: d.Key(p.Prefix), Values: d.Values(), ID: "*"}
	p.trim(args)
	id, err := p.RDB.XAdd(ctx, args).Result()
	if err != nil {
		return "", fmt.Errorf("xadd %s: %w", args.Stream, err)
	}
	return id, nil
}
