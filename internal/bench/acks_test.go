package bench

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/testenv"
)

func TestParseStreamID(t *testing.T) {
	a, err := parseStreamID("1732561200123-7")
	if err != nil || a != (streamID{1732561200123, 7}) {
		t.Fatalf("got %v, %v", a, err)
	}
	b, _ := parseStreamID("1732561200123-10")
	c, _ := parseStreamID("1732561200124-0")
	if !a.less(b) || !b.less(c) || c.less(a) || a.less(a) {
		t.Errorf("order wrong: %v %v %v", a, b, c)
	}
	for _, bad := range []string{"", "1", "x-1", "1-x", "1-2-3"} {
		if _, err := parseStreamID(bad); err == nil {
			t.Errorf("%q: got no error", bad)
		}
	}
}

// TestWatchAcksNeverEarly checks against a real Redis, single and
// cluster (the poller's script runs once for all streams on one, once per
// stream on the other), that an entry counts as acknowledged only when it
// and every older entry of its stream are.
func TestWatchAcksNeverEarly(t *testing.T) {
	t.Run("single", func(t *testing.T) { testWatchAcksNeverEarly(t, testenv.StartRedis(t).Client(t)) })
	t.Run("cluster", func(t *testing.T) { testWatchAcksNeverEarly(t, testenv.StartCluster(t, 3).Client(t)) })
}

func testWatchAcksNeverEarly(t *testing.T, rdb redis.UniversalClient) {
	ctx := context.Background()
	const key, group = "cwbench:t00:ns0:topic:a", "persister"
	if err := rdb.XGroupCreateMkStream(ctx, key, group, "0").Err(); err != nil {
		t.Fatal(err)
	}
	entries := make(chan sent, 8)
	var ids []string
	for range 3 {
		id, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: []any{"payload", "{}"}}).Result()
		if err != nil {
			t.Fatal(err)
		}
		sid, _ := parseStreamID(id)
		entries <- sent{stream: key, id: sid, reply: time.Now()}
		ids = append(ids, id)
	}
	close(entries)
	type result struct {
		d   []time.Duration
		err error
	}
	done := make(chan result, 1)
	go func() {
		d, err := watchAcks(ctx, rdb, group, entries, 30*time.Second)
		done <- result{d, err}
	}()
	if err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: "c", Streams: []string{key, ">"}, Count: 10}).Err(); err != nil {
		t.Fatal(err)
	}
	// The newest two are acknowledged, the oldest not yet: nothing counts.
	if err := rdb.XAck(ctx, key, group, ids[1], ids[2]).Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	select {
	case r := <-done:
		t.Fatalf("watcher returned %v, %v while the oldest entry was pending", r.d, r.err)
	default:
	}
	if err := rdb.XAck(ctx, key, group, ids[0]).Err(); err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("watcher did not return after every entry was acknowledged")
	}
	if r.err != nil || len(r.d) != 3 {
		t.Fatalf("got %v, %v; want 3 latencies", r.d, r.err)
	}
	for i, d := range r.d {
		if d < 300*time.Millisecond {
			t.Errorf("entry %d: latency %s, want ≥ 300ms (counted before its older neighbour was acknowledged)", i, d)
		}
	}
}
