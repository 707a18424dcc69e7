package requeue

import (
	"math"
	"slices"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"

	"github.com/chronow/persister/internal/bsonjson"
	"github.com/chronow/persister/internal/publisher"
)

// Texts as JSON.stringify writes them survive JSON -> BSON (as the persister
// stores them) -> JSON unchanged.
func TestJSONTextRoundTrip(t *testing.T) {
	texts := []string{
		`{}`, `[]`, `null`, `true`, `0`, `-1`, `2147483648`, `9007199254740993`, `-9223372036854775808`,
		`1.5`, `0.1`, `-0.000001`, `1e-7`, `1.5e-10`, `1e+21`, `123456789012345680000`, `1.7976931348623157e+308`,
		"\"caf\u00e9 \U0001F600\"", `"quote \" backslash \\ slash / </script> & <"`, `"\n\t\r\b\f\u0000\u001f"`, "\"\u2028\"", /* JSON.stringify leaves U+2028 raw */
		`{"order":1,"big":9007199254740993,"nested":{"a":[1,2,{"b":null}]},"s":"x"}`,
		`[1,"two",false,[[]],{"":1}]`,
	}
	for _, text := range texts {
		el, _, err := bsonjson.AppendElement(nil, "v", []byte(text))
		if err != nil {
			t.Fatalf("transcode %s: %v", text, err)
		}
		doc := bsoncore.BuildDocument(nil, el)
		got, err := jsonText(bson.Raw(doc).Lookup("v"))
		if err != nil {
			t.Errorf("jsonText(%s): %v", text, err)
			continue
		}
		if got != text {
			t.Errorf("round trip: got %s, want %s", got, text)
		}
	}
}

func TestJSNumber(t *testing.T) {
	tests := map[float64]string{
		0: "0", math.Copysign(0, -1): "0", 1: "1", -2.5: "-2.5", 1e21: "1e+21", 1e20: "100000000000000000000",
		1e-6: "0.000001", 1e-7: "1e-7", 123e-20: "1.23e-18", math.NaN(): "null", math.Inf(1): "null",
	}
	for f, want := range tests {
		if got := string(appendJSNumber(nil, f)); got != want {
			t.Errorf("appendJSNumber(%v) = %s, want %s", f, got, want)
		}
	}
}

// Values writes exactly what the publisher (Chronow's format) writes.
func TestValuesMatchChronow(t *testing.T) {
	at := time.Date(2026, 11, 25, 19, 0, 0, 123_456_789, time.UTC)
	m := publisher.Message{Payload: `{"a":"é"}`, Headers: map[string]string{"k": "v"}, PublishedAt: at}
	got := Values(m.Payload, `{"k":"v"}`, at)
	if want := m.Values(); !slices.Equal(got, want) {
		t.Errorf("Values:\n got  %v\n want %v", got, want)
	}
}
