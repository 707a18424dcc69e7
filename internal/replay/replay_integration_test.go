package replay_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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
	"github.com/chronow/persister/internal/rescue"
	"github.com/chronow/persister/internal/sink"
	"github.com/chronow/persister/internal/testenv"
	"github.com/chronow/persister/internal/topics"
	"github.com/chronow/persister/metrics"
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

func newRig(t testing.TB, tenants ...string) *rig {
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

// replayer is wired like the replay command: the daemon's decoders,
// rescuer and topics syncer.
func (r *rig) replayer(cfg replay.Config) *replay.Replayer {
	cfg.Layout = keyspace.Layout{Prefix: prefix, Form: keyspace.FormAuto}
	cfg.Tenants = r.tenants
	cfg.Decoders = entry.Decoders()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	m := metrics.New(prometheus.NewRegistry(), "test")
	cfg.Rescuer = rescue.NewRescuer(rescue.Config{Layout: keyspace.Layout{Prefix: prefix}, WriteTimeout: 30 * time.Second}, r.w, nil, m, log)
	cfg.Topics = topics.New(topics.Config{Layout: keyspace.Layout{Prefix: prefix}}, r.rdb, r.w, log)
	return replay.New(r.rdb, r.w, cfg)
}

func (r *rig) db(tenant string) *mongo.Database { return r.mc.Database(e2e.DBName(tenant)) }

// published says what publish wrote for one tenant.
type published struct {
	topicKeys, dlqKeys    []string
	messages, deadLetters int
}

// publish writes n entries to each of the tenant's topic streams (2
// namespaces x 2 topics, one topic name holding ':'), with payloads of every
// shape, plus a malformed entry per stream as another producer might write
// it; and n/5 dead letters (plus a malformed one) to each dead-letter stream.
// With big, one topic entry is over the BSON limit.
func publish(t *testing.T, ctx context.Context, rdb *redis.Client, tenant string, n int, big bool) published {
	t.Helper()
	p := publisher.Publisher{RDB: rdb, Prefix: prefix, MaxLen: -1}
	payloads := []string{
		`{"order":1,"big":9007199254740993,"f":1.5,"s":"caf\u00e9 \ud83d\ude00","nested":{"a":[1,2,{"b":null}]}}`,
		`[1,"two",false]`,
		`"just a string"`,
		`{"$set":{"a.b":1}}`,
		`12345678901234567890`,
	}
	var out published
	for _, ns := range []string{"app", "billing"} {
		for _, topic := range []string{"orders", "audit:eu"} {
			var ms []publisher.Message
			for i := range n {
				ms = append(ms, publisher.Message{
					Tenant: tenant, Namespace: ns, Topic: topic,
					Payload: payloads[i%len(payloads)], Headers: map[string]string{"i": fmt.Sprint(i), "trace": "x"},
				})
			}
			ids, err := p.PublishBatch(ctx, ms)
			if err != nil {
				t.Fatal(err)
			}
			key := ms[0].Key(prefix)
			out.topicKeys = append(out.topicKeys, key)
			// Malformed: not JSON, wrong size and hash, missing headers.
			if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: []any{
				"payload", "{not json", "hash", "00", "size", "x", "publishedAt", "yesterday",
			}}).Err(); err != nil {
				t.Fatal(err)
			}
			out.messages += n + 1
			for i := range n / 5 {
				if _, err := p.PublishDeadLetter(ctx, publisher.DeadLetter{
					Tenant: tenant, Namespace: ns, Topic: topic, OriginalMsgID: ids[i], Payload: payloads[i%len(payloads)],
					Headers: map[string]string{"i": fmt.Sprint(i)}, Reason: "max deliveries exceeded", Deliveries: 5,
				}); err != nil {
					t.Fatal(err)
				}
			}
			dk := publisher.DeadLetter{Tenant: tenant, Namespace: ns, Topic: topic}.Key(prefix)
			out.dlqKeys = append(out.dlqKeys, dk)
			if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: dk, Values: []any{"payload", "[", "deliveries", "many"}}).Err(); err != nil {
				t.Fatal(err)
			}
			out.deadLetters += n/5 + 1
		}
	}
	if big {
		m := publisher.Message{Tenant: tenant, Namespace: "app", Topic: "orders", Payload: `"` + strings.Repeat("x", 16<<20) + `"`}
		if _, err := p.Publish(ctx, m); err != nil {
			t.Fatal(err)
		}
		out.messages++
	}
	return out
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
	acme := publish(t, ctx, r.rdb, "acme", n, true)
	globex := publish(t, ctx, r.rdb, "globex", n, false)
	all := acme.messages + acme.deadLetters

	// The daemon stores everything; that is the reference.
	d := e2e.Start(t, r.env)
	e2e.Eventually(t, 3*time.Minute, "the daemon to store every entry", func() (bool, string) {
		var state []string
		ok := true
		for _, c := range []struct {
			tenant, coll string
			want         int
		}{
			{"acme", config.CollMessages, acme.messages}, {"acme", config.CollDeadLetters, acme.deadLetters},
			{"globex", config.CollMessages, globex.messages}, {"globex", config.CollDeadLetters, globex.deadLetters},
			{"acme", config.CollTopics, 4},
		} {
			got, _ := r.db(c.tenant).Collection(c.coll).CountDocuments(ctx, bson.D{})
			ok = ok && int(got) == c.want
			state = append(state, fmt.Sprintf("%s.%s %d/%d", c.tenant, c.coll, got, c.want))
		}
		return ok, strings.Join(state, ", ")
	})
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	colls := []string{config.CollMessages, config.CollDeadLetters}
	want := map[string]map[string][]byte{}
	for _, c := range colls {
		want[c] = docs(t, ctx, r.db("acme").Collection(c))
	}
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
	if got := rep.Totals; got.Read != all || got.Stored != all-1 || got.Rescued != 1 || got.Present != 0 || got.Refused != 0 {
		t.Fatalf("first replay totals: got %+v, want read %d = stored %d + rescued 1 (the oversized entry)", got, all, all-1)
	}
	var streams []string
	for _, s := range rep.Streams {
		streams = append(streams, s.Stream)
	}
	wantStreams := append(append([]string(nil), acme.topicKeys...), acme.dlqKeys...)
	slices.Sort(wantStreams)
	slices.Sort(streams)
	if !slices.Equal(streams, wantStreams) {
		t.Errorf("streams replayed: got %v, want %v", streams, wantStreams)
	}
	if rep.TopicsSynced != 4 {
		t.Errorf("topics synced: got %d, want 4", rep.TopicsSynced)
	}
	if !strings.Contains(progress.String(), "replay:") {
		t.Errorf("no progress printed: %q", progress.String())
	}

	// Every entry stored exactly once, field for field as the daemon wrote it.
	for _, c := range colls {
		got := docs(t, ctx, r.db("acme").Collection(c))
		if len(got) != len(want[c]) {
			t.Fatalf("after replay: %d documents in %s, want %d", len(got), c, len(want[c]))
		}
		for id, w := range want[c] {
			g, ok := got[id]
			switch {
			case !ok:
				t.Errorf("%s document %s missing after replay", c, id)
			case !bytes.Equal(g, w):
				t.Errorf("%s document %s differs:\n got  %s\n want %s", c, id, clip(bson.Raw(g).String()), clip(bson.Raw(w).String()))
			}
		}
	}
	if got := count(t, ctx, r.db("acme").Collection(config.CollTopics)); got != 4 {
		t.Errorf("topics documents after replay: got %d, want 4", got)
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
	if got := rep2.Totals; got.Read != all || got.Present != all || got.Stored != 0 || got.Rescued != 0 {
		t.Fatalf("second replay totals: got %+v, want all %d present", got, all)
	}
	if c := count(t, ctx, r.db("acme").Collection(config.CollMessages)); c != acme.messages {
		t.Fatalf("after second replay: %d documents, want %d", c, acme.messages)
	}
	var text bytes.Buffer
	if err := rep2.WriteText(&text, 5); err != nil {
		t.Fatal(err)
	}
	t.Logf("second replay report:\n%s", text.String())

	// And verify agrees.
	v, err := rp.Verify(ctx, replay.Filter{Tenant: "acme", Range: replay.All})
	if err != nil {
		t.Fatal(err)
	}
	if !v.Complete() || v.Totals.Matched != all || v.Totals.OnlyInMongo != 0 {
		t.Errorf("verify after replay: %+v", v.Totals)
	}
}

