package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/testenv"
)

// handRecorder is a Handler that keeps what it was handed, in order.
type handRecorder struct {
	mu       sync.Mutex
	got      []string // stream/id
	nilBody  []string // stream/id of entries handed without a body
	screened []string // stream/id seen by Screen (re-read pending entries)
	fail     error    // returned by the handler when set
}

func (rc *handRecorder) handle(_ context.Context, stream string, msgs []redis.XMessage) error {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, m := range msgs {
		rc.got = append(rc.got, stream+"/"+m.ID)
		if m.Values == nil {
			rc.nilBody = append(rc.nilBody, stream+"/"+m.ID)
		}
	}
	return rc.fail
}

func (rc *handRecorder) screen(_ context.Context, stream string, msgs []redis.XMessage) []redis.XMessage {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, m := range msgs {
		rc.screened = append(rc.screened, stream+"/"+m.ID)
	}
	return msgs
}

func (rc *handRecorder) snapshot() (got, nilBody, screened []string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]string(nil), rc.got...), append([]string(nil), rc.nilBody...), append([]string(nil), rc.screened...)
}

// addN appends n entries to stream and returns their ids.
func addN(t *testing.T, rdb *redis.Client, stream string, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		id, err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: stream, Values: []string{"payload", fmt.Sprintf(`{"i":%d}`, i)}}).Result()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, stream+"/"+id)
	}
	return ids
}

// startReader runs a single-node reader of keys until stop is called; stop
// returns Run's error.
func startReader(t *testing.T, rdb *redis.Client, consumer string, keys []string, rc *handRecorder) (stop func() error) {
	t.Helper()
	s := NewStreams()
	s.Set(keys)
	r := NewReader(rdb, ReaderConfig{Group: "persister", Consumer: consumer, Count: 100, Block: 50 * time.Millisecond, Screen: rc.screen},
		s, rc.handle, quiet())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]int{}
	for _, x := range a {
		m[x]++
	}
	for _, x := range b {
		if m[x]--; m[x] < 0 {
			return false
		}
	}
	return true
}

