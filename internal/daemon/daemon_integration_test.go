package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/chronow/persister/internal/e2e"
	"github.com/chronow/persister/internal/message"
	"github.com/chronow/persister/internal/publisher"
	"github.com/chronow/persister/internal/testenv"
)

var (
	tenants    = []string{"tenant-a", "tenant-b"}
	namespaces = []string{"payments", "default"}
	topics     = []string{"orders", "billing:eu", "audit"}
)

// messages builds n Chronow messages spread over tenants, namespaces and topics.
func messages(n, offset int) []publisher.Message {
	s := e2e.Spread{Tenants: tenants, Namespaces: namespaces, Topics: topics}
	return spreadMessages(s, n, offset, `{"seq":%d,"big":9007199254740993,"nested":{"list":[1,"two",null,true,2.5]},"note":"héllo"}`, "t")
}

// spreadMessages builds messages offset to offset+n-1 spread by s: message k
// has payloadFormat with k as payload and traceId tracePrefix-k.
func spreadMessages(s e2e.Spread, n, offset int, payloadFormat, tracePrefix string) []publisher.Message {
	out := make([]publisher.Message, n)
	for i := range out {
		k := offset + i
		out[i] = s.Message(k, fmt.Sprintf(payloadFormat, k), fmt.Sprintf("%s-%d", tracePrefix, k))
	}
	return out
}

func publish(t *testing.T, p *publisher.Publisher, l *e2e.Ledger, ms []publisher.Message) {
	t.Helper()
	if err := l.Publish(context.Background(), p, ms); err != nil {
		t.Fatal(err)
	}
}

func TestEndToEndExactlyOnceAcrossTenants(t *testing.T) {
	ctx := context.Background()
	rs, ms, rdb, mc := e2e.StartServers(t)
	pub := &publisher.Publisher{RDB: rdb, Prefix: "cw:"}
	var ledger e2e.Ledger

	publish(t, pub, &ledger, messages(300, 0)) // backlog before the daemon starts
	// A tenant that is not configured: must not be consumed.
	if _, err := pub.Publish(ctx, publisher.Message{Tenant: "stranger", Namespace: "default", Topic: "orders", Payload: `1`}); err != nil {
		t.Fatal(err)
	}

	run := e2e.Start(t, e2e.Env(t, rs.URL, ms.URI, tenants, nil))
	publish(t, pub, &ledger, messages(300, 300)) // while it runs
	time.Sleep(300 * time.Millisecond)
	publish(t, pub, &ledger, messages(60, 600))

	e2e.WaitStored(ctx, t, mc, &ledger, tenants, 60*time.Second)
	streams := e2e.StreamKeys(ledger.Records(), "cw:")
	e2e.WaitNothingPending(ctx, t, rdb, "persister", streams, 20*time.Second)
	if err := run.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	rep := e2e.Verify(ctx, t, mc, &ledger, tenants)
	if !rep.OK() {
		t.Fatalf("after stop: %s", rep)
	}
	t.Logf("stored %d of %d entries across %d streams", rep.Stored, rep.Expected, len(streams))

	// Field for field.
	for _, r := range ledger.Records()[:40] {
		var got bson.M
		err := mc.Database(e2e.DBName(r.Msg.Tenant)).Collection("messages").FindOne(ctx, bson.M{"_id": r.DocID()}).Decode(&got)
		if err != nil {
			t.Fatalf("find %s: %v", r.DocID(), err)
		}
		checkDoc(t, r, got)
	}
	// The unconfigured tenant's stream has no persister group.
	groups, err := rdb.XInfoGroups(ctx, "cw:stranger:default:topic:orders").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(groups) != 0 {
		t.Errorf("unconfigured tenant's stream has groups %v, want none", groups)
	}
	names, _ := mc.ListDatabaseNames(ctx, bson.D{})
	for _, n := range names {
		if strings.Contains(n, "stranger") {
			t.Errorf("database %q exists for an unconfigured tenant", n)
		}
	}
}

