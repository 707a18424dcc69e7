package consumer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/testenv"
	"github.com/chronow/persister/metrics"
)

const testGroup = "persister"

// recorder is a Handler that keeps what it was given.
type recorder struct {
	mu      sync.Mutex
	got     map[string][]string // stream -> ids with a body
	trimmed map[string][]string // stream -> ids without a body
	err     error
}

func newRecorder() *recorder {
	return &recorder{got: map[string][]string{}, trimmed: map[string][]string{}}
}

func (r *recorder) handle(_ context.Context, stream string, msgs []redis.XMessage) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range msgs {
		if m.Values == nil {
			r.trimmed[stream] = append(r.trimmed[stream], m.ID)
		} else {
			r.got[stream] = append(r.got[stream], m.ID)
		}
	}
	return r.err
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// deliver adds n entries to stream and reads them as consumer (so they are
// pending on it); it returns their ids.
func deliver(t *testing.T, rdb *redis.Client, stream, consumer string, n int) []string {
	t.Helper()
	ctx := context.Background()
	var ids []string
	for i := range n {
		id, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"payload", fmt.Sprint(i)}}).Result()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := EnsureGroup(ctx, rdb, stream, testGroup); err != nil {
		t.Fatal(err)
	}
	res, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: testGroup, Consumer: consumer, Streams: []string{stream, ">"}, Count: int64(n), Block: -1,
	}).Result()
	if err != nil {
		t.Fatal(err)
	}
	if got := len(res[0].Messages); got != n {
		t.Fatalf("read %d entries as %s, want %d", got, consumer, n)
	}
	return ids
}

func pendingOf(t *testing.T, rdb *redis.Client, stream, consumer string) []string {
	t.Helper()
	ext, err := rdb.XPendingExt(context.Background(), &redis.XPendingExtArgs{
		Stream: stream, Group: testGroup, Start: "-", End: "+", Count: 10000, Consumer: consumer,
	}).Result()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, p := range ext {
		ids = append(ids, p.ID)
	}
	return ids
}

func newTestClaimer(rdb *redis.Client, keys []string, h Handler, mod func(*ClaimerConfig)) *Claimer {
	s := NewStreams()
	s.Set(keys)
	cfg := ClaimerConfig{
		Group: testGroup, Consumer: "survivor", MinIdle: 200 * time.Millisecond,
		Interval: 100 * time.Millisecond, Count: 7,
	}
	if mod != nil {
		mod(&cfg)
	}
	return NewClaimer(rdb, cfg, s, h, quiet())
}

func TestSweepClaimsEntriesOfADeadConsumer(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.StartRedis(t).Client(t)
	a := deliver(t, rdb, "cw:t:ns:topic:a", "dead", 50) // more than Count: the cursor is followed
	b := deliver(t, rdb, "cw:t:ns:topic:b", "dead", 3)
	rec := newRecorder()
	c := newTestClaimer(rdb, []string{"cw:t:ns:topic:a", "cw:t:ns:topic:b"}, rec.handle, nil)

	// Not idle long enough yet: nothing is claimed.
	st, err := c.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Claimed != 0 {
		t.Fatalf("claimed %d entries pending for less than min-idle, want 0", st.Claimed)
	}

	time.Sleep(300 * time.Millisecond)
	st, err = c.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Claimed != 53 || st.Trimmed != 0 {
		t.Fatalf("sweep: claimed %d trimmed %d, want 53 and 0", st.Claimed, st.Trimmed)
	}
	for stream, want := range map[string][]string{"cw:t:ns:topic:a": a, "cw:t:ns:topic:b": b} {
		if got := rec.got[stream]; !slices.Equal(got, want) {
			t.Errorf("%s: handler got %d ids %v, want %d", stream, len(got), got, len(want))
		}
		if p := pendingOf(t, rdb, stream, "dead"); len(p) != 0 {
			t.Errorf("%s: %d entries still pending on the dead consumer, want 0", stream, len(p))
		}
		if p := pendingOf(t, rdb, stream, "survivor"); !slices.Equal(p, want) {
			t.Errorf("%s: pending on survivor %v, want %v", stream, p, want)
		}
	}

	// Claimed entries are fresh again: an immediate sweep claims nothing.
	st, err = c.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Claimed != 0 {
		t.Errorf("second sweep claimed %d, want 0", st.Claimed)
	}
}

