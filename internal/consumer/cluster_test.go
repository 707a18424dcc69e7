package consumer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/testenv"
)

// clusterRec records handled entries per stream and acks them.
type clusterRec struct {
	acker *Acker
	mu    sync.Mutex
	got   map[string][]string
}

func (c *clusterRec) handle(ctx context.Context, stream string, msgs []redis.XMessage) error {
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
	}
	c.mu.Lock()
	c.got[stream] = append(c.got[stream], ids...)
	c.mu.Unlock()
	return c.acker.Ack(ctx, map[string][]string{stream: ids})
}

func (c *clusterRec) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, ids := range c.got {
		n += len(ids)
	}
	return n
}

// clusterStreams returns n Chronow-like topic keys spread over tenants and
// checks that they land on every master.
// startClusterStreams starts a cluster of three masters and returns a
// client and n stream names spread over its masters (see clusterStreams).
func startClusterStreams(t *testing.T, n int) (*testenv.Cluster, *redis.ClusterClient, []string) {
	t.Helper()
	c := testenv.StartCluster(t, 3)
	return c, c.Client(t), clusterStreams(t, c, n)
}

// startClusterOneEach starts 30 streams on a cluster with one entry each
// and returns them with a recorder for them.
func startClusterOneEach(t *testing.T) (*testenv.Cluster, *redis.ClusterClient, []string, *clusterRec, *Streams) {
	c, rdb, keys := startClusterStreams(t, 30)
	xaddAll(t, rdb, keys, 1)
	rec, streams := newClusterRec(rdb, keys)
	return c, rdb, keys, rec, streams
}

// waitFirstEntries waits up to 30s until rec has handled n entries.
func waitFirstEntries(t *testing.T, rec *clusterRec, n int) {
	t.Helper()
	waitFor(t, 30*time.Second, "first entries", func() (bool, string) {
		return rec.count() == n, fmt.Sprint(rec.count())
	})
}

// splitByMaster returns the keys whose slot master i serves and the others.
func splitByMaster(c *testenv.Cluster, keys []string, i int) (on, others []string) {
	for _, k := range keys {
		if c.Master(Slot(k)) == i {
			on = append(on, k)
		} else {
			others = append(others, k)
		}
	}
	return on, others
}

// newClusterRec returns a recorder that acks what it handles in the group
// "persister", and the reader's streams set to keys.
func newClusterRec(rdb redis.UniversalClient, keys []string) (*clusterRec, *Streams) {
	streams := NewStreams()
	streams.Set(keys)
	return &clusterRec{acker: NewAcker(rdb, "persister"), got: map[string][]string{}}, streams
}

// runReader runs r until ctx ends; the channel receives Run's error.
func runReader(ctx context.Context, r *Reader) <-chan error {
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	return done
}

