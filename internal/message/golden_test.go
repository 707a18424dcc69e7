package message

import (
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
)

var update = flag.Bool("update", false, "rewrite testdata/topic_golden.json")

// TestTopicGolden pins the exact bytes of the messages document for every
// path of Builder.Topic (testdata/topic_golden.json was written by the
// builder before its allocation work): speed-ups must not change a byte.
//
// After a deliberate change of the document, rewrite the file with
//
//	go test ./internal/message -run TestTopicGolden -update
//
// and read the diff of testdata/topic_golden.json case by case.
func TestTopicGolden(t *testing.T) {
	const file = "testdata/topic_golden.json"
	var b Builder // reused across cases, as the decoder's pool does
	cases := goldenCases()
	if *update {
		out := map[string]string{}
		for _, c := range cases {
			d, err := b.Topic(key, c.ID, c.Values, time.UnixMilli(1800000000000))
			if err != nil {
				t.Fatalf("%s: %v", c.Name, err)
			}
			out[c.Name] = hex.EncodeToString(d.Raw)
		}
		data, _ := json.MarshalIndent(out, "", "  ")
		if err := os.WriteFile(file, append(data, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]string
	if err := json.Unmarshal(data, &want); err != nil {
		t.Fatal(err)
	}
	if len(cases) != len(want) {
		t.Fatalf("%d cases, %d golden documents", len(cases), len(want))
	}
	for _, c := range cases {
		d, err := b.Topic(key, c.ID, c.Values, time.UnixMilli(1800000000000))
		if err != nil {
			t.Errorf("%s: %v", c.Name, err)
			continue
		}
		if got := hex.EncodeToString(d.Raw); got != want[c.Name] {
			w, _ := hex.DecodeString(want[c.Name])
			t.Errorf("%s: document changed\n got  %s\n want %s", c.Name, bsoncore.Document(d.Raw), bsoncore.Document(w))
		}
	}
}
