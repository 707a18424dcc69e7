package publisher

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/testenv"
)

// jsStringify runs node to get JSON.stringify of each value (the JSON
// texts given), so the publisher is checked against JavaScript itself.
func jsStringify(t *testing.T, values []string) []string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("node not found (CI): %v", err)
		}
		t.Skip("node not found; install Node.js to compare with JavaScript")
	}
	in, _ := json.Marshal(values)
	script := `const vs = JSON.parse(process.argv[1]); console.log(JSON.stringify(vs.map(v => JSON.stringify(JSON.parse(v)))))`
	out, err := exec.Command(node, "-e", script, string(in)).Output()
	if err != nil {
		t.Fatalf("node: %v", err)
	}
	var got []string
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("node output %q: %v", out, err)
	}
	return got
}

func TestStringifyLikeJavaScript(t *testing.T) {
	strs := []string{"plain", "", "quote \" back \\ slash", "ctl \b\f\n\r\t \x00 \x01 \x1f \x7f", "html <>&", "sep \u2028\u2029", "é 😀 \uFFFD", "trace.id"}
	headers := []map[string]string{nil, {}, {"b": "2", "a": "1"}, {"trace.id": "t", "$meta": "<x>", "ü": "\n"}}
	var texts, want []string
	for _, s := range strs {
		b, _ := json.Marshal(s) // any exact JSON text of s: node re-stringifies it
		texts = append(texts, string(b))
		want = append(want, Stringify(s))
	}
	for _, h := range headers {
		b, _ := json.Marshal(h)
		if h == nil {
			b = []byte("{}")
		}
		texts = append(texts, string(b))
		want = append(want, StringifyHeaders(h))
	}
	js := jsStringify(t, texts)
	for i := range want {
		if js[i] != want[i] {
			t.Errorf("%s: Go %s, JavaScript %s", texts[i], want[i], js[i])
		}
	}
}

// TestPublishForms writes each kind of entry under both prefix forms and
// reads back the exact fields Chronow writes.
func TestPublishForms(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.StartRedis(t).Client(t)
	for _, doubled := range []bool{false, true} {
		p := &Publisher{RDB: rdb, Prefix: "cw:", Doubled: doubled}
		want := "cw:acme:ns:topic:orders"
		if doubled {
			want = "cw:cw:acme:ns:topic:orders"
		}
		if _, err := p.Publish(ctx, Message{Tenant: "acme", Namespace: "ns", Topic: "orders", Payload: `{"s":"\ud83c"}`,
			RawHeaders: `{"trace.id":"\ud83c"}`}); err != nil {
			t.Fatal(err)
		}
		if _, err := p.PublishRetry(ctx, Retry{Tenant: "acme", Namespace: "ns", Topic: "orders", RetryOf: "1-0", Attempt: 2,
			Payload: `{"n":1}`, Headers: map[string]string{"a": "b"}}); err != nil {
			t.Fatal(err)
		}
		msgs, err := rdb.XRange(ctx, want, "-", "+").Result()
		if err != nil || len(msgs) != 2 {
			t.Fatalf("%s: %v, %v", want, msgs, err)
		}
		if msgs[0].Values["headers"] != `{"trace.id":"\ud83c"}` || msgs[0].Values["payload"] != `{"s":"\ud83c"}` || msgs[0].Values["size"] != "14" {
			t.Errorf("%s publish: %v", want, msgs[0].Values)
		}
		r := msgs[1].Values
		if len(r) != 4 || r["retryOf"] != "1-0" || r["attempt"] != "2" || r["headers"] != `{"a":"b"}` || r["payload"] != `{"n":1}` {
			t.Errorf("%s retry: %v", want, r)
		}
		if err := rdb.Del(ctx, want).Err(); err != nil && err != redis.Nil {
			t.Fatal(err)
		}
	}
}
