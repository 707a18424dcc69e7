package lag

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/testenv"
)

const group = "persister"

func fill(t *testing.T, rdb *redis.Client, stream string, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range n {
		id, err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: stream, Values: []string{"payload", fmt.Sprint(i)}}).Result()
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = id
	}
	return ids
}

// createGroup creates the group on stream, at its start.
func createGroup(t *testing.T, rdb *redis.Client, stream string) {
	t.Helper()
	if err := rdb.XGroupCreate(context.Background(), stream, group, "0").Err(); err != nil {
		t.Fatal(err)
	}
}

// filledGroup adds n entries to stream, creates the group at its start and
// returns the entries' ids.
func filledGroup(t *testing.T, rdb *redis.Client, stream string, n int) []string {
	t.Helper()
	ids := fill(t, rdb, stream, n)
	createGroup(t, rdb, stream)
	return ids
}

// trim trims stream to its newest maxLen entries.
func trim(t *testing.T, rdb *redis.Client, stream string, maxLen int64) {
	t.Helper()
	if err := rdb.XTrimMaxLen(context.Background(), stream, maxLen).Err(); err != nil {
		t.Fatal(err)
	}
}

// read delivers n new entries to the group (as the persister's reader does)
// and returns their ids.
func read(t *testing.T, rdb *redis.Client, stream string, n int64) []string {
	t.Helper()
	res, err := rdb.XReadGroup(context.Background(), &redis.XReadGroupArgs{
		Group: group, Consumer: "c1", Streams: []string{stream, ">"}, Count: n, Block: -1,
	}).Result()
	if err != nil {
		t.Fatalf("xreadgroup: %v", err)
	}
	var ids []string
	for _, m := range res[0].Messages {
		ids = append(ids, m.ID)
	}
	return ids
}

func ack(t *testing.T, rdb *redis.Client, stream string, ids []string) {
	t.Helper()
	if err := rdb.XAck(context.Background(), stream, group, ids...).Err(); err != nil {
		t.Fatal(err)
	}
}

func measure(t *testing.T, ms *Measurer, stream string) Measurement {
	t.Helper()
	res, errs := ms.Measure(context.Background(), []string{stream})
	if errs[0] != nil {
		t.Fatalf("measure: %v", errs[0])
	}
	return res[0]
}

func idTime(t *testing.T, id string) time.Time {
	t.Helper()
	var ms int64
	if _, err := fmt.Sscanf(id, "%d-", &ms); err != nil {
		t.Fatalf("id %q: %v", id, err)
	}
	return time.UnixMilli(ms)
}

// redisLag is what XINFO GROUPS says (-1 for null).
func redisLag(t *testing.T, rdb *redis.Client, stream string) int64 {
	t.Helper()
	gs, err := rdb.XInfoGroups(context.Background(), stream).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gs {
		if g.Name == group {
			return g.Lag
		}
	}
	t.Fatalf("group %q not on %s", group, stream)
	return 0
}

func check(t *testing.T, what string, got Measurement, lag, pending, lost int64, oldest string) {
	t.Helper()
	if got.Lag != lag || got.Pending != pending || got.Lost != lost {
		t.Errorf("%s: lag/pending/lost = %d/%d/%d, want %d/%d/%d (%+v)", what, got.Lag, got.Pending, got.Lost, lag, pending, lost, got)
	}
	var want time.Time
	if oldest != "" {
		want = idTime(t, oldest)
	}
	if !got.Oldest.Equal(want) {
		t.Errorf("%s: oldest = %v, want %v (id %q)", what, got.Oldest, want, oldest)
	}
}

