package sharedmem

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/testenv"
)

// TestLiveTenantsAndNamespaces: values set for 2 tenants × 2 namespaces
// arrive through notifications in their own databases, in the seed's shape.
func TestLiveTenantsAndNamespaces(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 30)
	r := e.start(e.config())
	e.waitLive()

	before := time.Now()
	for _, tenant := range testTenants {
		for _, ns := range testNamespaces {
			e.set(smKey(tenant, ns, "config:eu"), fmt.Sprintf(`{"tenant":%q,"ns":%q,"big":9007199254740993,"list":[1,"two",null,true,2.5]}`, tenant, ns), time.Hour)
		}
	}
	e.set(smKey("tenant-a", "app", "plain"), `not json {`, time.Hour)
	e.set(smKey("stranger", "app", "x"), `1`, time.Hour)

	for _, tenant := range testTenants {
		for _, ns := range testNamespaces {
			d := e.waitVal(tenant, ns, "config:eu", fmt.Sprintf("[{tenant %s} {ns %s} {big 9007199254740993} {list [1 two <nil> true 2.5]}]", tenant, ns))
			m := d.Val.(bson.D).Map()
			if m["big"] != int64(9007199254740993) {
				t.Errorf("%s/%s big = %v (%T), want int64 9007199254740993", tenant, ns, m["big"], m["big"])
			}
			if d.TenantID != tenant || d.Namespace != ns || d.Key != "config:eu" {
				t.Errorf("identity = %s/%s/%s", d.TenantID, d.Namespace, d.Key)
			}
			if d.System.CreatedAt.Before(before.Add(-time.Second)) || d.System.UpdatedAt.Before(d.System.CreatedAt) {
				t.Errorf("createdAt %v updatedAt %v", d.System.CreatedAt, d.System.UpdatedAt)
			}
			if d.System.Version <= 0 || d.System.Hash == "" {
				t.Errorf("version %d hash %q", d.System.Version, d.System.Hash)
			}
			if tenant == "tenant-a" {
				if d.System.RetentionDays != 30 || !d.System.ExpireAt.Equal(d.System.UpdatedAt.Add(30*24*time.Hour)) {
					t.Errorf("retention %d expireAt %v updatedAt %v", d.System.RetentionDays, d.System.ExpireAt, d.System.UpdatedAt)
				}
			} else if d.System.RetentionDays != 0 || !d.System.ExpireAt.IsZero() {
				t.Errorf("tenant-b has retention %d expireAt %v", d.System.RetentionDays, d.System.ExpireAt)
			}
		}
	}
	d := e.waitVal("tenant-a", "app", "plain", "not json {")
	if len(d.System.Defects) != 1 || d.System.Defects[0] != DefectNotJSON {
		t.Errorf("defects = %v, want [%s]", d.System.Defects, DefectNotJSON)
	}
	if n := e.count("tenant-a"); n != 3 {
		t.Errorf("tenant-a holds %d documents, want 3", n)
	}
	if n := e.count("tenant-b"); n != 2 {
		t.Errorf("tenant-b holds %d documents, want 2", n)
	}
	names, err := e.mc.ListDatabaseNames(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if n != dbName("tenant-a") && n != dbName("tenant-b") {
			t.Errorf("unexpected database %q", n)
		}
	}
	if got := e.metric("persister_sm_keys_ignored_total", "reason", IgnoredUnconfiguredTenant); got < 1 {
		t.Errorf("unconfigured tenant ignored %v times, want >= 1", got)
	}

	// An update keeps createdAt and moves updatedAt and version.
	first := e.find("tenant-b", "app", "config:eu")
	time.Sleep(20 * time.Millisecond)
	e.set(smKey("tenant-b", "app", "config:eu"), `{"v":2}`, time.Hour)
	d = e.waitVal("tenant-b", "app", "config:eu", "[{v 2}]")
	if !d.System.CreatedAt.Equal(first.System.CreatedAt) || !d.System.UpdatedAt.After(first.System.UpdatedAt) || d.System.Version <= first.System.Version {
		t.Errorf("after update: created %v->%v updated %v->%v version %d->%d", first.System.CreatedAt, d.System.CreatedAt,
			first.System.UpdatedAt, d.System.UpdatedAt, first.System.Version, d.System.Version)
	}
	if got := e.metric("persister_sm_found_by_reconcile_total"); got != 0 {
		t.Errorf("found by reconcile = %v, want 0 (every value was notified)", got)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
}

