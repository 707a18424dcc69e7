package replay_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chronow/persister/internal/entry"
	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/publisher"
	"github.com/chronow/persister/internal/replay"
)

// BenchmarkReplay20k replays 20,000 topic entries (4 streams, ~1 KB
// payloads) into an empty database, then again (all present), then
// verifies. Run: go test -run '^$' -bench Replay20k -benchtime 1x ./internal/replay/
func BenchmarkReplay20k(b *testing.B) {
	ctx := context.Background()
	r := newRig(b, "acme")
	const total = 20000
	p := publisher.Publisher{RDB: r.rdb, Prefix: prefix, MaxLen: -1}
	payload := `{"text":"` + strings.Repeat("x", 1000) + `","n":1}`
	for s := range 4 {
		for off := 0; off < total/4; off += 1000 {
			var msgs []publisher.Message
			for range 1000 {
				msgs = append(msgs, publisher.Message{Tenant: "acme", Namespace: "app", Topic: fmt.Sprintf("t%d", s), Payload: payload})
			}
			if _, err := p.PublishBatch(ctx, msgs); err != nil {
				b.Fatal(err)
			}
		}
	}
	rp := replay.New(r.rdb, r.w, replay.Config{Layout: keyspace.Layout{Prefix: prefix}, Tenants: []string{"acme"}, Decoders: entry.Decoders()})
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		if err := r.db("acme").Drop(ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		rep, err := rp.Replay(ctx, replay.Filter{Range: replay.All})
		if err != nil || rep.Totals.Stored != total {
			b.Fatalf("replay: %v, %+v", err, rep.Totals)
		}
		b.ReportMetric(total/time.Since(start).Seconds(), "new-entries/s")
		start = time.Now()
		rep, err = rp.Replay(ctx, replay.Filter{Range: replay.All})
		if err != nil || rep.Totals.Present != total {
			b.Fatalf("second replay: %v, %+v", err, rep.Totals)
		}
		b.ReportMetric(total/time.Since(start).Seconds(), "present-entries/s")
		start = time.Now()
		v, err := rp.Verify(ctx, replay.Filter{Range: replay.All})
		if err != nil || !v.Complete() || v.Totals.Matched != total {
			b.Fatalf("verify: %v, %+v", err, v.Totals)
		}
		b.ReportMetric(total/time.Since(start).Seconds(), "verified-entries/s")
	}
}
