package daemon_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/chronow/persister/internal/e2e"
	"github.com/chronow/persister/internal/publisher"
)

// TestChronowKeyFormsOutOfTheBox: with the default settings (REDIS_KEY_PREFIX
// cw:, PERSISTER_KEY_PREFIX_FORM auto) the daemon stores what an app that
// passes redis.keyPrefix writes (cw:cw:tenant:...) and what an app that does
// not writes (cw:tenant:...), retry entries included, without defects; and
// every Chronow-shaped stream it does not consume is counted by reason and
// logged once with what to set.
func TestChronowKeyFormsOutOfTheBox(t *testing.T) {
	ctx := context.Background()
	rs, ms, rdb, mc := e2e.StartServers(t)
	single := &publisher.Publisher{RDB: rdb, Prefix: "cw:"}
	doubled := &publisher.Publisher{RDB: rdb, Prefix: "cw:", Doubled: true}
	var ledger e2e.Ledger

	batch := func(p *publisher.Publisher, tenant, ns, topic string, n int) {
		t.Helper()
		ms := make([]publisher.Message, n)
		for i := range ms {
			ms[i] = publisher.Message{Tenant: tenant, Namespace: ns, Topic: topic, Payload: fmt.Sprintf(`{"i":%d}`, i),
				Headers: map[string]string{"trace.id": fmt.Sprint(i)}}
		}
		publish(t, p, &ledger, ms)
	}
	batch(single, "tenant-a", "default", "orders", 20)
	batch(doubled, "tenant-a", "default", "billing:eu", 20)
	batch(doubled, "tenant-b", "payments", "orders", 20)
	// A retry entry, as Chronow's nack({requeue: true}) adds it.
	retryID, err := doubled.PublishRetry(ctx, publisher.Retry{Tenant: "tenant-b", Namespace: "payments", Topic: "orders",
		RetryOf: ledger.Records()[40].ID, Attempt: 1, Payload: `{"i":0}`, Headers: map[string]string{"traceId": "0"}})
	if err != nil {
		t.Fatal(err)
	}
	// Not consumed: another prefix, and the single form of a topic the
	// doubled form also has.
	other := &publisher.Publisher{RDB: rdb, Prefix: "app:"}
	if _, err := other.Publish(ctx, publisher.Message{Tenant: "tenant-a", Namespace: "default", Topic: "orders", Payload: `1`}); err != nil {
		t.Fatal(err)
	}
	conflictID, err := single.Publish(ctx, publisher.Message{Tenant: "tenant-b", Namespace: "payments", Topic: "orders", Payload: `2`})
	if err != nil {
		t.Fatal(err)
	}

	run := e2e.Start(t, e2e.Env(t, rs.URL, ms.URI, tenants, nil))
	e2e.Eventually(t, 60*time.Second, "every entry of both forms stored", func() (bool, string) {
		rep := e2e.Verify(ctx, t, mc, &ledger, tenants)
		n, _ := mc.Database(e2e.DBName("tenant-b")).Collection("messages").CountDocuments(ctx, bson.M{"_id": "payments:orders:" + retryID})
		return rep.Missing == nil && n == 1, fmt.Sprintf("%s; retry stored %d", rep, n)
	})

	// The retry entry: its own fields, no defect.
	var retry bson.M
	if err := mc.Database(e2e.DBName("tenant-b")).Collection("messages").FindOne(ctx, bson.M{"_id": "payments:orders:" + retryID}).Decode(&retry); err != nil {
		t.Fatal(err)
	}
	if retry["retryOf"] != ledger.Records()[40].ID || retry["attempt"] != int64(1) {
		t.Errorf("retry document: %v", retry)
	}
	if sys := retry["_system"].(bson.M); sys["defects"] != nil {
		t.Errorf("retry document has defects %v", sys["defects"])
	}
	// A dotted header name: escaped, flagged, the exact text kept.
	var first bson.M
	r0 := ledger.Records()[0]
	if err := mc.Database(e2e.DBName("tenant-a")).Collection("messages").FindOne(ctx, bson.M{"_id": r0.DocID()}).Decode(&first); err != nil {
		t.Fatal(err)
	}
	sys := first["_system"].(bson.M)
	if first["headers"].(bson.M)["trace\uFF0Eid"] != "0" || fmt.Sprint(sys["defects"]) != "[headers_keys_escaped]" ||
		sys["raw"].(bson.M)["headers"] != `{"trace.id":"0"}` {
		t.Errorf("dotted header: headers %v, _system %v", first["headers"], sys)
	}

	addr := waitAddr(t, run)
	e2e.Eventually(t, 30*time.Second, "ignored streams counted", func() (bool, string) {
		s, err := scrapeMetrics(addr)
		if err != nil {
			return false, err.Error()
		}
		o := s.sum("persister_keys_ignored", "kind", "topic", "reason", "other_prefix")
		c := s.sum("persister_keys_ignored", "kind", "topic", "reason", "prefix_conflict")
		m := s.sum("persister_entries_malformed_total")
		return o == 1 && c == 1 && m == 60, fmt.Sprintf("other_prefix %v prefix_conflict %v malformed %v (want 1, 1, 60 dotted headers)", o, c, m)
	})
	if err := run.Stop(); err != nil {
		t.Fatal(err)
	}
	// The conflicting single-form stream was left alone: no group on it,
	// its entry not stored.
	if groups, err := rdb.XInfoGroups(ctx, "cw:tenant-b:payments:topic:orders").Result(); err != nil || len(groups) != 0 {
		t.Errorf("groups on the conflicting stream: %v, %v", groups, err)
	}
	if n, _ := mc.Database(e2e.DBName("tenant-b")).Collection("messages").CountDocuments(ctx, bson.M{"_id": "payments:orders:" + conflictID, "payload": 2}); n != 0 {
		t.Errorf("the conflicting stream's entry was stored")
	}
	rep := e2e.Verify(ctx, t, mc, &ledger, tenants)
	if len(rep.Missing) != 0 || len(rep.CrossTenant) != 0 {
		t.Errorf("after stop: %s", rep)
	}
	if !strings.Contains(fmt.Sprint(rep.Unexpected), retryID) || len(rep.Unexpected) != 1 {
		t.Errorf("unexpected documents %v, want only the retry entry", rep.Unexpected)
	}
}
