package consumer

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/budget"
	"github.com/chronow/persister/internal/testenv"
)

// A reader stops reading when the entries it handed on fill the budget, and
// goes on as they are released; every entry is read exactly once, and once
// the streams are drained only the idle read's small reservation is held.
func TestReaderWaitsForBudget(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rdb := testenv.StartRedis(t).Client(t)
	keys := []string{"cw:t:ns:topic:a", "cw:t:ns:topic:b"}
	pad := strings.Repeat("p", 1000)
	const perStream = 500
	for _, k := range keys {
		pipe := rdb.Pipeline()
		for i := range perStream {
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: k, Values: []string{"payload", fmt.Sprintf(`{"i":%d,"p":%q}`, i, pad)}})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	const limit = 64 << 10
	b := budget.New(limit)
	var (
		mu      sync.Mutex
		held    int64
		seen    = map[string]bool{}
		release = false
	)
	handle := func(_ context.Context, stream string, msgs []redis.XMessage) error {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range msgs {
			if seen[stream+"/"+m.ID] {
				return fmt.Errorf("%s %s read twice", stream, m.ID)
			}
			seen[stream+"/"+m.ID] = true
		}
		n := MessagesBytes(msgs)
		if release {
			b.Release(n)
		} else {
			held += n
		}
		return nil
	}
	streams := NewStreams()
	streams.Set(keys)
	r := NewReader(rdb, ReaderConfig{Group: testGroup, Consumer: "c1", Count: 500, Budget: b, Block: 100 * time.Millisecond},
		streams, handle, quiet())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()

	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(seen)
	}
	last, stable := -1, 0
	waitFor(t, 30*time.Second, "reads stopped at the budget", func() (bool, string) {
		n := count()
		if n > 0 && n == last {
			stable++
		} else {
			stable = 0
		}
		last = n
		time.Sleep(20 * time.Millisecond)
		return stable >= 10, fmt.Sprintf("%d read", n)
	})
	// ~1.1 KB per entry: 64 KiB hold about 57.
	if n := count(); n < 20 || n > 100 {
		t.Fatalf("read %d of %d entries with a %d-byte budget held, want about 57", n, 2*perStream, limit)
	}
	if u := b.Used(); u > limit*5/4 {
		t.Fatalf("budget used %d of %d while reads wait", u, limit)
	}

	mu.Lock()
	release = true
	b.Release(held)
	mu.Unlock()
	waitFor(t, 30*time.Second, "every entry read", func() (bool, string) {
		n := count()
		return n == 2*perStream, fmt.Sprintf("%d of %d", n, 2*perStream)
	})
	// Drained: the blocking read of the quiet streams holds at most
	// minRead entries' worth.
	waitFor(t, 10*time.Second, "only the idle read's reservation held", func() (bool, string) {
		u := b.Used()
		return u <= minRead*1200, fmt.Sprintf("%d bytes held", u)
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