// sweepAs runs one sweep of stream as consumer and returns its stats
// and what the handler got.
func sweepAs(t *testing.T, rdb *redis.Client, stream, consumer string) (SweepStats, *recorder) {
	t.Helper()
	rec := newRecorder()
	st, err := newTestClaimer(rdb, []string{stream}, rec.handle, func(c *ClaimerConfig) { c.Consumer = consumer }).Sweep(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st, rec
}

// deliverTrimmed starts a Redis, delivers n entries of stream to consumer
// "dead", trims the first trimmed of them away while they are pending and
// waits until they are idle past the test claimer's min-idle.
func deliverTrimmed(t *testing.T, stream string, n, trimmed int) (*redis.Client, []string) {
	t.Helper()
	rdb := testenv.StartRedis(t).Client(t)
	ids := deliver(t, rdb, stream, "dead", n)
	if err := rdb.XTrimMinID(context.Background(), stream, ids[trimmed]).Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	return rdb, ids
}

func TestSweepHandsTrimmedEntriesWithoutBody(t *testing.T) {
	ctx := context.Background()
	const stream = "cw:t:ns:topic:trim"
	rdb, ids := deliverTrimmed(t, stream, 10, 6) // the first 6 trimmed away while pending
	st, rec := sweepAs(t, rdb, stream, "survivor")
	if st.Claimed != 4 || st.Trimmed != 6 {
		t.Fatalf("claimed %d trimmed %d, want 4 and 6", st.Claimed, st.Trimmed)
	}
	if got := rec.trimmed[stream]; !slices.Equal(got, ids[:6]) {
		t.Errorf("trimmed ids %v, want %v", got, ids[:6])
	}
	if got := rec.got[stream]; !slices.Equal(got, ids[6:]) {
		t.Errorf("claimed ids %v, want %v", got, ids[6:])
	}
	// Trimmed ids stay pending on their consumer until the handler has
	// decided and acked them (a claimer killed before that leaves them to
	// the next sweep); the live ones are the survivor's now.
	if p := pendingOf(t, rdb, stream, "dead"); !slices.Equal(p, ids[:6]) {
		t.Errorf("pending on the dead consumer %v, want the trimmed %v", p, ids[:6])
	}
	if p := pendingOf(t, rdb, stream, "survivor"); !slices.Equal(p, ids[6:]) {
		t.Errorf("pending on the survivor %v, want %v", p, ids[6:])
	}
	// Not acked: the next sweep hands them on again; acked: never more.
	if st, _ = sweepAs(t, rdb, stream, "survivor"); st.Claimed != 0 || st.Trimmed != 6 {
		t.Fatalf("second sweep: claimed %d trimmed %d, want 0 and 6", st.Claimed, st.Trimmed)
	}
	if err := rdb.XAck(ctx, stream, testGroup, ids[:6]...).Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if st, _ = sweepAs(t, rdb, stream, "survivor"); st.Trimmed != 0 {
		t.Errorf("after the ack: trimmed %d, want 0", st.Trimmed)
	}
}

// TestSweepTrimmedGoToOneDecider: the ids of trimmed pending entries go
// only to the claimer with the smallest name among the consumers active
// within min-idle (itself included): another live replica with a smaller
// name decides them; entries with a body are claimed as usual.
func TestSweepTrimmedGoToOneDecider(t *testing.T) {
	ctx := context.Background()
	const stream = "cw:t:ns:topic:decider"
	rdb, ids := deliverTrimmed(t, stream, 6, 3)
	// "alive" (< "survivor") reads an entry now: it is active (Redis 7.0
	// counts a consumer's idle time from its last read that returned
	// something).
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"payload", "new"}}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: testGroup, Consumer: "alive", Streams: []string{stream, ">"}, Count: 1, Block: -1,
	}).Err(); err != nil && !errors.Is(err, redis.Nil) {
		t.Fatal(err)
	}
	if st, _ := sweepAs(t, rdb, stream, "survivor"); st.Claimed != 3 || st.Trimmed != 0 {
		t.Fatalf("survivor: claimed %d trimmed %d, want 3 and 0 (alive decides the trimmed ones)", st.Claimed, st.Trimmed)
	}
	if st, rec := sweepAs(t, rdb, stream, "alive"); st.Trimmed != 3 || !slices.Equal(rec.trimmed[stream], ids[:3]) {
		t.Errorf("alive: trimmed %d %v, want %v", st.Trimmed, rec.trimmed[stream], ids[:3])
	}
	// Once "alive" has been idle for min-idle, the survivor decides them.
	time.Sleep(300 * time.Millisecond)
	if st, _ := sweepAs(t, rdb, stream, "survivor"); st.Trimmed != 3 {
		t.Errorf("survivor after alive went idle: trimmed %d, want 3", st.Trimmed)
	}
}