// TestCoalescing: a key set 1000 times within a second is written far
// fewer times and ends with the last value.
func TestCoalescing(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 0)
	cfg := e.config()
	cfg.FlushInterval = time.Second
	e.start(cfg)
	e.waitLive()

	key := smKey("tenant-a", "app", "counter")
	start := time.Now()
	for burst := range 10 {
		pipe := e.rdb.Pipeline()
		for i := range 100 {
			pipe.Set(ctx, key, fmt.Sprintf(`{"n":%d}`, burst*100+i), time.Hour)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(90 * time.Millisecond)
	}
	took := time.Since(start)
	e.waitVal("tenant-a", "app", "counter", "[{n 999}]")
	// Let any flush still under way finish before counting.
	time.Sleep(2 * cfg.FlushInterval)
	written := e.metric("persister_sm_values_written_total", "tenant", "tenant-a", "op", "value")
	notified := e.metric("persister_sm_notifications_total", "event", EventWrite)
	superseded := e.metric("persister_sm_values_skipped_total", "tenant", "tenant-a", "reason", SkipSuperseded)
	t.Logf("1000 SETs in %s: %v notifications, %v writes, %v observations superseded", took.Round(time.Millisecond), notified, written, superseded)
	if written < 1 || written > 20 {
		t.Errorf("written %v times, want between 1 and 20", written)
	}
	if d := e.find("tenant-a", "app", "counter"); fmt.Sprint(d.Val) != "[{n 999}]" {
		t.Errorf("final val %v", d.Val)
	}
}

// TestExpiryKeepsWarmCopy: a key that expires keeps its document, also in
// tombstone mode and with expiry events published.
func TestExpiryKeepsWarmCopy(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 0)
	// Publish everything, expiry included: the carrier must ignore expiry.
	if err := e.rdb.ConfigSet(ctx, notifyParam, "KEA").Err(); err != nil {
		t.Fatal(err)
	}
	cfg := e.config()
	cfg.Tombstone = true
	cfg.ReconcileInterval = time.Second
	e.start(cfg)
	e.waitLive()

	key := smKey("tenant-a", "app", "short")
	if err := e.rdb.Set(ctx, key, `{"v":"warm"}`, 700*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	e.waitVal("tenant-a", "app", "short", "[{v warm}]")
	eventually(t, 10*time.Second, "key expired", func() (bool, string) {
		n, err := e.rdb.Exists(ctx, key).Result()
		return err == nil && n == 0, fmt.Sprintf("exists=%d err=%v", n, err)
	})
	eventually(t, 10*time.Second, "expiry notification", func() (bool, string) {
		v := e.metric("persister_sm_notifications_total", "event", EventIgnored)
		return v >= 1, fmt.Sprintf("ignored notifications %v", v)
	})
	// Two reconcile passes and several flushes later, nothing changed.
	time.Sleep(3 * time.Second)
	d := e.find("tenant-a", "app", "short")
	if d == nil || fmt.Sprint(d.Val) != "[{v warm}]" || d.System.Tombstone || !d.System.DeletedAt.IsZero() {
		t.Fatalf("after expiry: %+v, want the warm copy unchanged", d)
	}
	if got := e.metric("persister_sm_values_written_total", "tenant", "tenant-a", "op", "tombstone"); got != 0 {
		t.Errorf("tombstones written: %v", got)
	}
}

