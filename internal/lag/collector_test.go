package lag

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/promtext"
	"github.com/chronow/persister/internal/testenv"
	"github.com/chronow/persister/metrics"
)

type fakeList struct {
	mu sync.Mutex
	m  map[string][]string
}

func (f *fakeList) set(m map[string][]string) { f.mu.Lock(); f.m = m; f.mu.Unlock() }
func (f *fakeList) get() map[string][]string  { f.mu.Lock(); defer f.mu.Unlock(); return f.m }

// value returns the value of the series of family name whose labels include
// labels (name, value pairs), and how many series the family has.
func value(t *testing.T, reg *prometheus.Registry, name string, labels ...string) (float64, int) {
	t.Helper()
	ms, all := promtext.Series(t, reg, name, labels...)
	for _, m := range ms {
		switch {
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue(), all
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue(), all
		}
	}
	return -1, all
}

// newCollector returns a collector on rdb of cfg (group, layout "cw:" and a
// 1s interval filled in), its registry and its stream list.
func newCollector(rdb redis.UniversalClient, cfg Config) (*prometheus.Registry, *fakeList, *Collector) {
	reg := prometheus.NewRegistry()
	list := &fakeList{}
	cfg.Group, cfg.Layout, cfg.Interval = group, keyspace.Layout{Prefix: "cw:"}, time.Second
	c := New(rdb, cfg, list.get, metrics.New(reg, "test"), reg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	return reg, list, c
}

func TestCollectorAggregatesByTenantAndKind(t *testing.T) {
	rs := testenv.StartRedis(t)
	rdb := rs.Client(t)
	ctx := context.Background()
	reg, list, c := newCollector(rdb, Config{Kinds: []string{"topic", "dlq"}})

	a1, a2, b1 := "cw:a:ns:topic:one", "cw:a:other:topic:two", "cw:b:ns:topic:one"
	oldA := fill(t, rdb, a1, 10)
	fill(t, rdb, a2, 5)
	fill(t, rdb, b1, 30)
	for _, s := range []string{a1, a2, b1} {
		if err := rdb.XGroupCreate(ctx, s, group, "0").Err(); err != nil {
			t.Fatal(err)
		}
	}
	read(t, rdb, a1, 4) // 4 pending, 6 undelivered
	ack(t, rdb, b1, read(t, rdb, b1, 10))
	if err := rdb.XTrimMaxLen(ctx, b1, 5).Err(); err != nil { // 15 never delivered, gone
		t.Fatal(err)
	}
	list.set(map[string][]string{"a": {a1, a2}, "b": {b1}, "c": nil})
	time.Sleep(20 * time.Millisecond)
	if err := c.Collect(ctx); err != nil {
		t.Fatal(err)
	}
	const (
		lagName  = "persister_stream_lag_entries"
		pendName = "persister_stream_pending_entries"
		ageName  = "persister_oldest_unacked_age_seconds"
	)
	for _, tc := range []struct {
		name         string
		tenant, kind string
		want         float64
	}{
		{lagName, "a", "topic", 11},
		{pendName, "a", "topic", 4},
		{lagName, "b", "topic", 5},
		{pendName, "b", "topic", 0},
		{lagName, "a", "dlq", 0},
		{lagName, "c", "topic", 0},
		{ageName, "c", "topic", 0},
	} {
		if got, _ := value(t, reg, tc.name, "tenant", tc.tenant, "kind", tc.kind); got != tc.want {
			t.Errorf("%s{tenant=%q,kind=%q} = %v, want %v", tc.name, tc.tenant, tc.kind, got, tc.want)
		}
	}
	if age, _ := value(t, reg, ageName, "tenant", "a", "kind", "topic"); age < 0.02 || age > 60 {
		t.Errorf("oldest age of a/topic = %v s, want the age of %s", age, oldA[0])
	}
	lost := func() float64 {
		v, _ := value(t, reg, "persister_entries_lost_total", "tenant", "b", "cause", metrics.CauseTrimmedUnread)
		return v
	}
	if got := lost(); got != 15 {
		t.Errorf("lost b = %v, want 15", got)
	}
	if err := c.Collect(ctx); err != nil {
		t.Fatal(err)
	}
	if got := lost(); got != 15 {
		t.Errorf("lost b after a second pass = %v, want 15 (counted once)", got)
	}

	// A tenant no longer listed loses its series.
	list.set(map[string][]string{"a": {a1, a2}})
	if err := c.Collect(ctx); err != nil {
		t.Fatal(err)
	}
	if _, n := value(t, reg, lagName); n != 2 {
		t.Errorf("lag series after tenant b and c left = %d, want 2 (a/topic, a/dlq)", n)
	}
	if got, _ := value(t, reg, "persister_lag_collected_timestamp_seconds"); got < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("collected timestamp = %v, want about now", got)
	}

	// Redis down: the pass fails, is counted, and the gauges keep their values.
	rs.Kill(t)
	if err := c.Collect(ctx); err == nil {
		t.Fatal("collect with Redis down: got nil error")
	}
	if got, _ := value(t, reg, lagName, "tenant", "a", "kind", "topic"); got != 11 {
		t.Errorf("lag after a failed pass = %v, want 11 (kept)", got)
	}
	if got, _ := value(t, reg, "persister_redis_errors_total", "op", "lag"); got != 2 {
		t.Errorf("redis errors op=lag = %v, want 2 (one per stream)", got)
	}
}

func TestCollectorTopStreams(t *testing.T) {
	rs := testenv.StartRedis(t)
	rdb := rs.Client(t)
	ctx := context.Background()
	reg, list, c := newCollector(rdb, Config{Kinds: []string{"topic"}, TopStreams: 2})

	oldest, middle, newest, idle := "cw:a:ns:topic:oldest", "cw:a:ns:topic:middle", "cw:b:ns:topic:newest", "cw:b:ns:topic:idle"
	for _, s := range []string{oldest, middle, newest, idle} {
		fill(t, rdb, s, 3)
		if err := rdb.XGroupCreate(ctx, s, group, "0").Err(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(30 * time.Millisecond)
	}
	ack(t, rdb, idle, read(t, rdb, idle, 10))
	list.set(map[string][]string{"a": {oldest, middle}, "b": {newest, idle}})
	if err := c.Collect(ctx); err != nil {
		t.Fatal(err)
	}
	const topLag = "persister_top_stream_lag_entries"
	for _, s := range []string{oldest, middle} {
		if got, _ := value(t, reg, topLag, "stream", s); got != 3 {
			t.Errorf("top lag of %s = %v, want 3", s, got)
		}
	}
	if _, n := value(t, reg, topLag); n != 2 {
		t.Errorf("top series = %d, want 2 (the cap)", n)
	}
	if got, _ := value(t, reg, topLag, "stream", newest); got != -1 {
		t.Errorf("newest stream exported (%v) although two older ones fill the cap", got)
	}
	if age, _ := value(t, reg, "persister_top_stream_oldest_unacked_age_seconds", "stream", oldest, "tenant", "a", "kind", "topic"); age <= 0 {
		t.Errorf("top age of the oldest stream = %v, want > 0", age)
	}

	// Once the oldest stream is stored, the next one moves in.
	ack(t, rdb, oldest, read(t, rdb, oldest, 10))
	if err := c.Collect(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := value(t, reg, topLag, "stream", oldest); got != -1 {
		t.Errorf("stored stream still exported: %v", got)
	}
	if got, _ := value(t, reg, topLag, "stream", newest); got != 3 {
		t.Errorf("top lag of %s = %v, want 3", newest, got)
	}
}
