package replay_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"

	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/e2e"
	"github.com/chronow/persister/internal/entry"
	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/publisher"
	"github.com/chronow/persister/internal/replay"
	"github.com/chronow/persister/internal/sink"
	"github.com/chronow/persister/internal/testenv"
)

const prefix = "cw:"

// rig is a Redis and a Mongo-compatible server with tenants configured.
type rig struct {
	rdb     *redis.Client
	mc      *mongo.Client
	env     map[string]string
	cfg     *config.Config
	w       *sink.Writer
	tenants []string
}

func newRig(t *testing.T, tenants ...string) *rig {
	t.Helper()
	rs := testenv.StartRedis(t)
	ms := testenv.StartMongo(t)
	env := e2e.Env(t, rs.URL, ms.URI, tenants, nil)
	cfg := e2e.Config(t, env)
	w, err := sink.New(context.Background(), cfg.Chronos, sink.Options{AppName: "replay-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close(context.Background()) })
	return &rig{rdb: rs.Client(t), mc: ms.Client(t), env: env, cfg: cfg, w: w, tenants: tenants}
}

func (r *rig) replayer(cfg replay.Config) *replay.Replayer {
	cfg.Prefix = prefix
	cfg.Tenants = r.tenants
	cfg.Decoders = entry.Decoders()
	return replay.New(r.rdb, r.w, cfg)
}

func (r *rig) db(tenant string) *mongo.Database { return r.mc.Database(e2e.DBName(tenant)) }

// publish writes n entries to each of the tenant's streams (2 namespaces x
// 2 topics, one topic name holding ':'), with payloads of every shape,
// plus a few malformed entries as another producer might write them.
func publish(t *testing.T, ctx context.Context, rdb *redis.Client, tenant string, n int) []string {
	t.Helper()
	p := publisher.Publisher{RDB: rdb, Prefix: prefix, MaxLen: -1}
	payloads := []string{
		`{"order":1,"big":9007199254740993,"f":1.5,"s":"caf\u00e9 \ud83d\ude00","nested":{"a":[1,2,{"b":null}]}}`,
		`[1,"two",false]`,
		`"just a string"`,
		`{"$set":{"a.b":1}}`,
		`12345678901234567890`,
	}
	var keys []string
	for _, ns := range []string{"app", "billing"} {
		for _, topic := range []string{"orders", "audit:eu"} {
			var ms []publisher.Message
			for i := range n {
				ms = append(ms, publisher.Message{
					Tenant: tenant, Namespace: ns, Topic: topic,
					Payload: payloads[i%len(payloads)], Headers: map[string]string{"i": fmt.Sprint(i), "trace": "x"},
				})
			}
			if _, err := p.PublishBatch(ctx, ms); err != nil {
				t.Fatal(err)
			}
			key := ms[0].Key(prefix)
			keys = append(keys, key)
			// Malformed: not JSON, wrong size and hash, missing headers.
			if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: []any{
				"payload", "{not json", "hash", "00", "size", "x", "publishedAt", "yesterday",
			}}).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	return keys
}

// docs returns a collection's documents by _id, with _system.createdAt
// removed (the only field a replay writes differently).
func docs(t *testing.T, ctx context.Context, coll *mongo.Collection) map[string][]byte {
	t.Helper()
	cur, err := coll.Find(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close(ctx)
	out := map[string][]byte{}
	for cur.Next(ctx) {
		id := cur.Current.Lookup("_id").StringValue()
		if _, dup := out[id]; dup {
			t.Fatalf("_id %s twice", id)
		}
		out[id] = withoutCreatedAt(t, cur.Current)
	}
	if err := cur.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func withoutCreatedAt(t *testing.T, raw bson.Raw) []byte {
	t.Helper()
	elems, err := bsoncore.Document(raw).Elements()
	if err != nil {
		t.Fatal(err)
	}
	idx, dst := bsoncore.AppendDocumentStart(nil)
	for _, e := range elems {
		if e.Key() != "_system" {
			dst = append(dst, e...)
			continue
		}
		sub, _ := e.Value().DocumentOK()
		subElems, _ := sub.Elements()
		sidx, d := bsoncore.AppendDocumentElementStart(dst, "_system")
		for _, se := range subElems {
			if se.Key() != "createdAt" {
				d = append(d, se...)
			}
		}
		dst, _ = bsoncore.AppendDocumentEnd(d, sidx)
	}
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	return dst
}

func count(t *testing.T, ctx context.Context, coll *mongo.Collection) int {
	t.Helper()
	n, err := coll.CountDocuments(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	return int(n)
}

func TestReplayRebuildsDroppedTenant(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, "acme", "globex")
	const n = 150
	keys := publish(t, ctx, r.rdb, "acme", n)
	publish(t, ctx, r.rdb, "globex", n)
	perTenant := 4 * (n + 1)

	// The daemon stores everything; that is the reference.
	d := e2e.Start(t, r.env)
	e2e.Eventually(t, 2*time.Minute, "the daemon to store every entry", func() (bool, string) {
		a, g := e2e.CountStored(ctx, t, r.mc, "acme"), e2e.CountStored(ctx, t, r.mc, "globex")
		return a == int64(perTenant) && g == int64(perTenant), fmt.Sprintf("acme %d, globex %d of %d", a, g, perTenant)
	})
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	msgs := r.db("acme").Collection(config.CollMessages)
	want := docs(t, ctx, msgs)
	globexBefore := docs(t, ctx, r.db("globex").Collection(config.CollMessages))

	// Lose acme's database.
	if err := r.db("acme").Drop(ctx); err != nil {
		t.Fatal(err)
	}
	var progress bytes.Buffer
	rp := r.replayer(replay.Config{PageSize: 64, Progress: &progress})
	rep, err := rp.Replay(ctx, replay.Filter{Tenant: "acme", Range: replay.All})
	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	if got := rep.Totals; got.Read != perTenant || got.Stored != perTenant || got.Present != 0 || got.Refused != 0 {
		t.Fatalf("first replay totals: got %+v, want read=stored=%d", got, perTenant)
	}
	var streams []string
	for _, s := range rep.Streams {
		streams = append(streams, s.Stream)
		if s.Read != n+1 || s.Stored != n+1 {
			t.Errorf("stream %s: read %d stored %d, want %d", s.Stream, s.Read, s.Stored, n+1)
		}
	}
	slices.Sort(keys)
	if !slices.Equal(streams, keys) {
		t.Errorf("streams replayed: got %v, want %v", streams, keys)
	}
	if !strings.Contains(progress.String(), "replay:") {
		t.Errorf("no progress printed: %q", progress.String())
	}

	// Every entry stored exactly once, field for field as the daemon wrote it.
	got := docs(t, ctx, msgs)
	if len(got) != len(want) {
		t.Fatalf("after replay: %d documents, want %d", len(got), len(want))
	}
	for id, w := range want {
		g, ok := got[id]
		switch {
		case !ok:
			t.Errorf("document %s missing after replay", id)
		case !bytes.Equal(g, w):
			t.Errorf("document %s differs:\n got  %s\n want %s", id, bson.Raw(g), bson.Raw(w))
		}
	}
	// The other tenant was not touched.
	if g := docs(t, ctx, r.db("globex").Collection(config.CollMessages)); len(g) != len(globexBefore) {
		t.Errorf("globex: %d documents, want %d", len(g), len(globexBefore))
	}

	// A second replay finds everything already present and changes nothing.
	rep2, err := rp.Replay(ctx, replay.Filter{Tenant: "acme", Range: replay.All})
	if err != nil {
		t.Fatal(err)
	}
	if got := rep2.Totals; got.Read != perTenant || got.Present != perTenant || got.Stored != 0 {
		t.Fatalf("second replay totals: got %+v, want everything present", got)
	}
	if c := count(t, ctx, msgs); c != perTenant {
		t.Fatalf("after second replay: %d documents, want %d", c, perTenant)
	}
	var text bytes.Buffer
	if err := rep2.WriteText(&text, 5); err != nil {
		t.Fatal(err)
	}
	t.Logf("second replay report:\n%s", text.String())
}

func TestVerifyFindsDeletedDocumentAndTrimmedEntry(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, "acme")
	const n = 120
	keys := publish(t, ctx, r.rdb, "acme", n)
	slices.Sort(keys)
	rp := r.replayer(replay.Config{PageSize: 50})
	if _, err := rp.Replay(ctx, replay.Filter{Range: replay.All}); err != nil {
		t.Fatal(err)
	}
	v, err := rp.Verify(ctx, replay.Filter{Range: replay.All})
	if err != nil {
		t.Fatal(err)
	}
	if !v.Complete() || v.Totals.Matched != 4*(n+1) || v.Totals.OnlyInMongo != 0 {
		t.Fatalf("verify after replay: got %+v, want all %d matched", v.Totals, 4*(n+1))
	}

	// Delete a document by hand, and remove entries from Redis: one by
	// XDEL in the middle of a stream, the oldest 20 of another by XTRIM.
	entries := func(key string) []redis.XMessage {
		m, err := r.rdb.XRange(ctx, key, "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	k0, err := keyspace.Parse(prefix, keys[0])
	if err != nil {
		t.Fatal(err)
	}
	k1, k2 := keys[1], keys[2]
	deleted := entries(keys[0])[37].ID
	if _, err := r.db("acme").Collection(config.CollMessages).DeleteOne(ctx, bson.D{{Key: "_id", Value: k0.Namespace + ":" + k0.Name + ":" + deleted}}); err != nil {
		t.Fatal(err)
	}
	xdel := entries(k1)[60].ID
	if err := r.rdb.XDel(ctx, k1, xdel).Err(); err != nil {
		t.Fatal(err)
	}
	var trimmed []string
	for _, m := range entries(k2)[:20] {
		trimmed = append(trimmed, m.ID)
	}
	if err := r.rdb.XTrimMaxLen(ctx, k2, int64(n+1-20)).Err(); err != nil {
		t.Fatal(err)
	}

	v, err = rp.Verify(ctx, replay.Filter{Range: replay.All})
	if err != nil {
		t.Fatal(err)
	}
	if v.Complete() {
		t.Fatal("verify: complete, want the deleted document reported missing")
	}
	byStream := map[string]replay.StreamVerify{}
	for _, s := range v.Streams {
		byStream[s.Stream] = s
	}
	if got := byStream[keys[0]].MissingInMongo; !slices.Equal(got, []string{deleted}) {
		t.Errorf("missing in MongoDB for %s: got %v, want [%s]", keys[0], got, deleted)
	}
	if got := byStream[k1].OnlyInMongo; !slices.Equal(got, []string{xdel}) {
		t.Errorf("only in MongoDB for %s: got %v, want [%s]", k1, got, xdel)
	}
	if got := byStream[k2].OnlyInMongo; !slices.Equal(got, trimmed) {
		t.Errorf("only in MongoDB for %s: got %v, want %v", k2, got, trimmed)
	}
	if got := v.Totals; got.MissingInMongo != 1 || got.OnlyInMongo != 21 || got.InRedis != 4*(n+1)-21 {
		t.Errorf("verify totals: got %+v", got)
	}
	var text bytes.Buffer
	if err := v.WriteText(&text, 5); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{deleted, xdel, "INCOMPLETE: 1 entries", "... 15 more"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("verify text lacks %q:\n%s", want, text.String())
		}
	}

	// A range replay restores exactly the deleted document.
	id, _ := replay.ParseID(deleted)
	rep, err := rp.Replay(ctx, replay.Filter{Tenant: "acme", Namespace: k0.Namespace, Topic: k0.Name, Kinds: []keyspace.Kind{keyspace.KindTopic},
		Range: replay.Range{From: id, To: id}})
	if err != nil {
		t.Fatal(err)
	}
	if got := rep.Totals; got.Read != 1 || got.Stored != 1 || len(rep.Streams) != 1 {
		t.Fatalf("range replay: got %+v over %d streams, want 1 read and stored in 1 stream", got, len(rep.Streams))
	}
	// Verify over a range: only what lies in it is judged.
	first, _ := replay.ParseID(trimmed[5])
	last, _ := replay.ParseID(trimmed[9])
	v, err = rp.Verify(ctx, replay.Filter{Topic: k0.Name, Namespace: k0.Namespace, Range: replay.Range{From: first, To: last}})
	if err != nil {
		t.Fatal(err)
	}
	if !v.Complete() || len(v.Streams) != 1 {
		t.Fatalf("range verify after repair: %+v", v.Totals)
	}
}

func TestReplayRateLimit(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, "acme")
	p := publisher.Publisher{RDB: r.rdb, Prefix: prefix, MaxLen: -1}
	var ms []publisher.Message
	for range 60 {
		ms = append(ms, publisher.Message{Tenant: "acme", Namespace: "app", Topic: "t", Payload: `{}`})
	}
	if _, err := p.PublishBatch(ctx, ms); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	rep, err := r.replayer(replay.Config{Rate: 40}).Replay(ctx, replay.Filter{Range: replay.All})
	if err != nil {
		t.Fatal(err)
	}
	// 60 entries at 40/s: the first 40 pass at once, the rest wait ~1s.
	// Only a lower bound is asserted (a loaded machine is slower, never faster).
	if el := time.Since(start); el < 900*time.Millisecond {
		t.Errorf("60 entries at --rate 40 took %s, want at least ~1s", el)
	}
	if rep.Totals.Stored != 60 {
		t.Errorf("stored %d, want 60", rep.Totals.Stored)
	}
}

func TestReplaySkipsUnconfiguredTenants(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, "acme")
	p := publisher.Publisher{RDB: r.rdb, Prefix: prefix, MaxLen: -1}
	for _, tenant := range []string{"acme", "intruder"} {
		if _, err := p.Publish(ctx, publisher.Message{Tenant: tenant, Namespace: "app", Topic: "t", Payload: `1`}); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := r.replayer(replay.Config{}).Replay(ctx, replay.Filter{Range: replay.All})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Totals.Stored != 1 || !slices.Equal(rep.Unconfigured, []string{"cw:intruder:app:topic:t"}) {
		t.Fatalf("got %+v, unconfigured %v", rep.Totals, rep.Unconfigured)
	}
	names, err := r.mc.ListDatabaseNames(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if strings.Contains(n, "intruder") {
			t.Errorf("database %s created for an unconfigured tenant", n)
		}
	}
}
