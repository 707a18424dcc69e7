package dlq_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/gridfs"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/chronow/persister/internal/dlq"
	"github.com/chronow/persister/internal/e2e"
	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/message"
	"github.com/chronow/persister/internal/promtext"
	"github.com/chronow/persister/internal/publisher"
	"github.com/chronow/persister/internal/rescue"
)

const prefix = "cw:"

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestDeadLetterStreams publishes Chronow dead-letter entries for two tenants
// (two namespaces, the same original message dead-lettered twice) and finds
// each exactly once in its own tenant's dead_letters, field for field.
func TestDeadLetterStreams(t *testing.T) {
	ctx := ctxT(t, 3*time.Minute)
	rs, ms, rdb, mc := e2e.StartServers(t)
	tenants := []string{"acme", "globex"}
	pub := &publisher.Publisher{RDB: rdb, Prefix: prefix}

	type rec struct {
		d  publisher.DeadLetter
		id string
	}
	var recs []rec
	failed := time.Date(2026, 11, 25, 19, 0, 0, 123e6, time.UTC)
	for _, tenant := range tenants {
		for _, ns := range []string{"default", "pay"} {
			for i := range 6 {
				d := publisher.DeadLetter{
					Tenant: tenant, Namespace: ns, Topic: "orders:eu",
					OriginalMsgID: fmt.Sprintf("1732561200%03d-0", i/2), // each original twice
					Payload:       fmt.Sprintf(`{"n":%d,"big":9007199254740993,"tenant":%q}`, i, tenant),
					Headers:       map[string]string{"traceId": fmt.Sprintf("%s-%d", tenant, i)},
					Reason:        fmt.Sprintf("subscription s%d gave up", i%2),
					Deliveries:    i + 1,
					FailedAt:      failed.Add(time.Duration(i) * time.Second),
				}
				id, err := pub.PublishDeadLetter(ctx, d)
				if err != nil {
					t.Fatal(err)
				}
				recs = append(recs, rec{d, id})
			}
		}
	}
	env := e2e.Env(t, rs.URL, ms.URI, tenants, nil)
	run := e2e.Start(t, env)

	e2e.Eventually(t, 90*time.Second, "every dead letter stored", func() (bool, string) {
		total := int64(0)
		for _, tenant := range tenants {
			n, _ := mc.Database(e2e.DBName(tenant)).Collection("dead_letters").CountDocuments(ctx, bson.D{})
			total += n
		}
		return total >= int64(len(recs)), fmt.Sprintf("%d of %d", total, len(recs))
	})
	streams := dlqStreams(recs, func(r rec) string { return r.d.Key(prefix) })
	waitPending(ctx, t, rdb, streams, 0)

	for _, tenant := range tenants {
		var docs []bson.M
		cur, err := mc.Database(e2e.DBName(tenant)).Collection("dead_letters").Find(ctx, bson.D{})
		if err != nil {
			t.Fatal(err)
		}
		if err := cur.All(ctx, &docs); err != nil {
			t.Fatal(err)
		}
		byID := map[string]bson.M{}
		for _, d := range docs {
			byID[d["_id"].(string)] = d
		}
		want := 0
		for _, r := range recs {
			if r.d.Tenant != tenant {
				continue
			}
			want++
			docID := message.Identity(r.d.Namespace, r.d.Topic, r.id)
			d, ok := byID[docID]
			if !ok {
				t.Errorf("%s: dead letter %s missing", tenant, docID)
				continue
			}
			check := map[string]any{
				"topic": r.d.Topic, "msgId": r.d.OriginalMsgID, "tenantId": tenant, "namespace": r.d.Namespace,
				"dlqId": r.id, "reason": r.d.Reason, "deliveries": int64(r.d.Deliveries),
			}
			for k, v := range check {
				if d[k] != v {
					t.Errorf("%s %s: got %v (%T), want %v", docID, k, d[k], d[k], v)
				}
			}
			if got := d["failedAt"].(primitive.DateTime).Time(); !got.Equal(r.d.FailedAt) {
				t.Errorf("%s failedAt: got %v, want %v", docID, got, r.d.FailedAt)
			}
			if got := d["headers"].(bson.M)["traceId"]; got != r.d.Headers["traceId"] {
				t.Errorf("%s headers.traceId: got %v", docID, got)
			}
			p := d["payload"].(bson.M)
			if p["big"] != int64(9007199254740993) || p["tenant"] != tenant {
				t.Errorf("%s payload: got %v", docID, p)
			}
			sys := d["_system"].(bson.M)
			if _, ok := sys["createdAt"].(primitive.DateTime); !ok {
				t.Errorf("%s _system.createdAt: got %v", docID, sys["createdAt"])
			}
			if _, ok := sys["defects"]; ok {
				t.Errorf("%s: unexpected defects %v", docID, sys["defects"])
			}
		}
		if len(docs) != want {
			t.Errorf("%s: %d dead letters stored, want exactly %d", tenant, len(docs), want)
		}
	}
	if err := run.Stop(); err != nil {
		t.Fatal(err)
	}
}

