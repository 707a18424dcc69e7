package topics_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/discovery"
	"github.com/chronow/persister/internal/e2e"
	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/publisher"
	"github.com/chronow/persister/internal/sink"
	"github.com/chronow/persister/internal/topics"
)

const prefix = "cw:"

func TestShardCount(t *testing.T) {
	tests := []struct {
		in   string
		want int32
		ok   bool
	}{
		{`{"shardCount":4,"maxDeliveries":5}`, 4, true},
		{`{"shardCount":1}`, 1, true},
		{`{"maxDeliveries":5}`, 0, false},
		{`{"shardCount":0}`, 0, false},
		{`{"shardCount":-2}`, 0, false},
		{`{"shardCount":2.5}`, 0, false},
		{`{"shardCount":"4"}`, 4, true}, // a numeric string is taken as the number
		{`not json`, 0, false},
		{``, 0, false},
	}
	for _, tc := range tests {
		got, ok := topics.ShardCount(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ShardCount(%q): got %d %v, want %d %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// world publishes topic streams and subscription configs for two tenants
// and returns the expected shards per (tenant, namespace, topic).
func world(ctx context.Context, t *testing.T, rdb *redis.Client) map[[3]string]int32 {
	t.Helper()
	pub := &publisher.Publisher{RDB: rdb, Prefix: prefix}
	want := map[[3]string]int32{}
	topic := func(tenant, ns, name string, shards int32, subs map[string]string) {
		m := publisher.Message{Tenant: tenant, Namespace: ns, Topic: name, Payload: `{}`}
		if _, err := pub.Publish(ctx, m); err != nil {
			t.Fatal(err)
		}
		for sub, cfg := range subs {
			if err := rdb.HSet(ctx, keyspace.SubConfigKey(m.Key(prefix), sub), "config", cfg).Err(); err != nil {
				t.Fatal(err)
			}
		}
		want[[3]string{tenant, ns, name}] = shards
	}
	topic("acme", "default", "orders", 4, map[string]string{"s1": `{"shardCount":4}`, "s2": `{"shardCount":2,"maxDeliveries":3}`})
	topic("acme", "default", "plain", 1, nil)
	topic("acme", "default", "badcfg", 1, map[string]string{"s": `not json`})
	topic("acme", "default", "a", 1, nil)
	topic("acme", "default", "a:sub:b", 3, map[string]string{"x": `{"shardCount":3}`})
	topic("acme", "eu", "orders", 2, map[string]string{"s1": `{"shardCount":2}`})
	topic("globex", "default", "orders", 8, map[string]string{"s1": `{"shardCount":8}`})
	// A dead-letter stream is not a topic.
	if _, err := pub.PublishDeadLetter(ctx, publisher.DeadLetter{Tenant: "acme", Namespace: "default", Topic: "dlonly", OriginalMsgID: "1-0", Payload: "{}"}); err != nil {
		t.Fatal(err)
	}
	return want
}

func topicsDocs(ctx context.Context, t *testing.T, mc *mongo.Client, tenants ...string) map[[3]string]bson.M {
	t.Helper()
	out := map[[3]string]bson.M{}
	for _, tenant := range tenants {
		cur, err := mc.Database(e2e.DBName(tenant)).Collection("topics").Find(ctx, bson.D{})
		if err != nil {
			t.Fatal(err)
		}
		var docs []bson.M
		if err := cur.All(ctx, &docs); err != nil {
			t.Fatal(err)
		}
		for _, d := range docs {
			k := [3]string{fmt.Sprint(d["tenantId"]), fmt.Sprint(d["namespace"]), fmt.Sprint(d["topic"])}
			if _, dup := out[k]; dup || k[0] != tenant {
				t.Errorf("%s: duplicate or foreign topics document %v", tenant, d)
			}
			out[k] = d
		}
	}
	return out
}

func compare(t *testing.T, got map[[3]string]bson.M, want map[[3]string]int32) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("topics documents: got %d, want %d", len(got), len(want))
	}
	for k, n := range want {
		d, ok := got[k]
		if !ok {
			t.Errorf("%v: no topics document", k)
			continue
		}
		if d["shards"] != n {
			t.Errorf("%v shards: got %v (%T), want %d", k, d["shards"], d["shards"], n)
		}
		if _, ok := d["createdAt"].(primitive.DateTime); !ok {
			t.Errorf("%v createdAt: got %v", k, d["createdAt"])
		}
		if _, ok := d["_system"].(bson.M)["updatedAt"].(primitive.DateTime); !ok {
			t.Errorf("%v _system.updatedAt: got %v", k, d["_system"])
		}
	}
}

// TestDaemonTopics runs the daemon and finds one topics document per
// (tenant, namespace, topic) with its subscriptions' shard count.
func TestDaemonTopics(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rs, ms, rdb, mc := e2e.StartServers(t)
	want := world(ctx, t, rdb)
	run := e2e.Start(t, e2e.Env(t, rs.URL, ms.URI, []string{"acme", "globex"}, nil))
	e2e.Eventually(t, time.Minute, "topics documents", func() (bool, string) {
		got := topicsDocs(ctx, t, mc, "acme", "globex")
		return len(got) == len(want), fmt.Sprintf("%d of %d", len(got), len(want))
	})
	compare(t, topicsDocs(ctx, t, mc, "acme", "globex"), want)
	if err := run.Stop(); err != nil {
		t.Fatal(err)
	}
}

// TestSyncer checks the writes themselves: created once, rewritten only
// when the shard count changes, left alone by a restarted process.
func TestSyncer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, ms, rdb, mc := e2e.StartServers(t)
	want := world(ctx, t, rdb)

	ch, err := config.ReadChronos(e2e.WriteChronos(t, ms.URI, "acme", "globex"))
	if err != nil {
		t.Fatal(err)
	}
	w, err := sink.New(ctx, *ch, sink.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(ctx)
	sc := discovery.New(rdb, keyspace.Layout{Prefix: prefix, Tenants: map[string]bool{"acme": true, "globex": true}}, []keyspace.Kind{keyspace.KindTopic, keyspace.KindDLQ})
	res, err := sc.Scan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	newSyncer := func() *topics.Syncer {
		return topics.New(topics.Config{Layout: keyspace.Layout{Prefix: prefix}, Refresh: time.Nanosecond}, rdb, w, log)
	}
	s := newSyncer()
	if err := s.Sync(ctx, res.ByTenant); err != nil {
		t.Fatal(err)
	}
	first := topicsDocs(ctx, t, mc, "acme", "globex")
	compare(t, first, want)

	// Nothing changed: no write (updatedAt and createdAt stay).
	time.Sleep(5 * time.Millisecond)
	if err := s.Sync(ctx, res.ByTenant); err != nil {
		t.Fatal(err)
	}
	// A restarted process finds the documents as they should be.
	if err := newSyncer().Sync(ctx, res.ByTenant); err != nil {
		t.Fatal(err)
	}
	same := topicsDocs(ctx, t, mc, "acme", "globex")
	for k, d := range first {
		if fmt.Sprint(same[k]) != fmt.Sprint(d) {
			t.Errorf("%v rewritten without a change: %v → %v", k, d, same[k])
		}
	}

	// A subscription now asks for more shards; another one appears.
	orders := keyspace.Key{Prefix: prefix, Tenant: "acme", Namespace: "default", Kind: keyspace.KindTopic, Name: "orders"}
	if err := rdb.HSet(ctx, keyspace.SubConfigKey(orders.String(), "s3"), "config", `{"shardCount":16}`).Err(); err != nil {
		t.Fatal(err)
	}
	want[[3]string{"acme", "default", "orders"}] = 16
	if err := s.Sync(ctx, res.ByTenant); err != nil {
		t.Fatal(err)
	}
	changed := topicsDocs(ctx, t, mc, "acme", "globex")
	compare(t, changed, want)
	k := [3]string{"acme", "default", "orders"}
	if changed[k]["createdAt"] != first[k]["createdAt"] {
		t.Errorf("createdAt changed: %v → %v", first[k]["createdAt"], changed[k]["createdAt"])
	}
	before := first[k]["_system"].(bson.M)["updatedAt"].(primitive.DateTime)
	after := changed[k]["_system"].(bson.M)["updatedAt"].(primitive.DateTime)
	if after <= before {
		t.Errorf("_system.updatedAt not advanced: %v → %v", before.Time(), after.Time())
	}
	for other, d := range first {
		if other != k && fmt.Sprint(changed[other]) != fmt.Sprint(d) {
			t.Errorf("%v rewritten without a change", other)
		}
	}
}
