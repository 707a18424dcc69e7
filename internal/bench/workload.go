package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/message"
	"github.com/chronow/persister/internal/publisher"
)

// KeyPrefix is the Redis key prefix of every benchmark stream, so that a
// run against an existing server touches only its own keys.
const KeyPrefix = "cwbench:"

// DBPrefix starts the name of every benchmark database.
const DBPrefix = "bench_"

// Layout spreads entries over tenants, namespaces and topics, round robin
// over the streams, so every stream holds the same share of a backlog, and
// gives their payloads a shape.
type Layout struct {
	Name       string
	Tenants    int
	Namespaces int
	Topics     int
	// Shape is the payload's shape: ShapeLarge (the zero value) or
	// ShapeSmall.
	Shape string
}

// Payload shapes.
const (
	// ShapeLarge is an order of a dozen fields padded by one long string
	// (Payload).
	ShapeLarge = "few large fields"
	// ShapeSmall is an object of many short fields (SmallFieldsPayload).
	ShapeSmall = "many small fields"
)

// WithShape returns the layout with another payload shape and a name
// that says so.
func (l Layout) WithShape(shape string) Layout {
	l.Shape = shape
	if shape == ShapeSmall {
		l.Name += "-small"
	}
	return l
}

// ShapeName is the layout's payload shape for the table.
func (l Layout) ShapeName() string {
	if l.Shape == "" {
		return ShapeLarge
	}
	return l.Shape
}

// Streams is the number of streams of the layout.
func (l Layout) Streams() int { return l.Tenants * l.Namespaces * l.Topics }

// String describes the layout for the table.
func (l Layout) String() string {
	return fmt.Sprintf("%d streams (%d tenants × %d namespaces × %d topics), %s", l.Streams(), l.Tenants, l.Namespaces, l.Topics, l.ShapeName())
}

// TenantIDs lists the layout's tenants.
func (l Layout) TenantIDs() []string {
	out := make([]string, l.Tenants)
	for i := range out {
		out[i] = fmt.Sprintf("t%02d", i)
	}
	return out
}

// DBName is the database of a benchmark tenant.
func DBName(tenant string) string { return DBPrefix + tenant }

// Stream returns tenant, namespace and topic of stream s (0 ≤ s < Streams).
func (l Layout) Stream(s int) (tenant, namespace, topic string) {
	t := s / (l.Namespaces * l.Topics)
	n := (s / l.Topics) % l.Namespaces
	p := s % l.Topics
	return fmt.Sprintf("t%02d", t), fmt.Sprintf("ns%d", n), fmt.Sprintf("topic-%02d", p)
}

// StreamKeys lists every stream key of the layout.
func (l Layout) StreamKeys() []string {
	out := make([]string, l.Streams())
	for s := range out {
		t, n, p := l.Stream(s)
		out[s] = keyspace.Key{Prefix: KeyPrefix, Tenant: t, Namespace: n, Kind: keyspace.KindTopic, Name: p}.String()
	}
	return out
}

// Message returns entry seq of the workload: stream seq%Streams, a JSON
// payload of payloadBytes bytes, two headers.
func (l Layout) Message(seq, payloadBytes int) publisher.Message {
	t, n, p := l.Stream(seq % l.Streams())
	payload := Payload(seq, payloadBytes)
	if l.Shape == ShapeSmall {
		payload = SmallFieldsPayload(seq, payloadBytes)
	}
	return publisher.Message{
		Tenant: t, Namespace: n, Topic: p,
		Payload: payload,
		Headers: map[string]string{"traceId": "trace-" + strconv.Itoa(seq), "source": "persister-bench"},
	}
}

// Payload returns a JSON order of exactly size bytes (at least ~300): nested
// objects, an array, strings, floats and an integer beyond 2^53, like a
// real Chronow payload, padded with a note string.
func Payload(seq, size int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `{"orderId":"ord-%08d","customer":{"id":%d,"name":"Jane Doe","vip":%t},"amount":9007199254740993,"currency":"EUR","items":[`, seq, seq%1000, seq%2 == 0)
	for i := range 3 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"sku":"SKU-%06d","qty":%d,"price":%d.99}`, (seq+i)%1000000, i+1, 10+i)
	}
	b.WriteString(`],"note":"`)
	pad := size - b.Len() - len(`"}`)
	for i := 0; i < pad; i++ {
		b.WriteByte('a' + byte((seq+i)%26))
	}
	b.WriteString(`"}`)
	return b.String()
}