// entry is one stream entry of the bad-input test and what must come of it.
type entry struct {
	tenant, ns, topic string
	kind              keyspace.Kind
	values            []any
	id                string
	// defects that the stored document must list (nil: a good entry).
	defects []message.Defect
	// payload, when the test must find it back from the bucket.
	offloadedPayload string
	refused          bool
}

func (e entry) key() keyspace.Key {
	return keyspace.Key{Prefix: prefix, Tenant: e.tenant, Namespace: e.ns, Kind: e.kind, Name: e.topic}
}

func (e entry) coll() string { return rescue.Collection(e.kind) }

func (e entry) docID() string { return message.Identity(e.ns, e.topic, e.id) }

func topicValues(payload string, change func(m map[string]string, order *[]string)) []any {
	msg := publisher.Message{Payload: payload, Headers: map[string]string{"h": "1"}, PublishedAt: time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.UTC)}
	return changeValues(msg.Values(), change)
}

func dlqValues(change func(m map[string]string, order *[]string)) []any {
	d := publisher.DeadLetter{OriginalMsgID: "1732561200000-3", Payload: `{"a":1}`, Reason: "boom", Deliveries: 3,
		FailedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	return changeValues(d.Values(), change)
}

// changeValues applies change to the field/value list vs (as a map and the
// fields' order) and returns the list again.
func changeValues(vs []any, change func(m map[string]string, order *[]string)) []any {
	m := map[string]string{}
	var order []string
	for i := 0; i < len(vs); i += 2 {
		m[vs[i].(string)] = vs[i+1].(string)
		order = append(order, vs[i].(string))
	}
	if change != nil {
		change(m, &order)
	}
	var out []any
	for _, k := range order {
		if v, ok := m[k]; ok {
			out = append(out, k, v)
		}
	}
	return out
}

func set(k, v string) func(m map[string]string, order *[]string) {
	return func(m map[string]string, order *[]string) {
		if _, ok := m[k]; !ok {
			*order = append(*order, k)
		}
		m[k] = v
	}
}

func del(k string) func(m map[string]string, order *[]string) {
	return func(m map[string]string, _ *[]string) { delete(m, k) }
}

// badInputEntries returns, for one tenant, good entries interleaved with
// every kind of bad input.
func badInputEntries(tenant string, big string) []entry {
	D := func(ds ...message.Defect) []message.Defect { return ds }
	topic := func(payload string, change func(map[string]string, *[]string), defects []message.Defect) entry {
		return entry{tenant: tenant, ns: "pay", topic: "orders", kind: keyspace.KindTopic, values: topicValues(payload, change), defects: defects}
	}
	dl := func(change func(map[string]string, *[]string), defects []message.Defect) entry {
		return entry{tenant: tenant, ns: "pay", topic: "orders", kind: keyspace.KindDLQ, values: dlqValues(change), defects: defects}
	}
	goodTopic := func(i int) entry { return topic(fmt.Sprintf(`{"good":%d}`, i), nil, nil) }
	bigPayload := `{"blob":"` + big + `"}`
	oversized := topic(bigPayload, nil, D(rescue.DefectPayloadTooLarge))
	oversized.offloadedPayload = bigPayload
	oversizedDLQ := dl(set("payload", bigPayload), D(rescue.DefectPayloadTooLarge))
	oversizedDLQ.offloadedPayload = bigPayload
	undecodable := topic(`{"x":1}`, set("bad\xffname", "v"), D(rescue.DefectRefused))
	undecodable.refused = true

	bad := []entry{
		topic(`{not json`, nil, D(message.DefectPayloadNotJSON)),
		topic(`{"x":1}`, del("payload"), D(message.DefectPayloadMissing)),
		topic(`{"x":1}`, set("headers", "{oops"), D(message.DefectHeadersNotJSON)),
		topic(`{"x":1}`, set("headers", `["a"]`), D(message.DefectHeadersNotObject)),
		topic(`{"x":1}`, del("headers"), D(message.DefectHeadersMissing)),
		topic(`{"x":1}`, set("size", "ten"), D(message.DefectSizeInvalid)),
		topic(`{"x":1}`, set("size", "999"), D(message.DefectSizeMismatch)),
		topic(`{"x":1}`, set("hash", strings.Repeat("0", 64)), D(message.DefectHashMismatch)),
		topic(`{"x":1}`, del("hash"), D(message.DefectHashMissing)),
		topic(`{"x":1}`, set("publishedAt", "not a time"), D(message.DefectPublishedAtBad)),
		topic(`{"$set":{"a":1},"a.b":2}`, nil, D(message.DefectKeysEscaped)),
		topic(`{"outer":{"$inc":{"x.y":1}},"list":[{"$k":1}]}`, nil, D(message.DefectKeysEscaped)),
		oversized,
		undecodable,
		dl(nil, nil),
		dl(set("payload", "{bad"), D(message.DefectPayloadNotJSON)),
		dl(set("payload", `{"$where":"x","k.k":{"$y":1}}`), D(message.DefectKeysEscaped)),
		dl(del("deliveries"), D(dlq.DefectDeliveriesMissing)),
		dl(set("deliveries", "many"), D(dlq.DefectDeliveriesInvalid)),
		dl(set("failedAt", "2026-13-45"), D(dlq.DefectFailedAtInvalid)),
		dl(del("failedAt"), D(dlq.DefectFailedAtMissing)),
		dl(del("originalMsgId"), D(dlq.DefectOriginalIDMissing)),
		dl(set("originalMsgId", "abc"), D(dlq.DefectOriginalIDInvalid)),
		dl(set("headers", "nope"), D(message.DefectHeadersNotJSON)),
		dl(del("reason"), D(dlq.DefectReasonMissing)),
		oversizedDLQ,
	}
	var out []entry
	for i, b := range bad {
		out = append(out, goodTopic(2*i), b, goodTopic(2*i+1))
	}
	return out
}

// TestBadInput mixes good entries with every kind of bad input in the same
// batches, for two tenants: every good entry is stored once, every bad one
// is findable by its stream id with its reason, the pending list ends
// empty, and a full redelivery changes nothing.
func TestBadInput(t *testing.T) {
	ctx := ctxT(t, 6*time.Minute)
	rs, ms, rdb, mc := e2e.StartServers(t)
	tenants := []string{"acme", "globex"}

	big := strings.Repeat("0123456789abcdef", (17<<20)/16) // 17 MiB: over the BSON limit
	var all []entry
	for _, tenant := range tenants {
		all = append(all, badInputEntries(tenant, big)...)
	}
	// Publish in one pipeline so each read batch holds a mix.
	cmds := make([]*redis.StringCmd, len(all))
	if _, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, e := range all {
			cmds[i] = p.XAdd(ctx, &redis.XAddArgs{Stream: e.key().String(), Values: e.values})
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	streamSet := map[string]bool{}
	for i := range all {
		all[i].id = cmds[i].Val()
		streamSet[all[i].key().String()] = true
	}
	var streams []string
	for s := range streamSet {
		streams = append(streams, s)
	}
	sort.Strings(streams)

	env := e2e.Env(t, rs.URL, ms.URI, tenants, map[string]string{"PERSISTER_BATCH_SIZE": "20"})
	run := e2e.Start(t, env)
	start := time.Now()
	waitStored(ctx, t, mc, all)
	waitPending(ctx, t, rdb, streams, 0)
	t.Logf("%d entries (%d bad, 4 over 16 MiB) stored and acked in %s", len(all), countBad(all), time.Since(start).Round(time.Millisecond))
	checkBadInput(ctx, t, mc, all)
	for _, tenant := range tenants {
		for defect, want := range map[message.Defect]float64{
			rescue.DefectPayloadTooLarge: 2, rescue.DefectRefused: 1, message.DefectPayloadNotJSON: 2,
			message.DefectKeysEscaped: 3, dlq.DefectDeliveriesInvalid: 1, message.DefectHashMismatch: 1,
		} {
			if got := counter(t, run.D.Registry(), "persister_entries_malformed_total", "tenant", tenant, "defect", string(defect)); got != want {
				t.Errorf("persister_entries_malformed_total{tenant=%q,defect=%q}: got %v, want %v", tenant, defect, got, want)
			}
		}
	}
	before := snapshot(ctx, t, mc, tenants)
	if err := run.Stop(); err != nil {
		t.Fatal(err)
	}

	// Redeliver everything: rewind the group and run again.
	for _, s := range streams {
		if err := rdb.Do(ctx, "XGROUP", "SETID", s, "persister", "0", "ENTRIESREAD", "0").Err(); err != nil {
			t.Fatal(err)
		}
	}
	run = e2e.Start(t, env)
	start = time.Now()
	e2e.Eventually(t, 3*time.Minute, "every entry redelivered and acked", func() (bool, string) {
		for _, s := range streams {
			gs, err := rdb.XInfoGroups(ctx, s).Result()
			if err != nil || len(gs) != 1 {
				return false, fmt.Sprint(s, err)
			}
			last, _ := rdb.XInfoStream(ctx, s).Result()
			if gs[0].LastDeliveredID != last.LastGeneratedID || gs[0].Pending != 0 {
				return false, fmt.Sprintf("%s: delivered up to %s of %s, %d pending", s, gs[0].LastDeliveredID, last.LastGeneratedID, gs[0].Pending)
			}
		}
		return true, ""
	})
	t.Logf("redelivery of %d entries acked in %s", len(all), time.Since(start).Round(time.Millisecond))
	if err := run.Stop(); err != nil {
		t.Fatal(err)
	}
	after := snapshot(ctx, t, mc, tenants)
	if len(after) != len(before) {
		t.Errorf("documents after redelivery: got %d, want %d", len(after), len(before))
	}
	for k, v := range before {
		if !bytes.Equal(after[k], v) {
			t.Errorf("document %s changed by the redelivery", k)
		}
	}
	checkBadInput(ctx, t, mc, all)
}

func countBad(all []entry) int {
	n := 0
	for _, e := range all {
		if e.defects != nil {
			n++
		}
	}
	return n
}

func waitStored(ctx context.Context, t *testing.T, mc *mongo.Client, all []entry) {
	t.Helper()
	e2e.Eventually(t, 4*time.Minute, "every entry stored", func() (bool, string) {
		missing := 0
		first := ""
		for _, e := range all {
			n, err := mc.Database(e2e.DBName(e.tenant)).Collection(e.coll()).CountDocuments(ctx, bson.D{{Key: "_id", Value: e.docID()}})
			if err != nil || n != 1 {
				missing++
				if first == "" {
					first = e.key().String() + " " + e.id
				}
			}
		}
		return missing == 0, fmt.Sprintf("%d missing, first %s", missing, first)
	})
}

func waitPending(ctx context.Context, t *testing.T, rdb *redis.Client, streams []string, want int64) {
	t.Helper()
	e2e.Eventually(t, time.Minute, "pending list empty", func() (bool, string) {
		n, err := e2e.Pending(ctx, rdb, "persister", streams)
		return err == nil && n == want, fmt.Sprint(n, err)
	})
}

// checkBadInput finds every entry by its stream id in its own tenant's
// database: good entries without defects, bad ones with theirs.
func checkBadInput(ctx context.Context, t *testing.T, mc *mongo.Client, all []entry) {
	t.Helper()
	for _, tenant := range []string{"acme", "globex"} {
		db := mc.Database(e2e.DBName(tenant))
		for _, coll := range []string{"messages", "dead_letters"} {
			n, _ := db.Collection(coll).CountDocuments(ctx, bson.D{})
			want := 0
			for _, e := range all {
				if e.tenant == tenant && e.coll() == coll {
					want++
				}
			}
			if int(n) != want {
				t.Errorf("%s.%s: %d documents, want exactly %d", tenant, coll, n, want)
			}
			c, _ := db.Collection(coll).CountDocuments(ctx, bson.D{{Key: "tenantId", Value: bson.D{{Key: "$ne", Value: tenant}}}})
			if c != 0 {
				t.Errorf("%s.%s: %d documents of another tenant", tenant, coll, c)
			}
		}
	}
	for _, e := range all {
		db := mc.Database(e2e.DBName(e.tenant))
		var d bson.M
		// Findable by stream id: msgId for topic entries, dlqId for
		// dead-letter entries.
		idField := "msgId"
		if e.kind == keyspace.KindDLQ {
			idField = "dlqId"
		}
		err := db.Collection(e.coll()).FindOne(ctx, bson.D{{Key: "topic", Value: e.topic}, {Key: "namespace", Value: e.ns}, {Key: idField, Value: e.id}}).Decode(&d)
		if err != nil {
			t.Errorf("%s %s: not found by %s: %v", e.key(), e.id, idField, err)
			continue
		}
		sys := d["_system"].(bson.M)
		var got []message.Defect
		if a, ok := sys["defects"].(bson.A); ok {
			for _, x := range a {
				got = append(got, message.Defect(x.(string)))
			}
		}
		for _, want := range e.defects {
			if !slices.Contains(got, want) {
				t.Errorf("%s %s: defects %v lack %s", e.key(), e.id, got, want)
			}
		}
		if e.defects == nil && len(got) > 0 {
			t.Errorf("%s %s: good entry stored with defects %v", e.key(), e.id, got)
		}
		if e.offloadedPayload != "" {
			ref := sys["offloaded"].(bson.M)["payload"].(bson.M)
			data := download(ctx, t, db, ref["fileId"])
			if string(data) != e.offloadedPayload {
				t.Errorf("%s %s: payload from the bucket: %d bytes, want %d", e.key(), e.id, len(data), len(e.offloadedPayload))
			}
			sum := sha256.Sum256(data)
			if ref["sha256"] != hex.EncodeToString(sum[:]) || ref["length"] != int64(len(data)) {
				t.Errorf("%s %s: reference %v does not match the stored bytes", e.key(), e.id, ref)
			}
			if d["payload"] != nil {
				t.Errorf("%s %s: stub payload: got %v, want null", e.key(), e.id, d["payload"])
			}
		}
		if e.refused {
			ref := sys["offloaded"].(bson.M)["document"].(bson.M)
			data := download(ctx, t, db, ref["fileId"])
			if err := bson.Raw(data).Validate(); err != nil {
				t.Errorf("%s %s: refused document from the bucket is not BSON: %v", e.key(), e.id, err)
			} else if id, _ := bson.Raw(data).Lookup("_id").StringValueOK(); id != e.docID() {
				t.Errorf("%s %s: refused document _id %q, want %q", e.key(), e.id, id, e.docID())
			}
			if s, _ := sys["error"].(string); !strings.Contains(s, "UTF-8") {
				t.Errorf("%s %s: _system.error %q does not say why", e.key(), e.id, s)
			}
		}
	}
}

func download(ctx context.Context, t *testing.T, db *mongo.Database, fileID any) []byte {
	t.Helper()
	b, err := gridfs.NewBucket(db, options.GridFSBucket().SetName(rescue.Bucket))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := b.DownloadToStream(fileID, &buf); err != nil {
		t.Errorf("download %v from the %s bucket: %v", fileID, rescue.Bucket, err)
	}
	return buf.Bytes()
}

// snapshot returns every document the persister wrote, by collection/_id.
func snapshot(ctx context.Context, t *testing.T, mc *mongo.Client, tenants []string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, tenant := range tenants {
		db := mc.Database(e2e.DBName(tenant))
		for _, coll := range []string{"messages", "dead_letters", "topics", rescue.Bucket + ".files", rescue.Bucket + ".chunks"} {
			cur, err := db.Collection(coll).Find(ctx, bson.D{})
			if err != nil {
				t.Fatal(err)
			}
			for cur.Next(ctx) {
				id := fmt.Sprint(cur.Current.Lookup("_id"))
				out[tenant+"/"+coll+"/"+id] = slices.Clone(cur.Current)
			}
			if err := cur.Err(); err != nil {
				t.Fatal(err)
			}
			_ = cur.Close(ctx)
		}
	}
	return out
}

func dlqStreams[T any](recs []T, key func(T) string) []string {
	set := map[string]bool{}
	for _, r := range recs {
		set[key(r)] = true
	}
	var out []string
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestPoison: entries left pending after more than PERSISTER_MAX_DELIVERIES
// deliveries are dead-lettered with the reason and acked when the daemon
// drains its pending list; one whose document is already stored is only
// acked.
func TestPoison(t *testing.T) {
	ctx := ctxT(t, 3*time.Minute)
	rs, ms, rdb, mc := e2e.StartServers(t)
	tenants := []string{"acme"}
	env := e2e.Env(t, rs.URL, ms.URI, tenants, map[string]string{"PERSISTER_MAX_DELIVERIES": "3"})
	consumer := env["PERSISTER_CONSUMER"]
	pub := &publisher.Publisher{RDB: rdb, Prefix: prefix}
	m := publisher.Message{Tenant: "acme", Namespace: "default", Topic: "jobs"}
	var ids []string
	for i := range 4 {
		m.Payload = fmt.Sprintf(`{"job":%d}`, i)
		id, err := pub.Publish(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	stream := m.Key(prefix)
	// The daemon's consumer took all four before; entries 0 and 1 were
	// delivered 5 times, entry 2 four times (poison at MAX_DELIVERIES=3:
	// the next read is delivery 6 or 5), entry 3 once (not poison).
	if err := rdb.XGroupCreate(ctx, stream, "persister", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "persister", Consumer: consumer, Streams: []string{stream, ">"}, Count: 10, Block: -1}).Err(); err != nil {
		t.Fatal(err)
	}
	for i, n := range []int{5, 5, 4} {
		if err := rdb.Do(ctx, "XCLAIM", stream, "persister", consumer, "0", ids[i], "RETRYCOUNT", strconv.Itoa(n), "JUSTID").Err(); err != nil {
			t.Fatal(err)
		}
	}
	// Entry 1 was stored before (crash between write and ack).
	db := mc.Database(e2e.DBName("acme"))
	var b message.Builder
	key, _ := keyspace.Parse(prefix, stream)
	xm, _ := rdb.XRange(ctx, stream, ids[1], ids[1]).Result()
	pre, err := b.Topic(key, ids[1], xm[0].Values, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Collection("messages").InsertOne(ctx, bson.Raw(pre.Raw)); err != nil {
		t.Fatal(err)
	}

	run := e2e.Start(t, env)
	waitPending(ctx, t, rdb, []string{stream}, 0)
	e2e.Eventually(t, time.Minute, "entry 3 stored", func() (bool, string) {
		n, _ := db.Collection("messages").CountDocuments(ctx, bson.D{{Key: "_id", Value: message.Identity("default", "jobs", ids[3])}})
		return n == 1, fmt.Sprint(n)
	})
	if got := counter(t, run.D.Registry(), "persister_entries_dead_lettered_total", "tenant", "acme", "reason", dlq.ReasonPoison); got != 2 {
		t.Errorf("persister_entries_dead_lettered_total{reason=%q}: got %v, want 2", dlq.ReasonPoison, got)
	}
	for i, id := range ids {
		nMsg, _ := db.Collection("messages").CountDocuments(ctx, bson.D{{Key: "_id", Value: message.Identity("default", "jobs", id)}})
		var dl bson.M
		err := db.Collection("dead_letters").FindOne(ctx, bson.D{{Key: "_id", Value: dlq.PoisonID(key, id)}}).Decode(&dl)
		switch i {
		case 0, 2:
			if err != nil {
				t.Errorf("entry %d: no poison dead letter: %v", i, err)
				continue
			}
			if nMsg != 0 {
				t.Errorf("entry %d: dead-lettered and stored in messages too", i)
			}
			want := map[string]any{"topic": "jobs", "msgId": id, "tenantId": "acme", "namespace": "default", "deliveries": int64([]int{5, 5, 4}[i])}
			for k, v := range want {
				if dl[k] != v {
					t.Errorf("entry %d %s: got %v (%T), want %v", i, k, dl[k], dl[k], v)
				}
			}
			if r, _ := dl["reason"].(string); !strings.Contains(r, "PERSISTER_MAX_DELIVERIES=3") {
				t.Errorf("entry %d reason: got %q", i, r)
			}
			if p := dl["payload"].(bson.M); p["job"] != int32(i) {
				t.Errorf("entry %d payload: got %v", i, p)
			}
			sys := dl["_system"].(bson.M)
			if src := sys["source"].(bson.M); src["stream"] != stream || src["id"] != id {
				t.Errorf("entry %d source: got %v", i, src)
			}
			if !slices.Contains(sys["defects"].(bson.A), any(string(dlq.DefectPoison))) {
				t.Errorf("entry %d defects: got %v", i, sys["defects"])
			}
		case 1, 3:
			if err == nil {
				t.Errorf("entry %d: dead-lettered, want only the messages document", i)
			}
			if nMsg != 1 {
				t.Errorf("entry %d: %d messages documents, want 1", i, nMsg)
			}
		}
	}
	if err := run.Stop(); err != nil {
		t.Fatal(err)
	}
}

// counter reads one counter from the daemon's registry, as a scrape would.
func counter(t *testing.T, reg prometheus.Gatherer, family string, labels ...string) float64 {
	t.Helper()
	if ms, _ := promtext.Series(t, reg, family, labels...); len(ms) > 0 {
		return ms[0].GetCounter().GetValue()
	}
	return 0
}