func TestMeasureLagPendingOldest(t *testing.T) {
	rdb := testenv.StartRedis(t).Client(t)
	ctx := context.Background()
	ms := NewMeasurer(rdb, group, 100, true)
	const s = "cw:t:ns:topic:a"

	if got := measure(t, ms, s); got.Status != StatusGone {
		t.Errorf("missing stream: status %d, want %d", got.Status, StatusGone)
	}
	ids := fill(t, rdb, s, 5)
	got := measure(t, ms, s)
	if got.Status != StatusNoGroup {
		t.Errorf("status %d, want %d (no group)", got.Status, StatusNoGroup)
	}
	check(t, "no group", got, 5, 0, 0, ids[0])
	createGroup(t, rdb, s)
	check(t, "group at 0", measure(t, ms, s), 5, 0, 0, ids[0])
	first := read(t, rdb, s, 2)
	check(t, "two delivered", measure(t, ms, s), 3, 2, 0, ids[0])
	ack(t, rdb, s, first)
	check(t, "two acked", measure(t, ms, s), 3, 0, 0, ids[2])
	rest := read(t, rdb, s, 10)
	check(t, "all delivered", measure(t, ms, s), 0, 3, 0, ids[2])
	ack(t, rdb, s, rest)
	got = measure(t, ms, s)
	check(t, "all acked", got, 0, 0, 0, "")
	if !got.Exact || got.Age() != 0 {
		t.Errorf("caught up: exact %v age %v, want true 0", got.Exact, got.Age())
	}

	// Age runs on the Redis clock.
	old := fill(t, rdb, s, 1)
	time.Sleep(300 * time.Millisecond)
	got = measure(t, ms, s)
	if a := got.Age(); a < 250*time.Millisecond || a > time.Minute {
		t.Errorf("age of an entry added 300ms ago = %v", a)
	}
	check(t, "one new", got, 1, 0, 0, old[0])

	// After SCRIPT FLUSH (a Redis restart or failover) the script is loaded again.
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	check(t, "after script flush", measure(t, ms, s), 1, 0, 0, old[0])
}

// Entries trimmed before the group read them: Redis's own lag stays too high
// forever; the measurement counts them once, across replicas, and corrects it.
func TestMeasureTrimmedBeforeDelivered(t *testing.T) {
	rdb := testenv.StartRedis(t).Client(t)
	replicaA := NewMeasurer(rdb, group, 1000, true)
	replicaB := NewMeasurer(rdb, group, 1000, true)

	cases := []struct {
		name    string
		readN   int64 // delivered (and acked) after the trim
		lag     int64
		wantOld int // index of the oldest unacked entry, -1 none
	}{
		{"group behind the first entry", 0, 20, 80},
		{"reader skipped past the gap", 5, 15, 85},
		{"reader caught up", 100, 0, -1},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := fmt.Sprintf("cw:t:ns:topic:trim%d", i)
			ids := filledGroup(t, rdb, s, 100)
			ack(t, rdb, s, read(t, rdb, s, 10))
			check(t, "before trim", measure(t, replicaA, s), 90, 0, 0, ids[10])
			trim(t, rdb, s, 20)
			if tc.readN > 0 {
				ack(t, rdb, s, read(t, rdb, s, tc.readN))
			}
			t.Logf("XINFO GROUPS lag before correction: %d (true lag %d)", redisLag(t, rdb, s), tc.lag)
			oldest := ""
			if tc.wantOld >= 0 {
				oldest = ids[tc.wantOld]
			}
			check(t, "replica A", measure(t, replicaA, s), tc.lag, 0, 70, oldest)
			check(t, "replica B", measure(t, replicaB, s), tc.lag, 0, 0, oldest)
			check(t, "replica A again", measure(t, replicaA, s), tc.lag, 0, 0, oldest)
			if rl := redisLag(t, rdb, s); rl != tc.lag {
				t.Errorf("XINFO GROUPS lag after correction = %d, want %d", rl, tc.lag)
			}
			// Reading on from the corrected counter keeps it right.
			more := fill(t, rdb, s, 3)
			ack(t, rdb, s, read(t, rdb, s, 100))
			check(t, "read on", measure(t, replicaA, s), 0, 0, 0, "")
			if rl := redisLag(t, rdb, s); rl != 0 {
				t.Errorf("XINFO GROUPS lag after reading on = %d, want 0 (last %s)", rl, more[2])
			}
		})
	}
}

