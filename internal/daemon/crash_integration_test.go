package daemon_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/chronow/persister/internal/e2e"
	"github.com/chronow/persister/internal/publisher"
)

// TestSIGKILLMidStreamRestart kills the real binary with SIGKILL while a
// producer writes, restarts it, and checks every entry is stored exactly once.
func TestSIGKILLMidStreamRestart(t *testing.T) {
	ctx := context.Background()
	bin := e2e.BuildBinary(t)
	rs, ms, rdb, mc := e2e.StartServers(t)
	pub := &publisher.Publisher{RDB: rdb, Prefix: "cw:"}
	var ledger e2e.Ledger

	env := e2e.Env(t, rs.URL, ms.URI, tenants, map[string]string{
		"PERSISTER_CONSUMER":   "crashy", // stable name: the restart drains its own PEL
		"PERSISTER_BATCH_SIZE": "50",
	})
	proc := e2e.StartProc(t, bin, env)

	// Producer: 40 batches of 25 entries, 50ms apart.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 40; i++ {
			ms := messages(25, i*25)
			ids, err := pub.PublishBatch(ctx, ms)
			if err != nil {
				t.Errorf("publish: %v", err)
				return
			}
			ledger.Add(ms, ids)
			time.Sleep(50 * time.Millisecond)
		}
	}()
	for kill := 0; kill < 3; kill++ {
		time.Sleep(600 * time.Millisecond)
		proc.Kill()
		time.Sleep(100 * time.Millisecond)
		proc.Start()
	}
	wg.Wait()

	e2e.WaitStored(ctx, t, mc, &ledger, tenants, 90*time.Second)
	e2e.WaitNothingPending(ctx, t, rdb, "persister", e2e.StreamKeys(ledger.Records(), "cw:"), 30*time.Second)
	code, err := proc.Term(20 * time.Second)
	if err != nil || code != 0 {
		t.Fatalf("SIGTERM: exit code %d, err %v; want 0", code, err)
	}
	rep := e2e.Verify(ctx, t, mc, &ledger, tenants)
	t.Logf("published %d, %s", ledger.Len(), rep)
}
