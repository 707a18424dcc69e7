package daemon_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chronow/persister/internal/e2e"
	"github.com/chronow/persister/internal/publisher"
)

// The memory budget bounds the entries in hand, not the backlog: with
// MongoDB stopped and a backlog ten times the budget, the daemon reads about
// a budget's worth and waits; once MongoDB is back every entry is stored
// once, and nothing is held but the idle readers' small reservations
// (every entry's bytes were given back).
func TestMemoryBudgetBoundsEntriesInHand(t *testing.T) {
	ctx := context.Background()
	rs, ms, rdb, _ := e2e.StartServers(t)
	tenants := []string{"mem-a", "mem-b", "mem-c"}
	const (
		n      = 3000
		budget = 256 << 10
	)
	pad := strings.Repeat("x", 1000)
	msgs := make([]publisher.Message, n)
	for i := range msgs {
		msgs[i] = publisher.Message{
			Tenant: tenants[i%len(tenants)], Namespace: "default", Topic: []string{"orders", "audit", "billing"}[(i/3)%3],
			Payload: fmt.Sprintf(`{"seq":%d,"pad":%q}`, i, pad),
		}
	}
	pub := &publisher.Publisher{RDB: rdb, Prefix: "cw:"}
	if _, err := pub.PublishBatch(ctx, msgs); err != nil {
		t.Fatal(err)
	}

	resume := pauseMongo(t, ms)
	run := e2e.Start(t, e2e.Env(t, rs.URL, ms.URI, tenants, map[string]string{
		"PERSISTER_METRICS_INTERVAL":   "200ms",
		"PERSISTER_MAX_INFLIGHT_BYTES": fmt.Sprint(budget),
	}))
	addr := waitAddr(t, run)

	// Reads stop at the budget: wait until the entries read stay put.
	var read, held, limit float64
	stable := 0
	e2e.Eventually(t, 60*time.Second, "reads stopped at the budget", func() (bool, string) {
		s, err := scrapeMetrics(addr)
		if err != nil {
			return false, err.Error()
		}
		r := s.sum("persister_entries_read_total")
		if r > 0 && r == read {
			stable++
		} else {
			stable = 0
		}
		read, held, limit = r, s.sum("persister_inflight_bytes"), s.sum("persister_inflight_bytes_limit")
		return stable >= 10, fmt.Sprintf("read %v, in hand %v bytes", read, held)
	})
	if limit != budget {
		t.Errorf("persister_inflight_bytes_limit = %v, want %d", limit, budget)
	}
	// About 1.2 KB per entry: a 256 KiB budget holds ~200 of the 3000.
	if read < 50 || read > 400 {
		t.Errorf("read %v of %d entries with MongoDB stopped and a %d-byte budget, want ~200", read, n, budget)
	}
	if held <= 0 || held > 1.25*budget {
		t.Errorf("persister_inflight_bytes = %v while waiting, want in (0, %v]", held, 1.25*budget)
	}
	var pending int64
	keys := map[string]bool{}
	for _, m := range msgs {
		keys[m.Key("cw:")] = true
	}
	for k := range keys {
		p, err := rdb.XPending(ctx, k, "persister").Result()
		if err != nil {
			t.Fatal(err)
		}
		pending += p.Count
	}
	if float64(pending) != read {
		t.Errorf("pending %d, entries read %v: every entry read must still be pending (nothing acked, nothing dropped)", pending, read)
	}
	t.Logf("MongoDB stopped: %v of %d entries read, %v bytes in hand of a %d-byte budget", read, n, held, budget)

	resume()
	// Once everything is stored, what is left held is the reservations of
	// the idle readers' blocking reads: 32 entries each (one reader per
	// tenant), never the entries themselves.
	idle := float64(len(tenants) * 32 * 2048)
	e2e.Eventually(t, 120*time.Second, "every entry stored, only idle reads' reservations held", func() (bool, string) {
		s, err := scrapeMetrics(addr)
		if err != nil {
			return false, err.Error()
		}
		stored := s.sum("persister_entries_stored_total", "collection", "messages")
		acked := s.sum("persister_entries_acked_total")
		held = s.sum("persister_inflight_bytes")
		entries := s.sum("persister_inflight_entries")
		return stored == n && acked == n && entries == 0 && held <= idle,
			fmt.Sprintf("stored %v acked %v, in hand %v entries %v bytes (idle reads may hold %v)", stored, acked, entries, held, idle)
	})
	t.Logf("drained: %v bytes held by the idle readers' reservations", held)
	if code, body := getStatus(addr, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if err := run.Stop(); err != nil {
		t.Fatal(err)
	}
}
