package message

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/chronow/persister/internal/keyspace"
)

func chronowFields(payload string) Fields {
	sum := sha256.Sum256([]byte(payload))
	return Fields{
		"payload":     payload,
		"headers":     `{"traceId":"t-1"}`,
		"hash":        hex.EncodeToString(sum[:]),
		"size":        itoa(len(payload)),
		"publishedAt": "2026-11-25T19:00:00.123Z",
	}
}

func itoa(n int) string { return fmtInt(n) }

func fmtInt(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for n > 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	return string(b)
}

var key = keyspace.Key{Prefix: "cw:", Tenant: "tenant-a", Namespace: "payments", Kind: keyspace.KindTopic, Name: "orders:eu"}

func build(t *testing.T, f Fields) (Doc, bson.M) {
	t.Helper()
	var b Builder
	d, err := b.Topic(key, "1732561200123-7", f, time.UnixMilli(1800000000000))
	if err != nil {
		t.Fatal(err)
	}
	var m bson.M
	if err := bson.Unmarshal(d.Raw, &m); err != nil {
		t.Fatal(err)
	}
	return d, m
}

func TestTopicGood(t *testing.T) {
	d, m := build(t, chronowFields(`{"amount":9007199254740993,"n":[1,2]}`))
	if len(d.Defects) != 0 {
		t.Errorf("defects = %v, want none", d.Defects)
	}
	if got, want := d.ID, "payments:orders:eu:1732561200123-7"; got != want {
		t.Errorf("ID = %q, want %q", got, want)
	}
	checks := map[string]any{
		"_id": d.ID, "topic": "orders:eu", "msgId": "1732561200123-7", "tenantId": "tenant-a", "namespace": "payments",
	}
	for k, want := range checks {
		if m[k] != want {
			t.Errorf("%s = %v, want %v", k, m[k], want)
		}
	}
	if got := m["payload"].(bson.M)["amount"]; got != int64(9007199254740993) {
		t.Errorf("payload.amount = %T %v, want int64 9007199254740993", got, got)
	}
	if got := m["headers"].(bson.M)["traceId"]; got != "t-1" {
		t.Errorf("headers.traceId = %v", got)
	}
	if got := m["firstSeenAt"].(primitive.DateTime).Time().UnixMilli(); got != 1732561200123 {
		t.Errorf("firstSeenAt = %d, want the id time", got)
	}
	if got := m["publishedAt"].(primitive.DateTime).Time().UnixMilli(); got != time.Date(2026, 11, 25, 19, 0, 0, 123e6, time.UTC).UnixMilli() {
		t.Errorf("publishedAt = %d", got)
	}
	if got := m["size"]; got != int64(len(`{"amount":9007199254740993,"n":[1,2]}`)) {
		t.Errorf("size = %v, want the payload length", got)
	}
	sys := m["_system"].(bson.M)
	if got := sys["createdAt"].(primitive.DateTime).Time().UnixMilli(); got != 1800000000000 {
		t.Errorf("createdAt = %d", got)
	}
	if _, ok := sys["defects"]; ok {
		t.Error("_system.defects present for a good entry")
	}
}