// TestRefusedValueRescued: a value the server refuses (FerretDB refuses an
// array nested directly in an array) replaces the warm copy with a rescue:
// val null, the exact text, the server's error, counted; it never leaves
// an older value standing silently. A later good value replaces the rescue.
func TestRefusedValueRescued(t *testing.T) {
	e := newEnv(t, 0)
	e.start(e.config())
	e.waitLive()

	key := smKey("tenant-a", "app", "nested")
	e.set(key, `{"ok":true}`, time.Hour)
	e.waitVal("tenant-a", "app", "nested", "[{ok true}]")
	const refused = `[1,[2,[3]]]`
	e.set(key, refused, time.Hour)
	var d *smDoc
	eventually(t, 60*time.Second, "rescue stored", func() (bool, string) {
		d = e.find("tenant-a", "app", "nested")
		return d != nil && d.Val == nil && d.System.Hash == Hash([]byte(refused)), fmt.Sprintf("%+v", d)
	})
	if fmt.Sprint(d.System.Defects) != "["+DefectRefused+"]" || d.System.Raw["val"] != refused || d.System.Error == "" {
		t.Errorf("rescue: defects %v raw %v error %q", d.System.Defects, d.System.Raw, d.System.Error)
	}
	if got := e.metric("persister_sm_values_written_total", "tenant", "tenant-a", "op", WrittenRescued); got != 1 {
		t.Errorf("persister_sm_values_written_total{op=rescued} = %v, want 1", got)
	}
	e.set(key, `"fine again"`, time.Hour)
	d = e.waitVal("tenant-a", "app", "nested", "fine again")
	if len(d.System.Defects) != 0 || d.System.Raw != nil || d.System.Error != "" {
		t.Errorf("after a good value: defects %v raw %v error %q, want none", d.System.Defects, d.System.Raw, d.System.Error)
	}
}

// TestDeleteModes: a delete changes nothing in keep mode and sets a
// tombstone in tombstone mode; a later set clears it.
func TestDeleteModes(t *testing.T) {
	for _, tombstone := range []bool{false, true} {
		t.Run(fmt.Sprintf("tombstone=%v", tombstone), func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, 0)
			cfg := e.config()
			cfg.Tombstone = tombstone
			e.start(cfg)
			e.waitLive()

			e.set(smKey("tenant-a", "app", "del"), `"one"`, time.Hour)
			e.set(smKey("tenant-b", "default", "unlink"), `"two"`, time.Hour)
			e.waitVal("tenant-a", "app", "del", "one")
			e.waitVal("tenant-b", "default", "unlink", "two")
			if err := e.rdb.Del(ctx, smKey("tenant-a", "app", "del")).Err(); err != nil {
				t.Fatal(err)
			}
			if err := e.rdb.Unlink(ctx, smKey("tenant-b", "default", "unlink")).Err(); err != nil {
				t.Fatal(err)
			}
			if !tombstone {
				// Deletes are not even subscribed to (no 'g' flag): wait for a
				// marker key set after them, then a few flushes.
				e.set(smKey("tenant-a", "app", "marker"), `1`, time.Hour)
				e.waitVal("tenant-a", "app", "marker", 1)
				time.Sleep(5 * cfg.FlushInterval)
				for _, k := range [][3]string{{"tenant-a", "app", "del"}, {"tenant-b", "default", "unlink"}} {
					d := e.find(k[0], k[1], k[2])
					if d == nil || d.System.Tombstone || !d.System.DeletedAt.IsZero() {
						t.Errorf("keep mode: %v after delete: %+v", k, d)
					}
				}
				return
			}
			for _, k := range [][3]string{{"tenant-a", "app", "del"}, {"tenant-b", "default", "unlink"}} {
				var d *smDoc
				eventually(t, 30*time.Second, fmt.Sprintf("%v tombstoned", k), func() (bool, string) {
					d = e.find(k[0], k[1], k[2])
					return d != nil && d.System.Tombstone, fmt.Sprintf("%+v", d)
				})
				if d.System.DeletedAt.IsZero() || d.Val == nil {
					t.Errorf("%v tombstone: deletedAt %v val %v, want both set (val kept)", k, d.System.DeletedAt, d.Val)
				}
			}
			// Set again: the tombstone goes.
			e.set(smKey("tenant-a", "app", "del"), `"three"`, time.Hour)
			d := e.waitVal("tenant-a", "app", "del", "three")
			if d.System.Tombstone || !d.System.DeletedAt.IsZero() {
				t.Errorf("after a new set: tombstone %v deletedAt %v", d.System.Tombstone, d.System.DeletedAt)
			}
		})
	}
}

