package message

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
)

// goldenCase is one input of the golden test (testdata/golden.json).
type goldenCase struct {
	Name   string
	ID     string
	Values map[string]any
}

func goldenSHA(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// goldenCases covers every path of Builder.Topic: clean entries, every
// defect, non-string values, extra fields, escaped keys.
func goldenCases() []goldenCase {
	p := `{"orderId":"ord-1","n":9007199254740993,"f":1.5,"neg":-3,"arr":[1,"two",null,true,false,{"x":{}}],"s":"h\u00e9llo \"q\" \\ \n","u":"\ud83d\ude00"}`
	ok := func(payload string) map[string]any {
		return map[string]any{"payload": payload, "headers": `{"traceId":"t-1","a":"b"}`, "hash": goldenSHA(payload),
			"size": strconv.Itoa(len(payload)), "publishedAt": "2026-11-25T19:00:00.123Z"}
	}
	with := func(m map[string]any, k string, v any) map[string]any {
		out := map[string]any{}
		for kk, vv := range m {
			out[kk] = vv
		}
		if v == nil {
			delete(out, k)
		} else {
			out[k] = v
		}
		return out
	}
	base := ok(p)
	return []goldenCase{
		{"clean", "1732561200123-7", base},
		{"upper hash", "1-0", with(base, "hash", strings.ToUpper(goldenSHA(p)))},
		{"hash mismatch", "1-1", with(base, "hash", goldenSHA("other"))},
		{"hash short", "1-2", with(base, "hash", "abc")},
		{"hash not hex", "1-3", with(base, "hash", "zz"+goldenSHA(p)[2:])},
		{"hash missing", "1-4", with(base, "hash", nil)},
		{"payload missing", "1-5", with(base, "payload", nil)},
		{"payload not json", "1-6", with(with(ok("{nope"), "size", "5"), "hash", goldenSHA("{nope"))},
		{"payload keys escaped", "1-7", ok(`{"$set":{"a.b":1},"x\u0000y":2}`)},
		{"payload scalar", "1-8", ok(`42`)},
		{"payload string", "1-9", ok(`"just text"`)},
		{"headers missing", "1-10", with(base, "headers", nil)},
		{"headers not json", "1-11", with(base, "headers", "{x")},
		{"headers array", "1-12", with(base, "headers", `[1,2]`)},
		{"headers escaped", "1-13", with(base, "headers", `{"$k":"v","a.b":"c"}`)},
		{"size invalid", "1-14", with(base, "size", "ten")},
		{"size mismatch", "1-15", with(base, "size", "3")},
		{"size missing", "1-16", with(base, "size", nil)},
		{"published bad", "1-17", with(base, "publishedAt", "yesterday")},
		{"published missing", "1-18", with(base, "publishedAt", nil)},
		{"published nanos", "1-19", with(base, "publishedAt", "2026-11-25T19:00:00.123456789+02:00")},
		{"payload not string", "1-20", with(base, "payload", int64(7))},
		{"headers not string", "1-21", with(base, "headers", []any{"a"})},
		{"hash not string", "1-22", with(base, "hash", 12)},
		{"extras", "1-23", with(with(with(base, "zeta", "z"), "$weird.name", "v"), "", "empty")},
		{"extra not string", "1-24", with(base, "count", 3)},
		{"everything missing", "1-25", map[string]any{}},
		{"only extras", "1-26", map[string]any{"a": "1", "b": "2"}},
		// What Chronow v0.9.6 writes beyond a plain publish.
		{"retry", "1-27", map[string]any{"payload": `{"n":9007199254740992}`, "headers": `{}`, "retryOf": "1732561200123-7", "attempt": "2"}},
		{"retry attempt invalid", "1-28", map[string]any{"payload": `1`, "headers": `{}`, "retryOf": "1732561200123-7", "attempt": "two"}},
		{"retry without retryOf", "1-29", map[string]any{"payload": `1`, "headers": `{}`, "attempt": "1"}},
		{"retry of invalid", "1-30", map[string]any{"payload": `1`, "headers": `{}`, "retryOf": "x", "attempt": "1"}},
		{"lone surrogate payload", "1-31", ok(`{"s":"\ud83c","k\udc00":1}`)},
		{"lone surrogate header", "1-32", with(base, "headers", `{"name":"\ud83c"}`)},
		{"payload not utf8", "1-33", with(with(ok("a\xffb"), "size", "3"), "hash", goldenSHA("a\xffb"))},
		{"dotted header", "1-34", with(base, "headers", `{"trace.id":"t-1"}`)},
	}
}