func TestTopicDefects(t *testing.T) {
	good := chronowFields(`{"a":1}`)
	tests := []struct {
		name   string
		mutate func(Fields)
		want   []Defect
		raw    string
	}{
		{"payload not json", func(f Fields) { f["payload"] = "{nope"; f["size"] = "5"; f["hash"] = sha("{nope") }, []Defect{DefectPayloadNotJSON}, "payload"},
		{"payload missing", func(f Fields) { delete(f, "payload") }, []Defect{DefectPayloadMissing}, ""},
		{"dollar keys", func(f Fields) {
			p := `{"$x":{"a.b":1}}`
			f["payload"] = p
			f["size"] = itoa(len(p))
			f["hash"] = sha(p)
		}, []Defect{DefectKeysEscaped}, "payload"},
		{"headers not json", func(f Fields) { f["headers"] = "x" }, []Defect{DefectHeadersNotJSON}, "headers"},
		{"headers array", func(f Fields) { f["headers"] = "[1]" }, []Defect{DefectHeadersNotObject}, "headers"},
		{"headers missing", func(f Fields) { delete(f, "headers") }, []Defect{DefectHeadersMissing}, ""},
		{"size not number", func(f Fields) { f["size"] = "big" }, []Defect{DefectSizeInvalid}, "size"},
		{"size mismatch", func(f Fields) { f["size"] = "99" }, []Defect{DefectSizeMismatch}, "size"},
		{"hash mismatch", func(f Fields) { f["hash"] = sha("other") }, []Defect{DefectHashMismatch}, ""},
		{"hash missing", func(f Fields) { delete(f, "hash") }, []Defect{DefectHashMissing}, ""},
		{"bad time", func(f Fields) { f["publishedAt"] = "yesterday" }, []Defect{DefectPublishedAtBad}, "publishedAt"},
		{"lone surrogate in payload", func(f Fields) {
			p := `{"cut":"\ud83c"}`
			f["payload"] = p
			f["size"] = itoa(len(p))
			f["hash"] = sha(p)
		}, []Defect{DefectPayloadUnicode}, "payload"},
		{"lone surrogate in headers", func(f Fields) { f["headers"] = `{"h":"\udc00"}` }, []Defect{DefectHeadersUnicode}, "headers"},
		{"dotted header name", func(f Fields) { f["headers"] = `{"trace.id":"1"}` }, []Defect{DefectHeadersKeysEscaped}, "headers"},
		{"dollar header name", func(f Fields) { f["headers"] = `{"$h":"1"}` }, []Defect{DefectHeadersKeysEscaped}, "headers"},
		{"retry attempt invalid", func(f Fields) {
			delete(f, "hash")
			delete(f, "size")
			delete(f, "publishedAt")
			f["retryOf"] = "1-0"
			f["attempt"] = "x"
		}, []Defect{DefectAttemptInvalid}, "attempt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := Fields{}
			for k, v := range good {
				f[k] = v
			}
			tt.mutate(f)
			d, m := build(t, f)
			if len(d.Defects) != len(tt.want) || d.Defects[0] != tt.want[0] {
				t.Fatalf("defects = %v, want %v", d.Defects, tt.want)
			}
			sys := m["_system"].(bson.M)
			if got := sys["defects"].(bson.A); len(got) != 1 || got[0] != string(tt.want[0]) {
				t.Errorf("_system.defects = %v", got)
			}
			if tt.raw != "" {
				raw, _ := sys["raw"].(bson.M)
				if raw[tt.raw] != f[tt.raw] {
					t.Errorf("_system.raw.%s = %v, want %v", tt.raw, raw[tt.raw], f[tt.raw])
				}
			}
		})
	}
}

// TestRetryEntry: a retry entry as Chronow's nack({requeue: true}) writes it
// (payload, headers, retryOf, attempt; no hash, size, publishedAt) is a
// normal entry: retryOf and attempt are fields of their own, no defect.
func TestRetryEntry(t *testing.T) {
	d, m := build(t, Fields{"payload": `{"a":1}`, "headers": `{}`, "retryOf": "1732561200123-0", "attempt": "3"})
	if len(d.Defects) != 0 {
		t.Fatalf("defects = %v, want none", d.Defects)
	}
	if m["retryOf"] != "1732561200123-0" || m["attempt"] != int64(3) {
		t.Errorf("retryOf, attempt = %v (%T), %v (%T)", m["retryOf"], m["retryOf"], m["attempt"], m["attempt"])
	}
	for _, absent := range []string{"hash", "publishedAt", "extraFields"} {
		if _, ok := m[absent]; ok {
			t.Errorf("%s present: %v", absent, m[absent])
		}
	}
	if m["size"] != int64(len(`{"a":1}`)) {
		t.Errorf("size = %v", m["size"])
	}
	if _, ok := m["_system"].(bson.M)["defects"]; ok {
		t.Errorf("_system.defects present on a retry entry")
	}
}

func TestExtraFieldsKept(t *testing.T) {
	f := chronowFields(`1`)
	f["$weird.name"] = "v"
	_, m := build(t, f)
	if got := m["extraFields"].(bson.M)["＄weird．name"]; got != "v" {
		t.Errorf("extraFields = %v", m["extraFields"])
	}
}

func TestTooLarge(t *testing.T) {
	big := `"` + strings.Repeat("x", MaxDocBytes) + `"`
	var b Builder
	_, err := b.Topic(key, "1-0", chronowFields(big), time.Now())
	if !errors.Is(err, ErrTooLarge) {
		t.Errorf("err = %v, want ErrTooLarge", err)
	}
}

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func BenchmarkTopic1KB(b *testing.B) {
	payload := `{"orderId":"ord-1","items":[` + strings.Repeat(`{"sku":"SKU-000001","qty":2,"price":19.99,"note":"fast delivery"},`, 13) + `{"x":1}]}`
	f := chronowFields(payload)
	var bld Builder
	now := time.Now()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := bld.Topic(key, "1732561200123-7", f, now); err != nil {
			b.Fatal(err)
		}
	}
}