// TestReconcileAfterRestart: values set or changed while the carrier was
// down arrive through the first reconcile pass after it starts again.
func TestReconcileAfterRestart(t *testing.T) {
	e := newEnv(t, 0)
	cfg := e.config()
	r := e.start(cfg)
	e.waitLive()
	e.set(smKey("tenant-a", "app", "kept"), `"same"`, time.Hour)
	e.set(smKey("tenant-a", "app", "changed"), `"before"`, time.Hour)
	e.waitVal("tenant-a", "app", "kept", "same")
	e.waitVal("tenant-a", "app", "changed", "before")
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	foundBefore := e.metric("persister_sm_found_by_reconcile_total")

	// While down.
	e.set(smKey("tenant-a", "app", "changed"), `"after"`, time.Hour)
	for _, tenant := range testTenants {
		for _, ns := range testNamespaces {
			e.set(smKey(tenant, ns, "new"), fmt.Sprintf(`{"t":%q}`, tenant), time.Hour)
		}
	}
	time.Sleep(3 * cfg.FlushInterval)
	if d := e.find("tenant-a", "app", "changed"); fmt.Sprint(d.Val) != "before" {
		t.Fatalf("stored %v while the carrier was down", d.Val)
	}

	e.start(cfg)
	e.waitVal("tenant-a", "app", "changed", "after")
	for _, tenant := range testTenants {
		for _, ns := range testNamespaces {
			e.waitVal(tenant, ns, "new", fmt.Sprintf("[{t %s}]", tenant))
		}
	}
	found := e.metric("persister_sm_found_by_reconcile_total") - foundBefore
	if found != 5 {
		t.Errorf("found by reconcile: %v, want 5 (1 changed + 4 new)", found)
	}
}

// TestNotificationsDisabled: with notifications off on the server, values
// still arrive through reconcile — whether the carrier is told so (notify
// off) or finds CONFIG refused.
func TestNotificationsDisabled(t *testing.T) {
	cases := []struct {
		name   string
		notify bool
		opts   []testenv.RedisOption
	}{
		{"notify off", false, nil},
		{"config command refused", true, []testenv.RedisOption{testenv.WithRedisArgs("--rename-command", "CONFIG", "")}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 0, tc.opts...)
			if tc.notify {
				if err := e.rdb.ConfigGet(context.Background(), notifyParam).Err(); err == nil {
					t.Fatal("CONFIG GET works; want it refused")
				}
			} else if err := e.rdb.ConfigSet(context.Background(), notifyParam, "").Err(); err != nil {
				t.Fatal(err)
			}
			cfg := e.config()
			cfg.Notify = tc.notify
			cfg.ReconcileInterval = 500 * time.Millisecond
			e.start(cfg)
			for _, tenant := range testTenants {
				for _, ns := range testNamespaces {
					e.set(smKey(tenant, ns, "k"), `"v1"`, time.Hour)
				}
			}
			for _, tenant := range testTenants {
				for _, ns := range testNamespaces {
					e.waitVal(tenant, ns, "k", "v1")
				}
			}
			// A second change also arrives; only the last of quick
			// overwrites between two passes is kept (documented).
			e.set(smKey("tenant-a", "app", "k"), `"v2"`, time.Hour)
			e.set(smKey("tenant-a", "app", "k"), `"v3"`, time.Hour)
			e.waitVal("tenant-a", "app", "k", "v3")
			if got := e.metric("persister_sm_live_capture"); got != 0 {
				t.Errorf("persister_sm_live_capture = %v, want 0", got)
			}
			if got := e.metric("persister_sm_notifications_total"); got != 0 {
				t.Errorf("notifications received: %v, want 0", got)
			}
			if got := e.metric("persister_sm_found_by_reconcile_total"); got < 5 || got > 6 {
				t.Errorf("found by reconcile: %v, want 5 (or 6 if a pass fell between v2 and v3)", got)
			}
		})
	}
}