func checkDoc(t *testing.T, r e2e.Record, got bson.M) {
	t.Helper()
	want := map[string]any{
		"topic": r.Msg.Topic, "msgId": r.ID, "tenantId": r.Msg.Tenant, "namespace": r.Msg.Namespace,
		"size": int64(len(r.Msg.Payload)),
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %s = %#v, want %#v", r.DocID(), k, got[k], v)
		}
	}
	idTime, _ := message.IDTime(r.ID)
	if fs, ok := got["firstSeenAt"].(primitive.DateTime); !ok || fs.Time().UnixMilli() != idTime.UnixMilli() {
		t.Errorf("%s: firstSeenAt = %v, want %v", r.DocID(), got["firstSeenAt"], idTime)
	}
	var wantPayload any
	if err := json.Unmarshal([]byte(r.Msg.Payload), &wantPayload); err != nil {
		t.Fatal(err)
	}
	gotJSON, _ := bson.MarshalExtJSON(bson.M{"p": got["payload"]}, false, false)
	var gotPayload struct{ P any }
	_ = json.Unmarshal(gotJSON, &gotPayload)
	if !reflect.DeepEqual(normalize(gotPayload.P), normalize(wantPayload)) {
		t.Errorf("%s: payload = %s, want %s", r.DocID(), gotJSON, r.Msg.Payload)
	}
	if p, ok := got["payload"].(bson.M); !ok || p["big"] != int64(9007199254740993) {
		t.Errorf("%s: payload.big = %#v, want int64 9007199254740993", r.DocID(), got["payload"])
	}
	if h, ok := got["headers"].(bson.M); !ok || h["traceId"] != r.Msg.Headers["traceId"] {
		t.Errorf("%s: headers = %#v, want %v", r.DocID(), got["headers"], r.Msg.Headers)
	}
	sys, _ := got["_system"].(bson.M)
	if _, ok := sys["createdAt"].(primitive.DateTime); !ok {
		t.Errorf("%s: _system.createdAt missing", r.DocID())
	}
	if _, ok := sys["defects"]; ok {
		t.Errorf("%s: unexpected defects %v", r.DocID(), sys["defects"])
	}
}

// normalize turns JSON numbers into float64 for comparison.
func normalize(v any) any {
	b, _ := json.Marshal(v)
	var out any
	_ = json.Unmarshal(b, &out)
	return out
}

func TestMongoUnreachableNothingAcked(t *testing.T) {
	ctx := context.Background()
	rs := testenv.StartRedis(t)
	ms := testenv.StartMongoLater(t)
	rdb := rs.Client(t)
	pub := &publisher.Publisher{RDB: rdb, Prefix: "cw:"}
	var ledger e2e.Ledger
	publish(t, pub, &ledger, messages(200, 0))

	e2e.Start(t, e2e.Env(t, rs.URL, ms.URI, tenants, map[string]string{"PERSISTER_WRITE_TIMEOUT": "2s"}))
	streams := e2e.StreamKeys(ledger.Records(), "cw:")
	// Wait until the daemon has read entries, then check none was acked.
	e2e.Eventually(t, 30*time.Second, "entries read while MongoDB is down", func() (bool, string) {
		n, _ := e2e.Pending(ctx, rdb, "persister", streams)
		return n > 0, fmt.Sprintf("pending %d", n)
	})
	time.Sleep(3 * time.Second)
	for _, s := range streams {
		groups, err := rdb.XInfoGroups(ctx, s).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range groups {
			if g.Name == "persister" && g.Pending != g.EntriesRead {
				t.Fatalf("%s: pending %d, entries-read %d: something was acked while MongoDB was down", s, g.Pending, g.EntriesRead)
			}
		}
	}

	ms.Start(t)
	mc := ms.Client(t)
	publish(t, pub, &ledger, messages(50, 200))
	e2e.WaitStored(ctx, t, mc, &ledger, tenants, 90*time.Second)
	e2e.WaitNothingPending(ctx, t, rdb, "persister", streams, 20*time.Second)
}