// A delete inside the unread range makes Redis report lag as null; the
// measurement still counts it, and counts the deleted entries as lost.
func TestMeasureNullRedisLag(t *testing.T) {
	rdb := testenv.StartRedis(t).Client(t)
	ctx := context.Background()
	ms := NewMeasurer(rdb, group, 1000, true)
	const s = "cw:t:ns:topic:del"
	ids := filledGroup(t, rdb, s, 50)
	ack(t, rdb, s, read(t, rdb, s, 10))
	if err := rdb.XDel(ctx, s, ids[20], ids[30], ids[40]).Err(); err != nil {
		t.Fatal(err)
	}
	if rl := redisLag(t, rdb, s); rl != -1 {
		t.Logf("note: Redis reports lag %d after XDEL (null expected on 7.x)", rl)
	}
	got := measure(t, ms, s)
	check(t, "after xdel", got, 37, 0, 3, ids[10])
	if !got.Exact {
		t.Errorf("exact = false, want true")
	}
	check(t, "again", measure(t, ms, s), 37, 0, 0, ids[10])
}

// A backlog larger than the count cap is not walked: Redis's figure is used,
// and an unseen trim is still counted when Redis's figure exceeds the length.
func TestMeasureBacklogOverCap(t *testing.T) {
	rdb := testenv.StartRedis(t).Client(t)
	ms := NewMeasurer(rdb, group, 10, true)
	const s = "cw:t:ns:topic:big"
	ids := filledGroup(t, rdb, s, 100)
	ack(t, rdb, s, read(t, rdb, s, 5))
	got := measure(t, ms, s)
	check(t, "backlog", got, 95, 0, 0, ids[5])
	if got.Exact {
		t.Errorf("exact = true for a backlog over the cap")
	}
	trim(t, rdb, s, 50)
	ack(t, rdb, s, read(t, rdb, s, 1)) // skips entries 5..49, delivers 50
	got = measure(t, ms, s)
	check(t, "trimmed backlog", got, 49, 0, 45, ids[51])
	check(t, "again", measure(t, ms, s), 49, 0, 0, ids[51])
}

// Observe-only measurers count nothing and leave the group alone.
func TestMeasureObserveOnly(t *testing.T) {
	rdb := testenv.StartRedis(t).Client(t)
	ms := NewMeasurer(rdb, group, 1000, false)
	const s = "cw:t:ns:topic:ro"
	filledGroup(t, rdb, s, 30)
	ack(t, rdb, s, read(t, rdb, s, 5))
	trim(t, rdb, s, 10)
	got := measure(t, ms, s)
	if got.Lag != 10 || got.Lost != 0 {
		t.Errorf("lag/lost = %d/%d, want 10/0", got.Lag, got.Lost)
	}
	if rl := redisLag(t, rdb, s); rl != 25 {
		t.Errorf("XINFO GROUPS lag = %d, want 25 (untouched)", rl)
	}
}

// A group that never read anything has no entries-read counter: entries
// trimmed before its first read (e.g. long before the persister was
// deployed) are not counted as lost, and Redis sets the counter from the
// first entry at the first read.
func TestMeasureTrimBeforeFirstReadNotCounted(t *testing.T) {
	rdb := testenv.StartRedis(t).Client(t)
	ms := NewMeasurer(rdb, group, 1000, true)
	const s = "cw:t:ns:topic:fresh"
	ids := filledGroup(t, rdb, s, 20)
	trim(t, rdb, s, 5)
	check(t, "never read", measure(t, ms, s), 5, 0, 0, ids[15])
	ack(t, rdb, s, read(t, rdb, s, 2))
	check(t, "first read", measure(t, ms, s), 3, 0, 0, ids[17])
	if rl := redisLag(t, rdb, s); rl != 3 {
		t.Errorf("XINFO GROUPS lag after the first read = %d, want 3", rl)
	}
}