func clip(s string) string {
	if len(s) > 600 {
		return s[:600] + "..."
	}
	return s
}

func TestVerifyFindsDeletedDocumentAndTrimmedEntry(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, "acme")
	const n = 120
	pub := publish(t, ctx, r.rdb, "acme", n, false)
	keys := pub.topicKeys
	slices.Sort(keys)
	all := pub.messages + pub.deadLetters
	rp := r.replayer(replay.Config{PageSize: 50})
	if _, err := rp.Replay(ctx, replay.Filter{Range: replay.All}); err != nil {
		t.Fatal(err)
	}
	v, err := rp.Verify(ctx, replay.Filter{Range: replay.All})
	if err != nil {
		t.Fatal(err)
	}
	if !v.Complete() || v.Totals.Matched != all || v.Totals.OnlyInMongo != 0 || len(v.Streams) != 8 {
		t.Fatalf("verify after replay: got %+v over %d streams, want all %d matched in 8 streams", v.Totals, len(v.Streams), all)
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
	// On a dead-letter stream too: a deleted document, a deleted entry.
	dk := pub.dlqKeys[0]
	dkey, _ := keyspace.Parse(prefix, dk)
	dl := entries(dk)
	if _, err := r.db("acme").Collection(config.CollDeadLetters).DeleteOne(ctx, bson.D{{Key: "_id", Value: dkey.Namespace + ":" + dkey.Name + ":" + dl[3].ID}}); err != nil {
		t.Fatal(err)
	}
	if err := r.rdb.XDel(ctx, dk, dl[7].ID).Err(); err != nil {
		t.Fatal(err)
	}

	v, err = rp.Verify(ctx, replay.Filter{Range: replay.All})
	if err != nil {
		t.Fatal(err)
	}
	byStream = map[string]replay.StreamVerify{}
	for _, s := range v.Streams {
		byStream[s.Stream] = s
	}
	if got := byStream[dk]; !slices.Equal(got.MissingInMongo, []string{dl[3].ID}) || !slices.Equal(got.OnlyInMongo, []string{dl[7].ID}) {
		t.Errorf("dead-letter stream %s: missing %v only %v, want [%s] [%s]", dk, got.MissingInMongo, got.OnlyInMongo, dl[3].ID, dl[7].ID)
	}
	if got := v.Totals; got.MissingInMongo != 2 || got.OnlyInMongo != 22 || got.InRedis != all-22 {
		t.Errorf("verify totals: got %+v", got)
	}
	var text bytes.Buffer
	if err := v.WriteText(&text, 5); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{deleted, xdel, "INCOMPLETE: 2 entries", "... 15 more"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("verify text lacks %q:\n%s", want, text.String())
		}
	}

	// A range replay restores exactly the deleted document.
	id, err := replay.ParseID(deleted)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := rp.Replay(ctx, replay.Filter{Tenant: "acme", Namespace: k0.Namespace, Topic: k0.Name, Kinds: []keyspace.Kind{keyspace.KindTopic},
		Range: replay.Range{From: id, To: id}})
	if err != nil {
		t.Fatal(err)
	}
	if got := rep.Totals; got.Read != 1 || got.Stored != 1 || len(rep.Streams) != 1 {
		t.Fatalf("range replay: got %+v over %d streams, want 1 read and stored in 1 stream", got, len(rep.Streams))
	}
	// Verify over a range: only what lies in it is judged.
	k0e := entries(keys[0])
	first, _ := replay.ParseID(k0e[30].ID)
	last, _ := replay.ParseID(k0e[40].ID)
	v, err = rp.Verify(ctx, replay.Filter{Topic: k0.Name, Namespace: k0.Namespace, Kinds: []keyspace.Kind{keyspace.KindTopic},
		Range: replay.Range{From: first, To: last}})
	if err != nil {
		t.Fatal(err)
	}
	if !v.Complete() || len(v.Streams) != 1 || v.Totals.InRedis != 11 || v.Totals.Matched != 11 || v.Totals.OnlyInMongo != 0 {
		t.Fatalf("range verify after repair: %+v over %d streams, want 11 matched in 1", v.Totals, len(v.Streams))
	}
	k2key, _ := keyspace.Parse(prefix, k2)
	first, _ = replay.ParseID(trimmed[5])
	last, _ = replay.ParseID(trimmed[9])
	v, err = rp.Verify(ctx, replay.Filter{Topic: k2key.Name, Namespace: k2key.Namespace, Kinds: []keyspace.Kind{keyspace.KindTopic},
		Range: replay.Range{From: first, To: last}})
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Streams) != 1 || !slices.Equal(v.Streams[0].OnlyInMongo, trimmed[5:10]) || v.Totals.InRedis != 0 {
		t.Fatalf("range verify of trimmed ids: %+v, want only %v in MongoDB", v.Streams, trimmed[5:10])
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

// Replay beside a running daemon, while entries are published: both insert
// the same documents; every entry ends up stored exactly once.
func TestReplayBesideRunningDaemon(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, "acme")
	e2e.Start(t, r.env)
	p := publisher.Publisher{RDB: r.rdb, Prefix: prefix, MaxLen: -1}
	var ledger e2e.Ledger
	publishSome := func(n int) {
		var ms []publisher.Message
		for i := range n {
			ms = append(ms, publisher.Message{Tenant: "acme", Namespace: "app", Topic: []string{"a", "b"}[i%2], Payload: fmt.Sprintf(`{"i":%d}`, i)})
		}
		if err := ledger.Publish(ctx, &p, ms); err != nil {
			t.Error(err)
			return
		}
	}
	publishSome(500)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 10 {
			publishSome(100)
			time.Sleep(50 * time.Millisecond)
		}
	}()
	rp := r.replayer(replay.Config{PageSize: 50})
	for range 2 {
		rep, err := rp.Replay(ctx, replay.Filter{Range: replay.All})
		if err != nil {
			t.Fatal(err)
		}
		if got := rep.Totals; got.Stored+got.Present != got.Read || got.Refused != 0 || got.Read < 500 {
			t.Fatalf("replay beside the daemon: %+v", got)
		}
	}
	<-done
	e2e.Eventually(t, 2*time.Minute, "every published entry stored", func() (bool, string) {
		n := e2e.CountStored(ctx, t, r.mc, "acme")
		return n >= int64(ledger.Len()), fmt.Sprintf("%d of %d", n, ledger.Len())
	})
	if rep := e2e.Verify(ctx, t, r.mc, &ledger, []string{"acme"}); !rep.OK() {
		t.Fatalf("after replay beside the daemon: %s", rep)
	}
}
