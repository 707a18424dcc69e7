package lag

import (
	"context"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/testenv"
)

// BenchmarkMeasure measures one pass over 1000 streams with a small lag
// (10 undelivered, 5 pending entries each): ns/op is the cost of a pass.
func BenchmarkMeasure(b *testing.B) {
	rdb := testenv.StartRedis(b).Client(b)
	ctx := context.Background()
	const streams = 1000
	keys := make([]string, streams)
	p := rdb.Pipeline()
	for i := range keys {
		keys[i] = fmt.Sprintf("cw:t:ns:topic:s%d", i)
		for j := range 20 {
			p.XAdd(ctx, &redis.XAddArgs{Stream: keys[i], Values: []string{"payload", fmt.Sprintf(`{"n":%d}`, j)}})
		}
		p.XGroupCreate(ctx, keys[i], group, "0")
	}
	if _, err := p.Exec(ctx); err != nil {
		b.Fatal(err)
	}
	for _, k := range keys {
		res, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: "c", Streams: []string{k, ">"}, Count: 10, Block: -1}).Result()
		if err != nil {
			b.Fatal(err)
		}
		for _, m := range res[0].Messages[:5] {
			rdb.XAck(ctx, k, group, m.ID)
		}
	}
	ms := NewMeasurer(rdb, group, DefaultCountCap, true)
	if _, errs := ms.Measure(ctx, keys); errs[0] != nil {
		b.Fatal(errs[0])
	}
	before, _ := rdb.Info(ctx, "commandstats").Result()
	b.ResetTimer()
	for range b.N {
		res, errs := ms.Measure(ctx, keys)
		if errs[0] != nil || res[0].Lag != 10 || res[0].Pending != 5 {
			b.Fatalf("got %+v %v", res[0], errs[0])
		}
	}
	b.StopTimer()
	after, _ := rdb.Info(ctx, "commandstats").Result()
	b.Logf("redis commandstats evalsha before:\n%s\nafter:\n%s", evalsha(before), evalsha(after))
}

func evalsha(info string) string {
	for _, line := range splitLines(info) {
		if len(line) > 20 && line[:20] == "cmdstat_evalsha:call" {
			return line
		}
	}
	return "(none)"
}

func splitLines(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}