func clusterStreams(t *testing.T, c *testenv.Cluster, n int) []string {
	t.Helper()
	var keys []string
	masters := map[int]int{}
	for i := range n {
		k := fmt.Sprintf("cw:t%d:ns:topic:orders-%d", i%5, i)
		keys = append(keys, k)
		masters[c.Master(Slot(k))]++
	}
	if len(masters) != len(c.Nodes) {
		t.Fatalf("streams land on masters %v, want all %d", masters, len(c.Nodes))
	}
	return keys
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last state: %s", timeout, what, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func xaddAll(t *testing.T, rdb redis.UniversalClient, keys []string, per int) map[string][]string {
	t.Helper()
	ctx := context.Background()
	ids := map[string][]string{}
	cmds := map[string][]*redis.StringCmd{}
	if _, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range keys {
			for i := range per {
				cmds[k] = append(cmds[k], p.XAdd(ctx, &redis.XAddArgs{Stream: k, Values: []any{"payload", fmt.Sprint(i)}}))
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("xadd: %v", err)
	}
	for k, cs := range cmds {
		for _, c := range cs {
			ids[k] = append(ids[k], c.Val())
		}
	}
	return ids
}

// TestSlotMatchesCluster compares Slot with CLUSTER KEYSLOT.
func TestSlotMatchesCluster(t *testing.T) {
	c := testenv.StartCluster(t, 3)
	rdb := c.Nodes[0].Client(t)
	ctx := context.Background()
	var keys []string
	for i := range 2000 {
		keys = append(keys, fmt.Sprintf("cw:tenant-%d:ns%d:topic:name-%d", i%37, i%3, i))
	}
	keys = append(keys, "{t1}:a", "a{t1}b", "a{}b{c}", "x{{y}}", "ü{ß}", "")
	cmds := make([]*redis.IntCmd, len(keys))
	if _, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			cmds[i] = p.ClusterKeySlot(ctx, k)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for i, k := range keys {
		if got, want := Slot(k), int(cmds[i].Val()); got != want {
			t.Errorf("Slot(%q) = %d, CLUSTER KEYSLOT says %d", k, got, want)
		}
	}
}

// TestClusterReader reads streams on every master of a 3-master cluster:
// first this consumer's own pending entries, then new ones, each exactly
// once, through the slot-grouped pipelined reads; and acks them.
func TestClusterReader(t *testing.T) {
	_, rdb, keys := startClusterStreams(t, 40)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	want := xaddAll(t, rdb, keys, 30)
	// Leave 5 entries of every stream pending on this consumer, as after a
	// crash: they must be read again first.
	for _, k := range keys {
		if err := EnsureGroup(ctx, rdb, k, "persister"); err != nil {
			t.Fatal(err)
		}
		if err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: "persister", Consumer: "c1", Streams: []string{k, ">"}, Count: 5, Block: -1,
		}).Err(); err != nil {
			t.Fatal(err)
		}
	}

	rec, streams := newClusterRec(rdb, keys)
	screened := map[string]int{}
	var smu sync.Mutex
	r := NewReader(rdb, ReaderConfig{
		Group: "persister", Consumer: "c1", Count: 100, Block: 200 * time.Millisecond, Poll: 20 * time.Millisecond,
		Screen: func(_ context.Context, stream string, msgs []redis.XMessage) []redis.XMessage {
			smu.Lock()
			screened[stream] += len(msgs)
			smu.Unlock()
			return msgs
		},
	}, streams, rec.handle, quiet())
	if r.slots == nil {
		t.Fatal("reader of a cluster client does not use the slot reader")
	}
	done := runReader(ctx, r)

	total := len(keys) * 30
	waitFor(t, 30*time.Second, "every entry handled", func() (bool, string) {
		n := rec.count()
		return n >= total, fmt.Sprintf("%d of %d", n, total)
	})
	// New entries after the backlog, while the reader polls.
	more := xaddAll(t, rdb, keys, 3)
	for k, ids := range more {
		want[k] = append(want[k], ids...)
	}
	total += len(keys) * 3
	waitFor(t, 30*time.Second, "new entries handled", func() (bool, string) {
		n := rec.count()
		return n >= total, fmt.Sprintf("%d of %d", n, total)
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}

	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, k := range keys {
		if !slices.Equal(rec.got[k], want[k]) {
			t.Errorf("%s: handled %d ids, want %d in order (first got %v)", k, len(rec.got[k]), len(want[k]), head(rec.got[k]))
		}
		if screened[k] != 5 {
			t.Errorf("%s: %d own pending entries screened, want 5", k, screened[k])
		}
		p, err := rdb.XPending(context.Background(), k, "persister").Result()
		if err != nil || p.Count != 0 {
			t.Errorf("%s: pending %v (err %v), want 0 after acks", k, p, err)
		}
	}
}

func head(s []string) []string {
	if len(s) > 3 {
		return s[:3]
	}
	return s
}

