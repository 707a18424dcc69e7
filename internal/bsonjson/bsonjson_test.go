package bsonjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
)

// doc wraps one element into a document and decodes it with the driver.
func decode(t testing.TB, src string) (bson.D, Result, error) {
	t.Helper()
	idx, dst := bsoncore.AppendDocumentStart(nil)
	dst, res, err := AppendElement(dst, "v", []byte(src))
	if err != nil {
		return nil, res, err
	}
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	if err := bsoncore.Document(dst).Validate(); err != nil {
		t.Fatalf("invalid bson for %q: %v", src, err)
	}
	var d bson.D
	if err := bson.Unmarshal(dst, &d); err != nil {
		t.Fatalf("unmarshal bson for %q: %v", src, err)
	}
	return d, res, nil
}

func TestScalars(t *testing.T) {
	tests := []struct {
		src  string
		want any
	}{
		{`1`, int32(1)},
		{`-1`, int32(-1)},
		{`0`, int32(0)},
		{`2147483647`, int32(math.MaxInt32)},
		{`2147483648`, int64(2147483648)},
		{`-2147483649`, int64(-2147483649)},
		{`9007199254740993`, int64(9007199254740993)},
		{`2000000000000000000`, int64(2000000000000000000)},
		{`9223372036854775807`, int64(math.MaxInt64)},
		{`-9223372036854775808`, int64(math.MinInt64)},
		{`9223372036854775808`, float64(9223372036854775808)},
		{`123456789012345678901234`, 1.2345678901234568e+23},
		{`1.5`, 1.5},
		{`-0.25e2`, -25.0},
		{`1e400`, math.Inf(1)},
		{`"héllo \"x\" \u00e9 \ud83d\ude00"`, "héllo \"x\" é 😀"},
		{`"\ud800"`, "\uFFFD"},
		{`"\ud800\u0041"`, "\uFFFDA"},
		{`"a\u0000b"`, "a\x00b"},
		{`true`, true},
		{`false`, false},
		{`null`, nil},
		{` "x" `, "x"},
	}
	for _, tt := range tests {
		d, _, err := decode(t, tt.src)
		if err != nil {
			t.Errorf("%s: %v", tt.src, err)
			continue
		}
		if got := d[0].Value; fmt.Sprintf("%T %v", got, got) != fmt.Sprintf("%T %v", tt.want, tt.want) {
			t.Errorf("%s: got %T %v, want %T %v", tt.src, got, got, tt.want, tt.want)
		}
	}
}

func TestObjectOrderAndNesting(t *testing.T) {
	d, res, err := decode(t, `{"z":1,"a":[1,"two",{"b":null}],"m":{}, "e":[]}`)
	if err != nil {
		t.Fatal(err)
	}
	if res.EscapedKeys {
		t.Error("EscapedKeys = true, want false")
	}
	got, _ := bson.MarshalExtJSON(d, false, false)
	want := `{"v":{"z":1,"a":[1,"two",{"b":null}],"m":{},"e":[]}}`
	if string(got) != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestEscapedKeys(t *testing.T) {
	d, res, err := decode(t, `{"$set":1,"a.b":{"$inner.x":2,"ok$":3},"n\u0000":4}`)
	if err != nil {
		t.Fatal(err)
	}
	if !res.EscapedKeys {
		t.Error("EscapedKeys = false, want true")
	}
	got, _ := bson.MarshalExtJSON(d, false, false)
	want := `{"v":{"＄set":1,"a．b":{"＄inner．x":2,"ok$":3},"n␀":4}}`
	if string(got) != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestErrors(t *testing.T) {
	bad := []string{``, `{`, `{"a"}`, `{"a":}`, `[1,]`, `[1 2]`, `tru`, `nul`, `"abc`, `"\x"`, `01`, `1.`, `1e`, `-`, `{"a":1}x`, `{a:1}`, "\"a\tb\"", `"\u12"`, `{"a":1,}`}
	for _, src := range bad {
		if _, _, err := decode(t, src); err == nil {
			t.Errorf("%q: got no error, want a syntax error", src)
		} else if json.Valid([]byte(src)) {
			t.Errorf("%q: encoding/json says valid, we said %v", src, err)
		}
	}
	deep := strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1)
	if _, _, err := decode(t, deep); !errors.Is(err, ErrTooDeep) {
		t.Errorf("deep: got %v, want ErrTooDeep", err)
	}
	ok := strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth)
	if _, _, err := decode(t, ok); err != nil {
		t.Errorf("depth %d: %v", MaxDepth, err)
	}
}

