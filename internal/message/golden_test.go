package message

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
)

// TestTopicGolden pins the exact bytes of the messages document for every
// path of Builder.Topic (testdata/topic_golden.json was written by the
// builder before its allocation work): speed-ups must not change a byte.
func TestTopicGolden(t *testing.T) {
	data, err := os.ReadFile("testdata/topic_golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]string
	if err := json.Unmarshal(data, &want); err != nil {
		t.Fatal(err)
	}
	var b Builder // reused across cases, as the decoder's pool does
	cases := goldenCases()
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