// TestOlderNeverOverwritesNewer drives the writer directly: a stale
// observation, from this writer or from a second one (another replica with
// an empty cache), never replaces a newer stored value.
func TestOlderNeverOverwritesNewer(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 0)
	cfg := e.config()
	key := keyspace.Key{Prefix: "cw:", Tenant: "tenant-a", Namespace: "app", Kind: keyspace.KindSharedMemory, Name: "race"}
	obs := func(val string, version int64) Observation {
		return Observation{Key: key, Version: version, Value: []byte(val), Hash: Hash([]byte(val)), Source: SourceLive}
	}
	newW := func() *writer {
		return newWriter(&store{dbs: e.sink, writeTimeout: cfg.WriteTimeout}, newHashCache(100), e.m, e.log, cfg)
	}
	w1, w2 := newW(), newW()

	w1.add([]Observation{obs(`"v2"`, 200)})
	w1.flush(ctx)
	if d := e.find("tenant-a", "app", "race"); d == nil || d.Val != "v2" || d.System.Version != 200 {
		t.Fatalf("after v2: %+v", d)
	}
	// Same writer, older version: skipped by the cache before any write.
	w1.add([]Observation{obs(`"v1"`, 100)})
	w1.flush(ctx)
	// Second writer, empty cache: the conditional upsert refuses it.
	w2.add([]Observation{obs(`"v1"`, 100)})
	w2.flush(ctx)
	if len(w1.pending)+len(w2.pending) != 0 {
		t.Errorf("pending after flush: %d, %d", len(w1.pending), len(w2.pending))
	}
	if d := e.find("tenant-a", "app", "race"); d.Val != "v2" || d.System.Version != 200 {
		t.Fatalf("after stale v1: val %v version %d, want v2 at 200", d.Val, d.System.Version)
	}
	if got := e.metric("persister_sm_values_skipped_total", "tenant", "tenant-a", "reason", SkipStale); got != 2 {
		t.Errorf("stale skips: %v, want 2", got)
	}
	// Within one flush window, the newest observation wins whatever the
	// arrival order.
	w2.add([]Observation{obs(`"v4"`, 400), obs(`"v3"`, 300)})
	w2.flush(ctx)
	if d := e.find("tenant-a", "app", "race"); d.Val != "v4" || d.System.Version != 400 {
		t.Fatalf("after v4,v3: val %v version %d, want v4 at 400", d.Val, d.System.Version)
	}
	// A document another writer made (no _system.version) is taken over.
	coll := e.mc.Database(dbName("tenant-a")).Collection(config.CollSharedMemory)
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "key", Value: "foreign"}, {Key: "namespace", Value: "app"}, {Key: "tenantId", Value: "tenant-a"}, {Key: "val", Value: 0}}); err != nil {
		t.Fatal(err)
	}
	fk := key
	fk.Name = "foreign"
	w2.add([]Observation{{Key: fk, Version: 500, Value: []byte(`1`), Hash: Hash([]byte(`1`))}})
	w2.flush(ctx)
	if d := e.find("tenant-a", "app", "foreign"); fmt.Sprint(d.Val) != "1" || d.System.Version != 500 {
		t.Errorf("foreign document: val %v version %d, want 1 at 500", d.Val, d.System.Version)
	}
	if n := e.count("tenant-a"); n != 2 {
		t.Errorf("%d documents, want 2", n)
	}
}