func TestSweepPausedClaimsNothing(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.StartRedis(t).Client(t)
	deliver(t, rdb, "cw:t:ns:topic:p", "dead", 5)
	time.Sleep(300 * time.Millisecond)
	rec := newRecorder()
	st, err := newTestClaimer(rdb, []string{"cw:t:ns:topic:p"}, rec.handle, func(c *ClaimerConfig) {
		c.Paused = func() bool { return true }
	}).Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Paused || st.Claimed != 0 || len(rec.got) != 0 {
		t.Fatalf("paused sweep: %+v, handler got %v; want nothing claimed", st, rec.got)
	}
	if p := pendingOf(t, rdb, "cw:t:ns:topic:p", "dead"); len(p) != 5 {
		t.Fatalf("pending on dead consumer %d, want 5", len(p))
	}
}

func TestSweepMissingStreamOrGroupIsNotAnError(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.StartRedis(t).Client(t)
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: "cw:t:ns:topic:nogroup", Values: []any{"a", "b"}}).Err(); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	st, err := newTestClaimer(rdb, []string{"cw:t:ns:topic:missing", "cw:t:ns:topic:nogroup"}, rec.handle, func(c *ClaimerConfig) {
		c.IdleDelete = time.Millisecond
	}).Sweep(ctx)
	if err != nil {
		t.Fatalf("sweep over a missing stream and a stream without the group: %v, want nil", err)
	}
	if st != (SweepStats{}) {
		t.Fatalf("stats %+v, want zero", st)
	}
}

