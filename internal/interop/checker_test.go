package interop

import (
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
)

// The checker must catch every kind of change the persister could make to
// a value. These tests build the document the contract asks for by hand
// (bson.D, not the persister's code), check it passes, then change one
// thing at a time and check that each change is reported.

const (
	entryID     = "1796400000123-4"
	payloadText = `{"b":1,"a":[2147483648,-2147483649,2.5,1e+21,0,true,null],"s":"x\ud83dy","$k":{"d.e":"😀"}}`
	headersText = `{"trace.id":"t-1","$meta":"m","half":"\ud83d"}`
)

func topicEntry() map[string]string {
	return map[string]string{
		"payload":     payloadText,
		"headers":     headersText,
		"hash":        strings.Repeat("ab", 32),
		"size":        "99",
		"publishedAt": "2026-12-04T10:00:00.123Z",
	}
}

// goodMessage is the messages document the contract asks for, built by hand.
func goodMessage() bson.D {
	return bson.D{
		{Key: "_id", Value: "pay:orders:eu:" + entryID},
		{Key: "topic", Value: "orders:eu"},
		{Key: "msgId", Value: entryID},
		{Key: "tenantId", Value: "acme"},
		{Key: "namespace", Value: "pay"},
		{Key: "headers", Value: bson.D{{Key: "trace\uFF0Eid", Value: "t-1"}, {Key: "\uFF04meta", Value: "m"}, {Key: "half", Value: "\uFFFD"}}},
		{Key: "payload", Value: bson.D{
			{Key: "b", Value: int32(1)},
			{Key: "a", Value: bson.A{int64(2147483648), int64(-2147483649), 2.5, 1e21, int32(0), true, nil}},
			{Key: "s", Value: "x\uFFFDy"},
			{Key: "\uFF04k", Value: bson.D{{Key: "d\uFF0Ee", Value: "😀"}}},
		}},
		{Key: "firstSeenAt", Value: primitive.DateTime(1796400000123)},
		{Key: "size", Value: int64(len(payloadText))},
		{Key: "hash", Value: strings.Repeat("ab", 32)},
		{Key: "publishedAt", Value: primitive.NewDateTimeFromTime(time.Date(2026, 12, 4, 10, 0, 0, 123e6, time.UTC))},
		{Key: "_system", Value: bson.D{
			{Key: "createdAt", Value: primitive.NewDateTimeFromTime(time.Now())},
			{Key: "defects", Value: bson.A{"headers_keys_escaped", "headers_unicode_replaced", "payload_keys_escaped", "payload_unicode_replaced"}},
			{Key: "raw", Value: bson.D{{Key: "headers", Value: headersText}, {Key: "payload", Value: payloadText}}},
		}},
	}
}

func problemsOf(t *testing.T, doc bson.D) []string {
	t.Helper()
	k, err := parseKey("cw:cw:acme:pay:topic:orders:eu")
	if err != nil {
		t.Fatal(err)
	}
	exp, err := expectMessage(k, entryID, topicEntry())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := bson.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	var errs []string
	checkDoc(&errs, "", exp.doc, raw)
	return errs
}

// set returns doc with the value at a dotted path replaced (or removed
// when v is remove).
type removeT struct{}

var remove removeT

func set(doc bson.D, path string, v any) bson.D {
	out := make(bson.D, 0, len(doc))
	head, rest, nested := strings.Cut(path, ".")
	for _, e := range doc {
		if e.Key != head {
			out = append(out, e)
			continue
		}
		switch {
		case nested:
			out = append(out, bson.E{Key: e.Key, Value: set(e.Value.(bson.D), rest, v)})
		case v == remove:
		default:
			out = append(out, bson.E{Key: e.Key, Value: v})
		}
	}
	return out
}

func TestCheckerAcceptsTheContract(t *testing.T) {
	if errs := problemsOf(t, goodMessage()); len(errs) > 0 {
		t.Fatalf("the contract's document is refused:\n%s", strings.Join(errs, "\n"))
	}
}