func TestErrorLeavesDstUnchanged(t *testing.T) {
	dst := []byte("keep")
	out, _, err := AppendElement(dst, "v", []byte(`{"a":[1,2`))
	if err == nil || !bytes.Equal(out, []byte("keep")) {
		t.Errorf("got %q, %v; want dst unchanged and an error", out, err)
	}
}

// FuzzAgainstEncodingJSON checks validity and values against encoding/json.
func FuzzAgainstEncodingJSON(f *testing.F) {
	for _, s := range []string{`{"a":[1,2.5,"x",null,true]}`, `"\ud83d\ude00"`, `-0`, `[[],{}]`, `1e5`, `{"a.b":{"$c":1}}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		d, _, err := decode(t, src)
		valid := json.Valid([]byte(src))
		if (err == nil) != valid {
			if errors.Is(err, ErrTooDeep) {
				return
			}
			t.Fatalf("%q: our error %v, encoding/json valid=%v", src, err, valid)
		}
		if err != nil {
			return
		}
		var want any
		dec := json.NewDecoder(strings.NewReader(src))
		dec.UseNumber()
		if err := dec.Decode(&want); err != nil {
			t.Fatal(err)
		}
		if !equal(d[0].Value, want) {
			t.Fatalf("%q: got %#v, want %#v", src, d[0].Value, want)
		}
	})
}

func equal(got, want any) bool {
	switch w := want.(type) {
	case nil:
		return got == nil
	case bool:
		return got == w
	case string:
		g, ok := got.(string)
		return ok && (g == w || strings.ContainsRune(w, '\uFFFD'))
	case json.Number:
		wf, _ := w.Float64()
		switch g := got.(type) {
		case int32:
			return float64(g) == wf
		case int64:
			wi, err := w.Int64()
			return err == nil && wi == g
		case float64:
			return g == wf || (math.IsInf(g, 0) && math.IsInf(wf, 0))
		}
		return false
	case []any:
		g, ok := got.(bson.A)
		if !ok || len(g) != len(w) {
			return false
		}
		for i := range w {
			if !equal(g[i], w[i]) {
				return false
			}
		}
		return true
	case map[string]any:
		g, ok := got.(bson.D)
		if !ok {
			return false
		}
		// encoding/json keeps the last of duplicate keys; compare per key.
		for _, e := range g {
			if _, ok := w[e.Key]; !ok && !strings.ContainsAny(e.Key, "＄．␀\uFFFD") {
				return false
			}
		}
		return true
	}
	return false
}

func BenchmarkAppendElement1KB(b *testing.B) {
	payload := []byte(`{"orderId":"ord-123456","amount":9007199254740993,"currency":"EUR","items":[` +
		strings.Repeat(`{"sku":"SKU-000001","qty":2,"price":19.99,"note":"fast delivery please"},`, 11) +
		`{"sku":"last","qty":1,"price":1.5}],"customer":{"id":42,"name":"Jane Doe","vip":true}}`)
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	var dst []byte
	for i := 0; i < b.N; i++ {
		var err error
		dst, _, err = AppendElement(dst[:0], "payload", payload)
		if err != nil {
			b.Fatal(err)
		}
	}
}

// TestReplaced: text with no exact UTF-8 form (lone surrogate escapes as
// JavaScript's JSON.stringify writes them, bytes that are not UTF-8, in
// values and in keys) is replaced by U+FFFD and reported; everything else,
// including an escaped U+FFFD and a proper surrogate pair, is not.
func TestReplaced(t *testing.T) {
	tests := []struct {
		src  string
		want bool
	}{
		{`"\ud83c"`, true},                 // high surrogate alone ('😀'.slice(0,1))
		{`"\ude00x"`, true},                // low surrogate alone
		{`"\ud83c\u0041"`, true},           // high surrogate followed by a non-surrogate
		{`{"k\udc00":1}`, true},            // in a key
		{`[1,{"a":["\ud800"]}]`, true},     // deep
		{"\"a\xffb\"", true},               // not UTF-8
		{`"\ud83d\ude00"`, false},          // a proper pair
		{`"\ufffd"`, false},                // U+FFFD written by the app is exact
		{"\"\xef\xbf\xbd\"", false},        // so is its UTF-8 form
		{`{"trace.id":"x","$m":1}`, false}, // escaped keys are another matter
	}
	for _, tt := range tests {
		_, res, err := decode(t, tt.src)
		if err != nil {
			t.Errorf("%q: %v", tt.src, err)
			continue
		}
		if res.Replaced != tt.want {
			t.Errorf("%q: Replaced = %v, want %v", tt.src, res.Replaced, tt.want)
		}
	}
}