func TestSweepDeletesOnlyIdleConsumersWithNothingPending(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.StartRedis(t).Client(t)
	const stream = "cw:t:ns:topic:consumers"
	deliver(t, rdb, stream, "holder", 2) // pending entries: never deleted
	// "gone" read once and got nothing pending; "survivor" is the sweeper.
	for _, name := range []string{"gone", "survivor"} {
		if err := rdb.XGroupCreateConsumer(ctx, stream, testGroup, name).Err(); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(700 * time.Millisecond)
	if err := rdb.XGroupCreateConsumer(ctx, stream, testGroup, "fresh").Err(); err != nil {
		t.Fatal(err)
	}
	// "fresh" just appeared (idle ~0).
	rec := newRecorder()
	st, err := newTestClaimer(rdb, []string{stream}, rec.handle, func(c *ClaimerConfig) {
		c.MinIdle = time.Hour // claim nothing: "holder" keeps its entries
		c.IdleDelete = 500 * time.Millisecond
	}).Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.ConsumersDeleted != 1 {
		t.Errorf("deleted %d consumers, want 1", st.ConsumersDeleted)
	}
	cs, err := rdb.XInfoConsumers(ctx, stream, testGroup).Result()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range cs {
		names = append(names, c.Name)
	}
	slices.Sort(names)
	if want := []string{"fresh", "holder", "survivor"}; !slices.Equal(names, want) {
		t.Fatalf("consumers left %v, want %v", names, want)
	}
}

func TestDeleteConsumerScriptRefusesPendingConsumer(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.StartRedis(t).Client(t)
	const stream = "cw:t:ns:topic:script"
	deliver(t, rdb, stream, "holder", 1)
	time.Sleep(50 * time.Millisecond)
	for _, tc := range []struct {
		consumer string
		idleMs   int64
		want     int
	}{
		{"holder", 1, 0},      // pending entries: kept, however idle
		{"nobody", 1, -1},     // no such consumer
		{"holder", 100000, 0}, // not idle enough either
	} {
		got, err := deleteConsumer.Run(ctx, rdb, []string{stream}, testGroup, tc.consumer, tc.idleMs).Int()
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("delete %s idle>=%dms: got %d, want %d", tc.consumer, tc.idleMs, got, tc.want)
		}
	}
	if p := pendingOf(t, rdb, stream, "holder"); len(p) != 1 {
		t.Fatalf("holder pending %d, want 1", len(p))
	}
	// Gone stream: the script's error is recognised as "gone".
	err := deleteConsumer.Run(ctx, rdb, []string{"cw:t:ns:topic:none"}, testGroup, "x", 1).Err()
	if err == nil || !gone(err) {
		t.Fatalf("script on a missing stream: err %v, want a 'gone' error", err)
	}
}

func TestClaimerRunClaimsAndStops(t *testing.T) {
	rdb := testenv.StartRedis(t).Client(t)
	ids := deliver(t, rdb, "cw:t:ns:topic:run", "dead", 4)
	rec := newRecorder()
	c := newTestClaimer(rdb, []string{"cw:t:ns:topic:run"}, rec.handle, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rec.mu.Lock()
		n := len(rec.got["cw:t:ns:topic:run"])
		rec.mu.Unlock()
		if n == len(ids) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Run claimed %d of %d entries within 10s", n, len(ids))
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel: %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestClaimerRunStopsOnHandlerError(t *testing.T) {
	rdb := testenv.StartRedis(t).Client(t)
	deliver(t, rdb, "cw:t:ns:topic:herr", "dead", 2)
	rec := newRecorder()
	rec.err = errors.New("boom")
	c := newTestClaimer(rdb, []string{"cw:t:ns:topic:herr"}, rec.handle, nil)
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background()) }()
	select {
	case err := <-done:
		if err == nil || !errors.Is(err, rec.err) {
			t.Fatalf("Run: %v, want the handler's error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the handler failed")
	}
}

func TestClaimerRunSurvivesRedisDown(t *testing.T) {
	rs := testenv.StartRedis(t)
	rdb := rs.Client(t)
	deliver(t, rdb, "cw:t:ns:topic:down", "dead", 3)
	var errs sync.Map
	rec := newRecorder()
	c := newTestClaimer(rdb, []string{"cw:t:ns:topic:down"}, rec.handle, func(c *ClaimerConfig) {
		c.MinIdle = time.Hour
		c.OnError = func(op string, _ error) { errs.Store(op, true) }
	})
	rs.Kill(t)
	ctx, cancel := context.WithTimeout(context.Background(), 800*time.Millisecond)
	defer cancel()
	if err := c.Run(ctx); err != nil {
		t.Fatalf("Run with Redis down: %v, want nil after the context ends", err)
	}
	if _, ok := errs.Load(metrics.OpClaim); !ok {
		t.Fatal("OnError was not told of the failed claim")
	}
}