// TestClusterReaderNodeDown kills one master: the streams of the other two
// are still read; after a restart (empty, no persistence) the reader
// recreates the groups on its streams and reads what is added there.
func TestClusterReaderNodeDown(t *testing.T) {
	c, rdb, keys, rec, streams := startClusterOneEach(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var emu sync.Mutex
	errs := 0
	r := NewReader(rdb, ReaderConfig{
		Group: "persister", Consumer: "c1", Count: 100, Block: 200 * time.Millisecond, Poll: 20 * time.Millisecond,
		OnError: func(string, error) { emu.Lock(); errs++; emu.Unlock() },
	}, streams, rec.handle, quiet())
	done := runReader(ctx, r)
	waitFirstEntries(t, rec, len(keys))

	c.Nodes[2].Kill(t)
	dead, live := splitByMaster(c, keys, 2)
	// go-redis needs a moment to see the node gone; keep adding to the
	// live streams until the reader has read them.
	before := rec.count()
	waitFor(t, 30*time.Second, "live streams read while a master is down", func() (bool, string) {
		_, _ = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range live {
				p.XAdd(ctx, &redis.XAddArgs{Stream: k, Values: []any{"payload", "x"}})
			}
			return nil
		})
		n := rec.count() - before
		return n >= 3*len(live), fmt.Sprintf("%d read", n)
	})
	emu.Lock()
	if errs == 0 {
		t.Errorf("no read error reported while a master was down")
	}
	emu.Unlock()

	c.Nodes[2].Restart(t)
	waitFor(t, 30*time.Second, "restarted master back", func() (bool, string) {
		err := rdb.Ping(ctx).Err()
		info, _ := c.Nodes[2].Client(t).ClusterInfo(ctx).Result()
		return err == nil && strings.Contains(info, "cluster_state:ok"), info
	})
	// The restarted master is empty: the reader finds NOGROUP and drops
	// the vanished streams; XADD creates them anew, discovery (here: Set)
	// hands them back, and the reader creates the group at 0.
	var added int
	waitFor(t, 30*time.Second, "streams of the restarted master read", func() (bool, string) {
		if added == 0 {
			added = xaddAllQuiet(ctx, rdb, dead)
		}
		streams.Set(keys)
		rec.mu.Lock()
		defer rec.mu.Unlock()
		missing := 0
		for _, k := range dead {
			if len(rec.got[k]) < 2 {
				missing++
			}
		}
		return added > 0 && missing == 0, fmt.Sprintf("%d of %d dead-master streams without their new entry (added %d)", missing, len(dead), added)
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func xaddAllQuiet(ctx context.Context, rdb redis.UniversalClient, keys []string) int {
	n := 0
	for _, k := range keys {
		if rdb.XAdd(ctx, &redis.XAddArgs{Stream: k, Values: []any{"payload", "after"}}).Err() == nil {
			n++
		}
	}
	if n < len(keys) {
		return 0
	}
	return n
}

// TestClusterAckAndClaim checks the per-key operations on a cluster: one
// Acker call acks streams of every master (the pipeline is split by slot),
// NOGROUP is no error, and the claim sweeper claims a dead consumer's
// entries on every master and then deletes the consumer.
func TestClusterAckAndClaim(t *testing.T) {
	c := testenv.StartCluster(t, 3)
	rdb := c.Client(t)
	ctx := context.Background()
	keys := clusterStreams(t, c, 24)
	xaddAll(t, rdb, keys, 4)
	read := func(consumer string, count int64) map[string][]string {
		out := map[string][]string{}
		for _, k := range keys {
			if err := EnsureGroup(ctx, rdb, k, "persister"); err != nil {
				t.Fatal(err)
			}
			res, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
				Group: "persister", Consumer: consumer, Streams: []string{k, ">"}, Count: count, Block: -1,
			}).Result()
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range res[0].Messages {
				out[k] = append(out[k], m.ID)
			}
		}
		return out
	}
	pending := func() int64 {
		var n int64
		for _, k := range keys {
			p, err := rdb.XPending(ctx, k, "persister").Result()
			if err != nil {
				t.Fatal(err)
			}
			n += p.Count
		}
		return n
	}

	// Two entries per stream read by "alive" and acked in one call, with a
	// stream that has no group mixed in.
	ids := read("alive", 2)
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: "cw:t9:ns:topic:nogroup", Values: []any{"a", "b"}}).Err(); err != nil {
		t.Fatal(err)
	}
	ids["cw:t9:ns:topic:nogroup"] = []string{"1-1"}
	if err := NewAcker(rdb, "persister").Ack(ctx, ids); err != nil {
		t.Fatalf("Ack across masters: %v", err)
	}
	if n := pending(); n != 0 {
		t.Fatalf("pending %d after one Ack of every stream, want 0", n)
	}
	if err := EnsureGroup(ctx, rdb, "cw:t9:ns:topic:absent", "persister"); !errors.Is(err, ErrStreamGone) {
		t.Errorf("EnsureGroup on a missing key: %v, want ErrStreamGone", err)
	}

	// Two more per stream left pending by "dead".
	read("dead", 2)
	rec, streams := newClusterRec(rdb, keys)
	cl := NewClaimer(rdb, ClaimerConfig{
		Group: "persister", Consumer: "alive", MinIdle: time.Millisecond, Interval: time.Hour, Count: 1,
		IdleDelete: time.Millisecond,
	}, streams, rec.handle, quiet())
	time.Sleep(20 * time.Millisecond)
	st, err := cl.Sweep(ctx)
	if err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	if st.Claimed != 2*len(keys) {
		t.Errorf("claimed %d, want %d", st.Claimed, 2*len(keys))
	}
	if n := pending(); n != 0 {
		t.Errorf("pending %d after the claimed entries were acked, want 0", n)
	}
	deleted := st.ConsumersDeleted // "dead" had nothing left once claimed
	time.Sleep(20 * time.Millisecond)
	st, err = cl.Sweep(ctx)
	if err != nil {
		t.Fatalf("second Sweep: %v", err)
	}
	if deleted += st.ConsumersDeleted; deleted != len(keys) {
		t.Errorf("deleted %d idle consumers, want %d (\"dead\" on every stream)", deleted, len(keys))
	}
}

// xreadgroupCalls sums cmdstat_xreadgroup calls over the masters.
func xreadgroupCalls(t *testing.T, c *testenv.Cluster) int64 {
	t.Helper()
	var total int64
	for _, n := range c.Nodes {
		info, err := n.Client(t).Info(context.Background(), "commandstats").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(info, "\n") {
			rest, ok := strings.CutPrefix(line, "cmdstat_xreadgroup:calls=")
			if !ok {
				continue
			}
			var calls int64
			fmt.Sscanf(rest, "%d", &calls)
			total += calls
		}
	}
	return total
}

