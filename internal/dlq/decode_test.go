package dlq

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"

	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/message"
	"github.com/chronow/persister/internal/rescue"
)

var testKey = keyspace.Key{Prefix: "cw:", Tenant: "acme", Namespace: "pay", Kind: keyspace.KindDLQ, Name: "orders:eu"}

func good() map[string]any {
	return map[string]any{
		"originalMsgId": "1732561200123-0",
		"payload":       `{"amount":9007199254740993,"items":[1,2]}`,
		"headers":       `{"traceId":"t-1"}`,
		"reason":        "max deliveries",
		"deliveries":    "5",
		"failedAt":      "2026-11-25T19:00:00.123Z",
	}
}

func with(change func(map[string]any)) map[string]any {
	v := good()
	change(v)
	return v
}

// set returns good() with k set to v.
func set(k string, v any) map[string]any {
	return with(func(m map[string]any) { m[k] = v })
}

// without returns good() without k.
func without(k string) map[string]any {
	return with(func(m map[string]any) { delete(m, k) })
}

// field checks that the document's field k is want.
func field(k string, want any) func(*testing.T, bson.M) {
	return func(t *testing.T, d bson.M) {
		t.Helper()
		eq(t, d, k, want)
	}
}

// fieldAndRaw checks that the document's field k is want and that
// _system.raw keeps the field as it was read.
func fieldAndRaw(k string, want, raw any) func(*testing.T, bson.M) {
	return func(t *testing.T, d bson.M) {
		t.Helper()
		eq(t, d, k, want)
		eq(t, d["_system"].(bson.M)["raw"].(bson.M), k, raw)
	}
}

func TestBuild(t *testing.T) {
	now := time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
	const id = "1732561300000-7"
	failed := time.Date(2026, 11, 25, 19, 0, 0, 123e6, time.UTC)
	idTime := time.UnixMilli(1732561300000).UTC()
	tests := []struct {
		name    string
		values  map[string]any
		defects []message.Defect
		check   func(t *testing.T, d bson.M)
	}{
		{
			name:   "chronow entry",
			values: good(),
			check: func(t *testing.T, d bson.M) {
				want := bson.M{
					"_id": "pay:orders:eu:" + id, "topic": "orders:eu", "msgId": "1732561200123-0",
					"tenantId": "acme", "namespace": "pay", "dlqId": id, "reason": "max deliveries",
					"headers": bson.M{"traceId": "t-1"}, "failedAt": failed, "deliveries": int64(5),
				}
				for k, v := range want {
					eq(t, d, k, v)
				}
				p := d["payload"].(bson.M)
				eq(t, p, "amount", int64(9007199254740993))
				sys := d["_system"].(bson.M)
				eq(t, sys, "createdAt", now)
				if _, ok := sys["defects"]; ok {
					t.Errorf("defects on a good entry: %v", sys["defects"])
				}
			},
		},
		{name: "payload not json", values: set("payload", "{oops"), defects: []message.Defect{message.DefectPayloadNotJSON}, check: fieldAndRaw("payload", "{oops", "{oops")},
		{name: "payload missing", values: without("payload"), defects: []message.Defect{message.DefectPayloadMissing}, check: field("payload", nil)},
		{
			name:    "dollar and dotted keys",
			values:  set("payload", `{"$set":{"a.b":1},"x":[{"$y":2}]}`),
			defects: []message.Defect{message.DefectKeysEscaped},
			check: func(t *testing.T, d bson.M) {
				p := d["payload"].(bson.M)
				inner := p["\uFF04set"].(bson.M)
				eq(t, inner, "a\uFF0Eb", int32(1))
				eq(t, d["_system"].(bson.M)["raw"].(bson.M), "payload", `{"$set":{"a.b":1},"x":[{"$y":2}]}`)
			},
		},
		{
			name: "lone surrogates and dotted header names (as Chronow writes them)",
			values: with(func(v map[string]any) {
				v["payload"] = `{"s":"cut \ud83c"}`
				v["headers"] = `{"trace.id":"t","$m":"\ud83c"}`
			}),
			defects: []message.Defect{message.DefectHeadersKeysEscaped, message.DefectHeadersUnicode, message.DefectPayloadUnicode},
			check: func(t *testing.T, d bson.M) {
				eq(t, d["payload"].(bson.M), "s", "cut \uFFFD")
				eq(t, d, "headers", bson.M{"trace\uFF0Eid": "t", "\uFF04m": "\uFFFD"})
				raw := d["_system"].(bson.M)["raw"].(bson.M)
				eq(t, raw, "payload", `{"s":"cut \ud83c"}`)
				eq(t, raw, "headers", `{"trace.id":"t","$m":"\ud83c"}`)
			},
		},
		{name: "headers not json", values: set("headers", "nope"), defects: []message.Defect{message.DefectHeadersNotJSON}, check: fieldAndRaw("headers", bson.M{}, "nope")},
		{name: "headers not object", values: set("headers", "[1]"), defects: []message.Defect{message.DefectHeadersNotObject}, check: field("headers", bson.M{})},
		{name: "headers missing", values: without("headers"), defects: []message.Defect{message.DefectHeadersMissing}, check: field("headers", bson.M{})},
		{name: "original id missing", values: without("originalMsgId"), defects: []message.Defect{DefectOriginalIDMissing}, check: field("msgId", nil)},
		{name: "original id invalid", values: set("originalMsgId", "12-x"), defects: []message.Defect{DefectOriginalIDInvalid}, check: field("msgId", "12-x")},
		{name: "original id without sequence", values: set("originalMsgId", "1732561200123"), defects: []message.Defect{DefectOriginalIDInvalid}},
		{name: "reason missing", values: without("reason"), defects: []message.Defect{DefectReasonMissing}, check: field("reason", nil)},
		{name: "reason empty is fine", values: set("reason", ""), check: field("reason", "")},
		{name: "deliveries missing", values: without("deliveries"), defects: []message.Defect{DefectDeliveriesMissing}, check: field("deliveries", nil)},
		{name: "deliveries not a number", values: set("deliveries", "five"), defects: []message.Defect{DefectDeliveriesInvalid}, check: fieldAndRaw("deliveries", nil, "five")},
		{name: "deliveries negative", values: set("deliveries", "-1"), defects: []message.Defect{DefectDeliveriesInvalid}},
		{name: "deliveries fractional", values: set("deliveries", "2.5"), defects: []message.Defect{DefectDeliveriesInvalid}},
		{name: "failedAt missing falls back to the dlq id time", values: without("failedAt"), defects: []message.Defect{DefectFailedAtMissing}, check: field("failedAt", idTime)},
		{name: "failedAt invalid", values: set("failedAt", "yesterday"), defects: []message.Defect{DefectFailedAtInvalid}, check: fieldAndRaw("failedAt", idTime, "yesterday")},
		{name: "field not a string", values: set("deliveries", int64(3)), defects: []message.Defect{message.DefectFieldNotString}, check: field("deliveries", int64(3))},
		{
			name:   "unknown fields are kept, escaped",
			values: with(func(v map[string]any) { v["$x.y"] = "1"; v["k\xffey"] = "2" }),
			check: func(t *testing.T, d bson.M) {
				ex := d["extraFields"].(bson.M)
				eq(t, ex, "\uFF04x\uFF0Ey", "1")
				eq(t, ex, "k\xffey", "2") // not UTF-8: as it is (a server that refuses it gets the entry rescued)
			},
		},
		{
			name:   "every field missing",
			values: map[string]any{},
			defects: []message.Defect{DefectOriginalIDMissing, DefectReasonMissing, message.DefectHeadersMissing,
				message.DefectPayloadMissing, DefectFailedAtMissing, DefectDeliveriesMissing},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			doc, err := Build(testKey, id, tc.values, now)
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			if err := bsoncore.Document(doc.Raw).Validate(); err != nil {
				t.Fatalf("invalid BSON: %v", err)
			}
			gotDefects := slices.Clone(doc.Defects)
			slices.Sort(gotDefects)
			want := slices.Clone(tc.defects)
			slices.Sort(want)
			if !slices.Equal(gotDefects, want) {
				t.Errorf("defects: got %v, want %v", gotDefects, want)
			}
			var d bson.M
			if err := bson.Unmarshal(doc.Raw, &d); err != nil {
				t.Fatal(err)
			}
			stored := []message.Defect{}
			if a, ok := d["_system"].(bson.M)["defects"].(bson.A); ok {
				for _, x := range a {
					stored = append(stored, message.Defect(x.(string)))
				}
			}
			slices.Sort(stored)
			if !slices.Equal(stored, want) && !(len(stored) == 0 && len(want) == 0) {
				t.Errorf("_system.defects: got %v, want %v", stored, want)
			}
			if tc.check != nil {
				tc.check(t, d)
			}
			// Deterministic: the same entry builds the same bytes.
			again, _ := Build(testKey, id, tc.values, now)
			if string(again.Raw) != string(doc.Raw) {
				t.Error("two builds of the same entry differ")
			}
		})
	}
}