// SmallFieldsPayload returns a JSON object of exactly size bytes (at least
// ~100) made of many short fields: integers, short strings, booleans and
// floats in turn, about 14 bytes each (70 fields in 1 KB), the shape of a
// flat event or metrics record.
func SmallFieldsPayload(seq, size int) string {
	var b strings.Builder
	b.Grow(size)
	fmt.Fprintf(&b, `{"id":%d`, seq)
	for i := 0; ; i++ {
		var f string
		switch i % 4 {
		case 0:
			f = fmt.Sprintf(`,"n%02d":%d`, i, (seq*31+i)%100000)
		case 1:
			f = fmt.Sprintf(`,"s%02d":"%c%c%c"`, i, 'a'+byte((seq+i)%26), 'a'+byte(i%26), 'a'+byte((seq/26+i)%26))
		case 2:
			f = fmt.Sprintf(`,"b%02d":%t`, i, (seq+i)%3 == 0)
		default:
			f = fmt.Sprintf(`,"f%02d":%d.%d`, i, seq%1000, i%10+1)
		}
		// Room for this field and the closing pad string ,"z":"…"}.
		if b.Len()+len(f)+len(`,"z":""}`) > size {
			break
		}
		b.WriteString(f)
	}
	b.WriteString(`,"z":"`)
	for b.Len() < size-len(`"}`) {
		b.WriteByte('x')
	}
	b.WriteString(`"}`)
	return b.String()
}

// Fields turns a publisher entry into the field map XREADGROUP returns.
func Fields(m publisher.Message) message.Fields {
	v := m.Values()
	f := make(message.Fields, len(v)/2)
	for i := 0; i+1 < len(v); i += 2 {
		f[v[i].(string)] = v[i+1]
	}
	return f
}

// Load XADDs entries [0, n) of the layout as Chronow does (no trimming:
// MAXLEN would cut a backlog bigger than 100k per stream), with pipelines of
// 1000 from two connections, and returns the rate.
func Load(ctx context.Context, rdb redis.UniversalClient, l Layout, n, payloadBytes int) (float64, error) {
	pub := &publisher.Publisher{RDB: rdb, Prefix: KeyPrefix, MaxLen: -1}
	const chunk = 1000
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	const workers = 2
	for w := range workers {
		g.Go(func() error {
			batch := make([]publisher.Message, 0, chunk)
			for from := w * chunk; from < n; from += workers * chunk {
				batch = batch[:0]
				for seq := from; seq < min(from+chunk, n); seq++ {
					batch = append(batch, l.Message(seq, payloadBytes))
				}
				if _, err := pub.PublishBatch(gctx, batch); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return 0, fmt.Errorf("load backlog: %w", err)
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// WriteChronos writes the chronos-db config routing every tenant of the
// layout to DBName(tenant) on mongoURI, and returns its path.
func WriteChronos(dir, mongoURI string, l Layout) (string, error) {
	type td struct {
		TenantID  string `json:"tenantId"`
		DBConnRef string `json:"dbConnRef"`
		DBName    string `json:"dbName"`
	}
	list := make([]td, 0, l.Tenants)
	for _, id := range l.TenantIDs() {
		list = append(list, td{TenantID: id, DBConnRef: "mongo-primary", DBName: DBName(id)})
	}
	doc := map[string]any{
		"dbConnections":     map[string]any{"mongo-primary": map[string]string{"mongoUri": mongoURI}},
		"spacesConnections": map[string]any{},
		"databases":         map[string]any{"messaging": map[string]any{"tenantDatabases": list}},
	}
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, "chronos-"+l.Name+".json")
	return p, os.WriteFile(p, data, 0o600)
}