// TestClusterReaderIdleBackoff checks that quiet streams are polled at most
// once per IdlePoll once their wait has grown, not once per Poll, and that
// an entry added to a quiet stream is still read.
func TestClusterReaderIdleBackoff(t *testing.T) {
	c, rdb, keys, rec, streams := startClusterOneEach(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := NewReader(rdb, ReaderConfig{
		Group: "persister", Consumer: "c1", Count: 100, Block: time.Second,
		Poll: 10 * time.Millisecond, IdlePoll: 200 * time.Millisecond,
	}, streams, rec.handle, quiet())
	done := runReader(ctx, r)
	waitFirstEntries(t, rec, len(keys))
	time.Sleep(time.Second) // every wait has grown to IdlePoll
	before := xreadgroupCalls(t, c)
	const quietFor = 2 * time.Second
	time.Sleep(quietFor)
	calls := xreadgroupCalls(t, c) - before
	// At Poll this would be ~30 × 200 = 6000 commands; at IdlePoll ~300.
	// Slots are distinct per stream here, so a command is a stream.
	limit := int64(len(keys)) * int64(quietFor/(200*time.Millisecond)+2)
	t.Logf("%d XREADGROUP calls over %s for %d quiet streams (limit %d)", calls, quietFor, len(keys), limit)
	if calls > limit {
		t.Errorf("%d XREADGROUP calls in %s of quiet, want at most %d", calls, quietFor, limit)
	}
	xaddAll(t, rdb, keys[:1], 1)
	waitFor(t, 30*time.Second, "entry on a quiet stream read", func() (bool, string) {
		return rec.count() == len(keys)+1, fmt.Sprint(rec.count())
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestClusterReaderMasterHung pauses one master (SIGSTOP: connections stay
// open, nothing answers): the streams of the other masters are still read,
// and once it resumes, its streams too, each entry exactly once.
func TestClusterReaderMasterHung(t *testing.T) {
	c := testenv.StartCluster(t, 3)
	// The daemon's client options (internal/redisconn).
	rdb := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs: c.Addrs(), ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second, ContextTimeoutEnabled: true,
	})
	defer rdb.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	keys := clusterStreams(t, c, 30)
	want := xaddAll(t, rdb, keys, 1)
	rec, streams := newClusterRec(rdb, keys)
	r := NewReader(rdb, ReaderConfig{
		Group: "persister", Consumer: "c1", Count: 100, Block: 200 * time.Millisecond,
		Poll: 10 * time.Millisecond, IdlePoll: 50 * time.Millisecond,
	}, streams, rec.handle, quiet())
	done := runReader(ctx, r)
	waitFirstEntries(t, rec, len(keys))
	hung, live := splitByMaster(c, keys, 1)
	// Entries for the master about to hang go in first.
	for k, ids := range xaddAll(t, rdb, hung, 2) {
		want[k] = append(want[k], ids...)
	}
	c.Nodes[1].Pause(t)
	pausedAt := time.Now()
	paused := true
	defer func() {
		if paused {
			c.Nodes[1].Resume(t)
		}
	}()
	liveRdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{c.Nodes[0].Addr}, ReadTimeout: 500 * time.Millisecond})
	defer liveRdb.Close()
	rounds := 0
	waitFor(t, 60*time.Second, "live streams read while a master hangs", func() (bool, string) {
		rounds++
		for _, k := range live {
			id, err := liveRdb.XAdd(ctx, &redis.XAddArgs{Stream: k, Values: []any{"payload", "live"}}).Result()
			if err != nil {
				return false, err.Error()
			}
			want[k] = append(want[k], id)
		}
		rec.mu.Lock()
		defer rec.mu.Unlock()
		behind := 0
		for _, k := range live {
			if len(rec.got[k]) < len(want[k])-1 {
				behind++
			}
		}
		return rounds >= 5 && behind == 0, fmt.Sprintf("round %d: %d live streams behind", rounds, behind)
	})
	t.Logf("live streams kept up for %d rounds, %s after the pause", rounds, time.Since(pausedAt).Round(time.Millisecond))
	c.Nodes[1].Resume(t)
	resumedAt := time.Now()
	paused = false
	waitFor(t, 60*time.Second, "every entry read once the master resumed", func() (bool, string) {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		for _, k := range keys {
			if !slices.Equal(rec.got[k], want[k]) {
				return false, fmt.Sprintf("%s: got %d ids, want %d", k, len(rec.got[k]), len(want[k]))
			}
		}
		return true, ""
	})
	t.Logf("every entry read %s after the master resumed", time.Since(resumedAt).Round(time.Millisecond))
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}
