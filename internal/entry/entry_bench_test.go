package entry

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/publisher"
	"github.com/chronow/persister/internal/testenv"
)

// chronowEntry returns a topic entry exactly as XREADGROUP hands it to the
// decoder: Chronow's five string fields, a 1 KB JSON payload.
func chronowEntry(seq int) redis.XMessage {
	var p strings.Builder
	fmt.Fprintf(&p, `{"orderId":"ord-%08d","customer":{"id":%d,"name":"Jane Doe","vip":true},"amount":9007199254740993,"currency":"EUR","items":[`, seq, seq%1000)
	for i := range 12 {
		if i > 0 {
			p.WriteByte(',')
		}
		fmt.Fprintf(&p, `{"sku":"SKU-%06d","qty":%d,"price":%d.99}`, seq+i, i+1, 10+i)
	}
	p.WriteString(`],"note":"`)
	for p.Len() < 1022 {
		p.WriteByte('x')
	}
	p.WriteString(`"}`)
	m := publisher.Message{Tenant: "t00", Namespace: "ns0", Topic: "orders", Payload: p.String(),
		Headers: map[string]string{"traceId": fmt.Sprintf("trace-%d", seq), "source": "bench"}}
	v := m.Values()
	values := map[string]any{}
	for i := 0; i+1 < len(v); i += 2 {
		values[v[i].(string)] = v[i+1]
	}
	return redis.XMessage{ID: fmt.Sprintf("1732561200123-%d", seq), Values: values}
}

// BenchmarkDecodeTopic1KB is the daemon's per-entry decoding work: a Chronow
// topic entry with a 1 KB payload into its messages document.
func BenchmarkDecodeTopic1KB(b *testing.B) {
	key := keyspace.Key{Prefix: "cw:", Tenant: "t00", Namespace: "ns0", Kind: keyspace.KindTopic, Name: "orders"}
	msg := chronowEntry(7)
	dec := Decoders()[keyspace.KindTopic]
	now := time.Now()
	b.SetBytes(int64(len(msg.Values["payload"].(string))))
	b.ReportAllocs()
	cpu0 := testenv.CPUTime()
	for b.Loop() {
		it, defects, err := dec.Decode(key, msg, now)
		if err != nil || len(defects) > 0 || len(it.Doc) == 0 {
			b.Fatalf("decode: %v, defects %v", err, defects)
		}
	}
	testenv.ReportCPUPerOp(b, cpu0)
}
