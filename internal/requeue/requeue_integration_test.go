package requeue_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/e2e"
	"github.com/chronow/persister/internal/entry"
	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/message"
	"github.com/chronow/persister/internal/publisher"
	"github.com/chronow/persister/internal/replay"
	"github.com/chronow/persister/internal/requeue"
)

const prefix = "cw:"

func TestRequeue(t *testing.T) {
	ctx := context.Background()
	rs, ms, rdb, mc := e2e.StartServers(t)
	w := e2e.Writer(ctx, t, rs.URL, ms.URI, "acme")
	db := mc.Database(e2e.DBName("acme"))

	// Chronow's dead letters, stored the way the daemon stores them.
	t0 := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	p := publisher.Publisher{RDB: rdb, Prefix: prefix, MaxLen: -1}
	dls := []publisher.DeadLetter{
		{Namespace: "app", Topic: "orders", Payload: `{"n":1}`, Reason: "max deliveries exceeded", FailedAt: t0},
		{Namespace: "app", Topic: "orders", Payload: `{"n":2,"big":9007199254740993,"f":0.1}`, Headers: map[string]string{"k": "v", "a": "b"}, Reason: "max deliveries exceeded", FailedAt: t0.Add(time.Hour)},
		{Namespace: "app", Topic: "orders", Payload: `{"n":3}`, Reason: "max deliveries exceeded", FailedAt: t0.Add(2 * time.Hour)},
		{Namespace: "app", Topic: "orders", Payload: `{"n":4}`, Reason: "bad input", FailedAt: t0.Add(time.Hour)},
		{Namespace: "app", Topic: "orders", Payload: `{"$set":{"a.b":"x"}}`, Reason: "custom: refused", FailedAt: t0.Add(3 * time.Hour)},
		{Namespace: "billing", Topic: "audit:eu", Payload: `"text"`, Reason: "max deliveries exceeded", FailedAt: t0.Add(time.Hour)},
	}
	for i := range dls {
		dls[i].Tenant, dls[i].OriginalMsgID, dls[i].Deliveries = "acme", "1-1", 5
		if _, err := p.PublishDeadLetter(ctx, dls[i]); err != nil {
			t.Fatal(err)
		}
	}
	// One without a payload: cannot be requeued.
	noPayload := publisher.DeadLetter{Tenant: "acme", Namespace: "app", Topic: "orders"}.Key(prefix)
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: noPayload, Values: []any{"originalMsgId", "1-1", "reason", "x", "failedAt", t0.Format(time.RFC3339)}}).Err(); err != nil {
		t.Fatal(err)
	}
	rp := replay.New(rdb, w, replay.Config{Layout: keyspace.Layout{Prefix: prefix}, Tenants: []string{"acme"}, Decoders: entry.Decoders()})
	if rep, err := rp.Replay(ctx, replay.Filter{Kinds: []keyspace.Kind{keyspace.KindDLQ}, Range: replay.All}); err != nil || rep.Totals.Stored != len(dls)+1 {
		t.Fatalf("storing the dead letters: %v, %+v", err, rep)
	}
	// The persister's own dead letter of a topic entry: never requeued.
	if _, err := db.Collection(config.CollDeadLetters).InsertOne(ctx, bson.D{
		{Key: "_id", Value: "app:orders:5-0#topic#poison"}, {Key: "topic", Value: "orders"}, {Key: "namespace", Value: "app"},
		{Key: "payload", Value: 1}, {Key: "reason", Value: "max_deliveries_exceeded"}, {Key: "failedAt", Value: t0},
		{Key: "_system", Value: bson.D{{Key: "source", Value: bson.D{{Key: "kind", Value: "topic"}}}}},
	}); err != nil {
		t.Fatal(err)
	}

	now := t0.Add(48 * time.Hour)
	q := requeue.New(rdb, db, requeue.Config{Layout: keyspace.Layout{Prefix: prefix, Form: keyspace.FormAuto}, Tenant: "acme", Now: func() time.Time { return now }})
	orders := "cw:acme:app:topic:orders"
	xlen := func(key string) int64 {
		n, err := rdb.XLen(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	// Dry run with every filter: lists, writes nothing.
	f := requeue.Filter{Namespace: "app", Topic: "orders", Reason: "deliveries", Since: t0.Add(30 * time.Minute), Until: t0.Add(3 * time.Hour)}
	rep, err := q.Run(ctx, f, true)
	if err != nil {
		t.Fatal(err)
	}
	if got := payloads(rep); !slices.Equal(got, []int{len(dls[1].Payload), len(dls[2].Payload)}) || rep.Items[0].Status != requeue.StatusWouldRequeue {
		t.Fatalf("dry run: got %+v", rep.Items)
	}
	if xlen(orders) != 0 || marked(t, ctx, db) != 0 {
		t.Fatal("dry run wrote something")
	}

	// The real run: two entries added, oldest failure first, both marked.
	rep, err = q.Run(ctx, f, false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Requeued != 2 || rep.Skipped != 0 {
		t.Fatalf("requeue: got %+v", rep)
	}
	entries, err := rdb.XRange(ctx, orders, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Fatalf("topic stream holds %d entries, want 2", len(entries))
	}
	wantPayloads := []string{dls[1].Payload, dls[2].Payload}
	wantHeaders := []string{`{"a":"b","k":"v"}`, `{}`}
	for i, e := range entries {
		checkChronowEntry(t, e, wantPayloads[i], wantHeaders[i], now)
		if rep.Items[i].NewID != e.ID || rep.Items[i].Stream != orders {
			t.Errorf("item %d: requeuedAs %s to %s, want %s to %s", i, rep.Items[i].NewID, rep.Items[i].Stream, e.ID, orders)
		}
		var doc bson.M
		if err := db.Collection(config.CollDeadLetters).FindOne(ctx, bson.D{{Key: "_id", Value: rep.Items[i].DocID}}).Decode(&doc); err != nil {
			t.Fatal(err)
		}
		if doc[requeue.FieldRequeuedAs] != e.ID || doc[requeue.FieldRequeuedTo] != orders || doc[requeue.FieldRequeuedAt] == nil {
			t.Errorf("dead letter %s not marked: %v", rep.Items[i].DocID, doc)
		}
	}

	// A second run requeues nothing again.
	rep, err = q.Run(ctx, f, false)
	if err != nil || rep.Requeued != 0 || len(rep.Items) != 0 {
		t.Fatalf("second run: %v, %+v", err, rep)
	}

	// Everything else of the tenant: the $-key payload goes back verbatim,
	// the one without payload is skipped, the persister's own is not selected.
	rep, err = q.Run(ctx, requeue.Filter{}, false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Requeued != 4 || rep.Skipped != 1 || len(rep.Items) != 5 {
		t.Fatalf("requeue all: got requeued %d skipped %d: %+v", rep.Requeued, rep.Skipped, rep.Items)
	}
	for _, it := range rep.Items {
		if strings.Contains(it.DocID, "#poison") {
			t.Errorf("the persister's own dead letter was selected: %+v", it)
		}
		if it.Status == requeue.StatusSkipped && !strings.Contains(it.Detail, "no payload") {
			t.Errorf("skipped for the wrong reason: %+v", it)
		}
	}
	all, err := rdb.XRange(ctx, orders, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range all {
		got = append(got, e.Values["payload"].(string))
	}
	want := []string{dls[1].Payload, dls[2].Payload, dls[0].Payload, dls[3].Payload, dls[4].Payload}
	if !slices.Equal(got, want) {
		t.Errorf("payloads on %s:\n got  %q\n want %q", orders, got, want)
	}
	if n := xlen("cw:acme:billing:topic:audit:eu"); n != 1 {
		t.Errorf("billing audit:eu: %d entries, want 1", n)
	}
	if m := marked(t, ctx, db); m != 6 {
		t.Errorf("marked dead letters: %d, want 6", m)
	}
}

// checkChronowEntry checks an entry is exactly what Chronow would write:
// the topic decoder finds nothing wrong with it.
func checkChronowEntry(t *testing.T, e redis.XMessage, payload, headers string, at time.Time) {
	t.Helper()
	var fields []string
	for k := range e.Values {
		fields = append(fields, k)
	}
	slices.Sort(fields)
	if want := []string{"hash", "headers", "payload", "publishedAt", "size"}; !slices.Equal(fields, want) {
		t.Errorf("entry %s fields %v, want %v", e.ID, fields, want)
	}
	if e.Values["payload"] != payload || e.Values["headers"] != headers || e.Values["publishedAt"] != at.Format("2006-01-02T15:04:05.000Z") {
		t.Errorf("entry %s: %v, want payload %s headers %s", e.ID, e.Values, payload, headers)
	}
	var b message.Builder
	doc, err := b.Topic(keyspace.Key{Prefix: prefix, Tenant: "acme", Namespace: "app", Kind: keyspace.KindTopic, Name: "orders"}, e.ID, e.Values, time.Now())
	if err != nil || len(doc.Defects) != 0 {
		t.Errorf("entry %s: decoder says %v, defects %v", e.ID, err, doc.Defects)
	}
}

func payloads(rep *requeue.Report) []int {
	var out []int
	for _, it := range rep.Items {
		out = append(out, it.PayloadBytes)
	}
	return out
}

func marked(t *testing.T, ctx context.Context, db *mongo.Database) int64 {
	t.Helper()
	n, err := db.Collection(config.CollDeadLetters).CountDocuments(ctx, bson.D{{Key: requeue.FieldRequeuedAt, Value: bson.D{{Key: "$exists", Value: true}}}})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
