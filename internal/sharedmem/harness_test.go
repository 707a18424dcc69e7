package sharedmem

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/promtext"
	"github.com/chronow/persister/internal/sink"
	"github.com/chronow/persister/internal/testenv"
	"github.com/chronow/persister/metrics"
)

var (
	testTenants    = []string{"tenant-a", "tenant-b"}
	testNamespaces = []string{"app", "default"}
)

func dbName(tenant string) string { return "sm_" + tenant }

// chronosFor routes testTenants to databases on uri; tenant-a keeps
// shared_memory for retentionDays when > 0.
func chronosFor(uri string, retentionDays int) config.Chronos {
	ch := config.DefaultChronos(uri)
	var tds []config.TenantDatabase
	for _, t := range testTenants {
		td := config.TenantDatabase{TenantID: t, DBConnRef: config.DefaultConnRef, DBName: dbName(t)}
		if t == "tenant-a" && retentionDays > 0 {
			td.RetentionDays = map[string]int{config.CollSharedMemory: retentionDays}
		}
		tds = append(tds, td)
	}
	ch.Databases.Messaging.TenantDatabases = tds
	return ch
}

// env is one test's servers, sink and metrics.
type env struct {
	t     *testing.T
	rs    *testenv.Redis
	rdb   *redis.Client
	mc    *mongo.Client
	sink  *sink.Writer
	ch    config.Chronos
	m     *metrics.Metrics
	reg   *prometheus.Registry
	log   *slog.Logger
	redis redis.UniversalClient
}

func newEnv(t *testing.T, retentionDays int, redisOpts ...testenv.RedisOption) *env {
	t.Helper()
	rs := testenv.StartRedis(t, redisOpts...)
	e := newEnvWith(t, rs.Client(t), retentionDays)
	e.rs, e.rdb = rs, rs.Client(t)
	return e
}

// newEnvWith is newEnv for a Redis client the test made (a cluster).
func newEnvWith(t *testing.T, rc redis.UniversalClient, retentionDays int) *env {
	t.Helper()
	ms := testenv.StartMongo(t)
	e := &env{t: t, redis: rc, mc: ms.Client(t), ch: chronosFor(ms.URI, retentionDays)}
	w, err := sink.New(context.Background(), e.ch, sink.Options{AppName: "sharedmem-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close(context.Background()) })
	e.sink = w
	e.reg = prometheus.NewRegistry()
	e.m = metrics.New(e.reg, "test")
	level := slog.LevelInfo
	if os.Getenv("SM_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	e.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	return e
}

func tenantSet(ts []config.TenantDatabase) map[string]bool {
	out := map[string]bool{}
	for _, t := range ts {
		out[t.TenantID] = true
	}
	return out
}

func (e *env) config() Config {
	return Config{
		Layout:            keyspace.Layout{Prefix: "cw:", Form: keyspace.FormAuto, Tenants: tenantSet(e.ch.Tenants())},
		Tenants:           e.ch.Tenants(),
		Notify:            true,
		FlushInterval:     200 * time.Millisecond,
		ReconcileInterval: time.Hour,
		WriteTimeout:      20 * time.Second,
		MaxBackoff:        2 * time.Second,
		MaxPending:        10000,
		CacheKeys:         100000,
		ScanCount:         100,
	}
}

// running is a Carrier started by a test.
type running struct {
	c      *Carrier
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// start runs a Carrier until stop (or the end of the test).
func (e *env) start(cfg Config) *running {
	e.t.Helper()
	c := New(cfg, e.redis, e.sink, e.m, e.log)
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{c: c, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx, context.Background()) }()
	e.t.Cleanup(func() { _ = r.stop() })
	return r
}

func (r *running) stop() error {
	var err error
	r.once.Do(func() {
		r.cancel()
		select {
		case err = <-r.done:
		case <-time.After(60 * time.Second):
			err = fmt.Errorf("carrier did not stop within 60s")
		}
	})
	return err
}

// waitLive waits until the live path is subscribed with the needed flags.
func (e *env) waitLive() {
	e.t.Helper()
	eventually(e.t, 20*time.Second, "live capture up", func() (bool, string) {
		v := e.metric("persister_sm_live_capture")
		return v == 1, fmt.Sprintf("persister_sm_live_capture=%v", v)
	})
}

// smDoc is a stored shared_memory document.
type smDoc struct {
	Key       string `bson:"key"`
	Namespace string `bson:"namespace"`
	TenantID  string `bson:"tenantId"`
	Val       any    `bson:"val"`
	System    struct {
		CreatedAt     time.Time `bson:"createdAt"`
		UpdatedAt     time.Time `bson:"updatedAt"`
		Version       int64     `bson:"version"`
		Hash          string    `bson:"hash"`
		RetentionDays int       `bson:"retentionDays"`
		ExpireAt      time.Time `bson:"expireAt"`
		Tombstone     bool      `bson:"tombstone"`
		DeletedAt     time.Time `bson:"deletedAt"`
		Defects       []string  `bson:"defects"`
		Raw           bson.M    `bson:"raw"`
		Error         string    `bson:"error"`
	} `bson:"_system"`
}

// find returns the document of (tenant, ns, name), or nil.
func (e *env) find(tenant, ns, name string) *smDoc {
	e.t.Helper()
	var d smDoc
	err := e.mc.Database(dbName(tenant)).Collection(config.CollSharedMemory).
		FindOne(context.Background(), bson.D{{Key: "key", Value: name}, {Key: "namespace", Value: ns}, {Key: "tenantId", Value: tenant}}).Decode(&d)
	if err == mongo.ErrNoDocuments {
		return nil
	}
	if err != nil {
		e.t.Fatalf("find %s/%s/%s: %v", tenant, ns, name, err)
	}
	return &d
}

// count returns the number of documents in a tenant's collection.
func (e *env) count(tenant string) int64 {
	e.t.Helper()
	n, err := e.mc.Database(dbName(tenant)).Collection(config.CollSharedMemory).CountDocuments(context.Background(), bson.D{})
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

// waitVal waits until the stored val of a key is want (compared with %v).
func (e *env) waitVal(tenant, ns, name string, want any) *smDoc {
	e.t.Helper()
	var d *smDoc
	eventually(e.t, 60*time.Second, fmt.Sprintf("%s/%s/%s stored as %v", tenant, ns, name, want), func() (bool, string) {
		d = e.find(tenant, ns, name)
		if d == nil {
			return false, "no document"
		}
		return fmt.Sprint(d.Val) == fmt.Sprint(want), fmt.Sprintf("val %v", d.Val)
	})
	return d
}

func (e *env) set(key, value string, ttl time.Duration) {
	e.t.Helper()
	if err := e.redis.Set(context.Background(), key, value, ttl).Err(); err != nil {
		e.t.Fatal(err)
	}
}

func smKey(tenant, ns, name string) string { return "cw:" + tenant + ":" + ns + ":sm:" + name }

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		ok, s := cond()
		if ok {
			return
		}
		last = s
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last: %s", timeout, what, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// histogramSum returns the sum of a histogram family's observations.
func (e *env) histogramSum(name string) float64 {
	e.t.Helper()
	ms, _ := promtext.Series(e.t, e.reg, name)
	var sum float64
	for _, m := range ms {
		sum += m.GetHistogram().GetSampleSum()
	}
	return sum
}

// metric sums the samples of a counter or gauge family whose labels
// include the given name=value pairs.
func (e *env) metric(name string, labels ...string) float64 {
	e.t.Helper()
	return promtext.GatherSum(e.t, e.reg, name, labels...)
}