// envInt returns the integer in the environment variable name, or def when
// it is not set.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestReconcilePassTiming measures reconcile passes over N keys
// (SM_RECONCILE_KEYS, default 300; FerretDB makes each conditional upsert a
// scan of the collection, so the default stays small): the first pass after a start (nothing
// known: every stored hash read, every value read and written), a pass with
// the cache warm (hashes compared inside Redis, nothing read), and a
// verifying pass (stored hashes read from the database again).
func TestReconcilePassTiming(t *testing.T) {
	ctx := context.Background()
	n := envInt(t, "SM_RECONCILE_KEYS", 300)
	e := newEnv(t, 0)
	pipe := e.rdb.Pipeline()
	for i := range n {
		tenant := testTenants[i%2]
		ns := testNamespaces[(i/2)%2]
		pipe.Set(ctx, smKey(tenant, ns, fmt.Sprintf("key-%d", i)), fmt.Sprintf(`{"i":%d,"pad":"%064d"}`, i, i), time.Hour)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	cfg := e.config()
	cfg.Notify = false
	start := time.Now()
	r := e.start(cfg)
	eventually(t, 10*time.Minute, "every key stored", func() (bool, string) {
		got := e.count("tenant-a") + e.count("tenant-b")
		return got == int64(n), fmt.Sprintf("%d of %d stored", got, n)
	})
	stored := time.Since(start)
	var first float64
	eventually(t, 10*time.Second, "first pass recorded", func() (bool, string) {
		first = e.metric("persister_sm_reconcile_last_success_timestamp_seconds")
		return first > 0, "no pass yet"
	})
	firstPass := time.Unix(0, int64(first*1e9)).Sub(start)

	passStart := time.Now()
	res, err := r.c.reconcileOnce(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	warm := time.Since(passStart)
	if res.keys != int64(n) || res.read != 0 || res.same != int64(n) {
		t.Errorf("warm pass: %+v, want %d keys all unchanged", res, n)
	}
	passStart = time.Now()
	res, err = r.c.reconcileOnce(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	verify := time.Since(passStart)
	if res.read != 0 {
		t.Errorf("verifying pass read %d values, want 0", res.read)
	}
	t.Logf("%d keys: first pass (cold) ~%s, all stored after %s (%.0f upserts/s); warm pass %s; verifying pass %s",
		n, firstPass.Round(time.Millisecond), stored.Round(time.Millisecond), float64(n)/stored.Seconds(),
		warm.Round(time.Millisecond), verify.Round(time.Millisecond))
	if got := e.metric("persister_sm_found_by_reconcile_total"); got != float64(n) {
		t.Errorf("found by reconcile %v, want %d", got, n)
	}
}

// TestReconcilePassScale measures passes over N keys (SM_SCALE_KEYS,
// default 3000) whose values are already stored (documents inserted
// directly, fast even on FerretDB): the first pass after a start reads
// every stored hash from the database; the warm pass compares hashes inside
// Redis only; the verifying pass reads the database again. Nothing may be
// written.
func TestReconcilePassScale(t *testing.T) {
	ctx := context.Background()
	n := envInt(t, "SM_SCALE_KEYS", 3000)
	e := newEnv(t, 0)
	pipe := e.rdb.Pipeline()
	docs := map[string][]any{}
	for i := range n {
		tenant := testTenants[i%2]
		ns := testNamespaces[(i/2)%2]
		name := fmt.Sprintf("key-%d", i)
		val := fmt.Sprintf(`{"i":%d,"pad":"%064d"}`, i, i)
		pipe.Set(ctx, smKey(tenant, ns, name), val, time.Hour)
		docs[tenant] = append(docs[tenant], bson.D{{Key: "key", Value: name}, {Key: "namespace", Value: ns}, {Key: "tenantId", Value: tenant},
			{Key: "_system", Value: bson.D{{Key: "hash", Value: Hash([]byte(val))}, {Key: "version", Value: int64(1)}}}})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	for tenant, ds := range docs {
		if err := e.sink.EnsureSchema(ctx, tenant); err != nil {
			t.Fatal(err)
		}
		if _, err := e.mc.Database(dbName(tenant)).Collection(config.CollSharedMemory).InsertMany(ctx, ds); err != nil {
			t.Fatal(err)
		}
	}
	cfg := e.config()
	cfg.Notify = false
	r := e.start(cfg)
	eventually(t, 10*time.Minute, "first pass done", func() (bool, string) {
		v := e.metric("persister_sm_reconcile_last_success_timestamp_seconds")
		return v > 0, "no pass yet"
	})
	first := e.histogramSum("persister_sm_reconcile_duration_seconds")

	passStart := time.Now()
	res, err := r.c.reconcileOnce(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	warm := time.Since(passStart)
	if res.keys != int64(n) || res.same != int64(n) {
		t.Errorf("warm pass: %+v, want %d keys all unchanged", res, n)
	}
	passStart = time.Now()
	if res, err = r.c.reconcileOnce(ctx, true); err != nil {
		t.Fatal(err)
	}
	verify := time.Since(passStart)
	if res.same != int64(n) {
		t.Errorf("verifying pass: %+v, want %d keys all unchanged", res, n)
	}
	time.Sleep(3 * cfg.FlushInterval)
	if got := e.metric("persister_sm_values_written_total"); got != 0 {
		t.Errorf("%v values written, want 0", got)
	}
	t.Logf("%d stored keys: first pass (stored hashes read from the database) %.3fs; warm pass %s; verifying pass %s",
		n, first, warm.Round(time.Millisecond), verify.Round(time.Millisecond))
}