func TestBuildTooLarge(t *testing.T) {
	v := good()
	v["payload"] = `"` + strings.Repeat("x", message.MaxDocBytes) + `"`
	_, err := Build(testKey, "1-1", v, time.Now())
	if !errors.Is(err, message.ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
}

func TestPoisonIDNeverChronowID(t *testing.T) {
	k := keyspace.Key{Tenant: "t", Namespace: "ns", Kind: keyspace.KindTopic, Name: "orders"}
	if got, want := PoisonID(k, "1-0"), "ns:orders:1-0#topic#poison"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	// A Chronow dead letter's _id ends with a stream id.
	for _, id := range []string{PoisonID(k, "1-0"), rescue.RefusedID(k, "1-0")} {
		_, last, _ := strings.Cut(id[strings.LastIndex(id, ":")+1:], "")
		if message.IsStreamID(last) {
			t.Errorf("%q ends like a stream id", id)
		}
	}
}

func eq(t *testing.T, d bson.M, k string, want any) {
	t.Helper()
	got, ok := d[k]
	if !ok {
		t.Errorf("%s: missing, want %v", k, want)
		return
	}
	switch w := want.(type) {
	case time.Time:
		g, ok := got.(primitive.DateTime)
		if !ok || !g.Time().Equal(w) {
			t.Errorf("%s: got %v (%T), want %v", k, got, got, w)
		}
		return
	case bson.M:
		g, ok := got.(bson.M)
		if !ok || len(g) != len(w) {
			t.Errorf("%s: got %v, want %v", k, got, w)
			return
		}
		for kk, vv := range w {
			if g[kk] != vv {
				t.Errorf("%s.%s: got %v, want %v", k, kk, g[kk], vv)
			}
		}
		return
	}
	if got != want {
		t.Errorf("%s: got %v (%T), want %v (%T)", k, got, got, want, want)
	}
}