// The single-node reader's delivery rules, each on a fresh redis-server
// database: new entries of every stream exactly once; after a restart its
// own pending entries first (through Screen, trimmed ones without a body),
// then new ones; a group that vanishes is recreated at 0; a stream that is
// gone is dropped; a handler error stops it.
func TestReader(t *testing.T) {
	rs := testenv.StartRedis(t)
	rdb := rs.Client(t)
	ctx := context.Background()
	fresh := func(t *testing.T) {
		t.Helper()
		if err := rdb.FlushAll(ctx).Err(); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("new entries of every stream exactly once", func(t *testing.T) {
		fresh(t)
		keys := []string{"cw:t:ns:topic:a", "cw:t:ns:topic:b", "cw:t:ns:dlq:a"}
		var want []string
		for _, k := range keys {
			want = append(want, addN(t, rdb, k, 30)...)
		}
		rc := &handRecorder{}
		stop := startReader(t, rdb, "c1", keys, rc)
		for _, k := range keys { // more while it runs
			want = append(want, addN(t, rdb, k, 20)...)
		}
		waitFor(t, 15*time.Second, "all handed", func() (bool, string) {
			got, _, _ := rc.snapshot()
			return len(got) >= len(want), fmt.Sprintf("%d of %d", len(got), len(want))
		})
		time.Sleep(200 * time.Millisecond) // nothing more may come
		if err := stop(); err != nil {
			t.Fatalf("Run = %v", err)
		}
		got, nilBody, screened := rc.snapshot()
		if !sameSet(got, want) {
			t.Errorf("handed %d entries, want each of the %d exactly once", len(got), len(want))
		}
		if len(nilBody) != 0 || len(screened) != 0 {
			t.Errorf("nil bodies %v, screened %v; want none (nothing was pending)", nilBody, screened)
		}
	})

	t.Run("own pending first after a restart, trimmed ones without a body", func(t *testing.T) {
		fresh(t)
		key := "cw:t:ns:topic:p"
		first, _, stop := readAdded(t, rdb, key, 10)
		_ = stop() // nothing acked: all 10 pending on c1
		if err := rdb.XDel(ctx, key, first[0][len(key)+1:], first[1][len(key)+1:]).Err(); err != nil {
			t.Fatal(err)
		}
		later := addN(t, rdb, key, 5)
		rc2 := &handRecorder{}
		stop = startReader(t, rdb, "c1", []string{key}, rc2)
		waitHanded(t, rc2, 15, "pending then new")
		_ = stop()
		got, nilBody, screened := rc2.snapshot()
		if !sameSet(got[:10], first) || !sameSet(got[10:], later) {
			t.Errorf("order: got %v; want the 10 pending entries before the 5 new ones", got)
		}
		if !sameSet(nilBody, first[:2]) {
			t.Errorf("entries without a body = %v, want the two deleted while pending %v", nilBody, first[:2])
		}
		if !sameSet(screened, first) {
			t.Errorf("screened %v, want exactly the re-read pending entries", screened)
		}
	})

	t.Run("a vanished group is recreated at 0", func(t *testing.T) {
		fresh(t)
		key := "cw:t:ns:topic:g"
		want, rc, stop := readAdded(t, rdb, key, 5)
		// Redis restarted empty / purgeTopic: stream and group gone, then
		// the producer writes again.
		if err := rdb.Del(ctx, key).Err(); err != nil {
			t.Fatal(err)
		}
		want = append(want, addN(t, rdb, key, 7)...)
		waitHanded(t, rc, 12, "entries after the group vanished")
		_ = stop()
		if got, _, _ := rc.snapshot(); !sameSet(got, want) {
			t.Errorf("handed %v, want %v", got, want)
		}
	})

	t.Run("a stream that is gone is dropped from the set", func(t *testing.T) {
		fresh(t)
		live, gone := "cw:t:ns:topic:live", "cw:t:ns:topic:gone"
		want := addN(t, rdb, live, 3)
		s := NewStreams()
		s.Set([]string{live, gone})
		rc := &handRecorder{}
		r := NewReader(rdb, ReaderConfig{Group: "persister", Consumer: "c1", Count: 10, Block: 50 * time.Millisecond}, s, rc.handle, quiet())
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- r.Run(rctx) }()
		waitFor(t, 15*time.Second, "live stream read, gone one dropped", func() (bool, string) {
			got, _, _ := rc.snapshot()
			keys, _ := s.Get()
			return len(got) == 3 && len(keys) == 1, fmt.Sprintf("handed %d, streams %v", len(got), keys)
		})
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run = %v", err)
		}
		if got, _, _ := rc.snapshot(); !sameSet(got, want) {
			t.Errorf("handed %v, want %v", got, want)
		}
		if n, _ := rdb.Exists(ctx, gone).Result(); n != 0 {
			t.Errorf("the gone stream was created (MKSTREAM must not be used)")
		}
	})

	t.Run("a handler error stops the reader with it", func(t *testing.T) {
		fresh(t)
		key := "cw:t:ns:topic:e"
		addN(t, rdb, key, 3)
		boom := errors.New("boom")
		rc := &handRecorder{fail: boom}
		s := NewStreams()
		s.Set([]string{key})
		r := NewReader(rdb, ReaderConfig{Group: "persister", Consumer: "c1", Count: 10, Block: 50 * time.Millisecond}, s, rc.handle, quiet())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		select {
		case err := <-done:
			if !errors.Is(err, boom) {
				t.Errorf("Run = %v, want the handler's error", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not stop on a handler error")
		}
	})
}

// waitHanded waits up to 15s until rc has been handed n entries.
func waitHanded(t *testing.T, rc *handRecorder, n int, what string) {
	t.Helper()
	waitFor(t, 15*time.Second, what, func() (bool, string) {
		got, _, _ := rc.snapshot()
		return len(got) == n, fmt.Sprintf("%d of %d", len(got), n)
	})
}

// readAdded adds n entries to key, starts reader c1 on it and waits until
// it has handed all n; it returns their ids, the recorder and stop.
func readAdded(t *testing.T, rdb *redis.Client, key string, n int) ([]string, *handRecorder, func() error) {
	t.Helper()
	ids := addN(t, rdb, key, n)
	rc := &handRecorder{}
	stop := startReader(t, rdb, "c1", []string{key}, rc)
	waitHanded(t, rc, n, "first read")
	return ids, rc, stop
}