func TestCheckerCatchesEveryChange(t *testing.T) {
	good := goodMessage()
	payload := good[6].Value.(bson.D)
	cases := map[string]bson.D{
		"int32 stored as int64":     set(good, "payload.b", int64(1)),
		"int32 stored as double":    set(good, "payload.b", 1.0),
		"int64 rounded":             set(good, "payload.a", bson.A{int64(2147483647), int64(-2147483649), 2.5, 1e21, int32(0), true, nil}),
		"double changed":            set(good, "payload.a", bson.A{int64(2147483648), int64(-2147483649), 2.5000001, 1e21, int32(0), true, nil}),
		"array element dropped":     set(good, "payload.a", bson.A{int64(2147483648), int64(-2147483649), 2.5, 1e21, int32(0), true}),
		"null stored as string":     set(good, "payload.a", bson.A{int64(2147483648), int64(-2147483649), 2.5, 1e21, int32(0), true, "null"}),
		"key order changed":         set(good, "payload", bson.D{payload[1], payload[0], payload[2], payload[3]}),
		"key not escaped":           set(good, "payload", bson.D{payload[0], payload[1], payload[2], {Key: "$k", Value: payload[3].Value}}),
		"string changed":            set(good, "payload.s", "x?y"),
		"replacement not flagged":   set(good, "_system.defects", bson.A{"headers_keys_escaped", "headers_unicode_replaced", "payload_keys_escaped"}),
		"header escape not flagged": set(good, "_system.defects", bson.A{"headers_unicode_replaced", "payload_keys_escaped", "payload_unicode_replaced"}),
		"raw payload missing":       set(good, "_system.raw", bson.D{{Key: "headers", Value: headersText}}),
		"raw headers changed":       set(good, "_system.raw.headers", strings.ReplaceAll(headersText, `\ud83d`, "\uFFFD")),
		"header name not escaped":   set(good, "headers", bson.D{{Key: "trace.id", Value: "t-1"}, {Key: "\uFF04meta", Value: "m"}, {Key: "half", Value: "\uFFFD"}}),
		"size wrong":                set(good, "size", int64(99)),
		"size as int32":             set(good, "size", int32(len(payloadText))),
		"publishedAt as string":     set(good, "publishedAt", "2026-12-04T10:00:00.123Z"),
		"firstSeenAt off":           set(good, "firstSeenAt", primitive.DateTime(1796400000124)),
		"hash dropped":              set(good, "hash", remove),
		"extra field":               append(append(bson.D{}, good...), bson.E{Key: "extraFields", Value: bson.D{{Key: "x", Value: "1"}}}),
		"tenant wrong":              set(good, "tenantId", "cw"),
		"namespace wrong":           set(good, "namespace", "acme"),
		"_id without namespace":     set(good, "_id", "orders:eu:"+entryID),
	}
	for name, doc := range cases {
		if errs := problemsOf(t, doc); len(errs) == 0 {
			t.Errorf("%s: not caught", name)
		}
	}
}

func TestCheckerRetryEntry(t *testing.T) {
	k, _ := parseKey("cw:acme:pay:topic:jobs")
	exp, err := expectMessage(k, entryID, map[string]string{
		"payload": `{"n":9007199254740992}`, "headers": `{}`, "retryOf": "1796400000000-0", "attempt": "1",
	})
	if err != nil {
		t.Fatal(err)
	}
	good := bson.D{
		{Key: "_id", Value: "pay:jobs:" + entryID}, {Key: "topic", Value: "jobs"}, {Key: "msgId", Value: entryID},
		{Key: "tenantId", Value: "acme"}, {Key: "namespace", Value: "pay"}, {Key: "headers", Value: bson.D{}},
		{Key: "payload", Value: bson.D{{Key: "n", Value: int64(9007199254740992)}}},
		{Key: "firstSeenAt", Value: primitive.DateTime(1796400000123)}, {Key: "size", Value: int64(22)},
		{Key: "retryOf", Value: "1796400000000-0"}, {Key: "attempt", Value: int64(1)},
		{Key: "_system", Value: bson.D{{Key: "createdAt", Value: primitive.DateTime(1)}}},
	}
	for name, doc := range map[string]bson.D{
		"good":                 good,
		"flagged as malformed": set(good, "_system", bson.D{{Key: "createdAt", Value: primitive.DateTime(1)}, {Key: "defects", Value: bson.A{"hash_missing"}}}),
		"attempt as string":    set(good, "attempt", "1"),
		"retryOf missing":      set(good, "retryOf", remove),
		"publishedAt added":    append(append(bson.D{}, good...), bson.E{Key: "publishedAt", Value: primitive.DateTime(1)}),
	} {
		raw, _ := bson.Marshal(doc)
		var errs []string
		checkDoc(&errs, "", exp.doc, raw)
		if (name == "good") != (len(errs) == 0) {
			t.Errorf("%s: problems %q", name, errs)
		}
	}
}

func TestDecodeJSON(t *testing.T) {
	for _, c := range []struct {
		text string
		info jsonInfo
	}{
		{`"\ud83d\ude00"`, jsonInfo{}},
		{`"\ud83d"`, jsonInfo{loneSurrogate: true}},
		{`"\ude00\ud83d"`, jsonInfo{loneSurrogate: true}},
		{`{"a.b":1}`, jsonInfo{escapedKeys: true}},
		{`{"a$":1}`, jsonInfo{}},
		{`[1,[2]]`, jsonInfo{arrayInArray: true}},
		{`[{"a":[1]}]`, jsonInfo{}},
	} {
		_, info, err := decodeJSON(c.text)
		if err != nil || info != c.info {
			t.Errorf("%s: info %+v err %v, want %+v", c.text, info, err, c.info)
		}
	}
	v, _, _ := decodeJSON(`[9007199254740993, 2147483647, -0, 1E2, 18446744073709551616]`)
	want := wArr{int64(9007199254740993), int32(2147483647), int32(0), 100.0, 18446744073709551616.0}
	for i, w := range want {
		if v.(wArr)[i] != w {
			t.Errorf("number %d: %#v, want %#v", i, v.(wArr)[i], w)
		}
	}
	if s, _, _ := decodeJSON(`"a\ud83db"`); s != "a\uFFFDb" {
		t.Errorf("lone surrogate decoded as %q", s)
	}
}
