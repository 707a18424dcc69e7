package lag

import (
	"context"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/testenv"
)

// On Redis Cluster the pipeline is split by slot and the script is loaded
// on every master; measurements and loss counting work as on one server.
func TestMeasureOnCluster(t *testing.T) {
	cl := testenv.StartCluster(t, 3)
	rdb := cl.Client(t)
	ctx := context.Background()
	ms := NewMeasurer(rdb, group, 1000, true)

	var keys []string
	masters := map[int]bool{}
	for i := 0; len(masters) < 3 || len(keys) < 12; i++ {
		k := fmt.Sprintf("cw:t:ns:topic:c%d", i)
		keys = append(keys, k)
		masters[cl.Master(int(redisSlot(k)))] = true
	}
	for i, k := range keys {
		for j := range 20 {
			if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: k, Values: []string{"payload", fmt.Sprint(j)}}).Err(); err != nil {
				t.Fatal(err)
			}
		}
		if err := rdb.XGroupCreate(ctx, k, group, "0").Err(); err != nil {
			t.Fatal(err)
		}
		// The group has read (and stored) one entry.
		res, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: "c", Streams: []string{k, ">"}, Count: 1, Block: -1}).Result()
		if err != nil {
			t.Fatal(err)
		}
		if err := rdb.XAck(ctx, k, group, res[0].Messages[0].ID).Err(); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 { // every other stream: trimmed to 5, 14 entries never read
			if err := rdb.XTrimMaxLen(ctx, k, 5).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	for pass := range 2 {
		res, errs := ms.Measure(ctx, keys)
		for i, r := range res {
			if errs[i] != nil {
				t.Fatalf("pass %d, %s: %v", pass, keys[i], errs[i])
			}
			wantLag, wantLost := int64(19), int64(0)
			if i%2 == 0 {
				wantLag = 5
				if pass == 0 {
					wantLost = 14
				}
			}
			if r.Lag != wantLag || r.Lost != wantLost {
				t.Errorf("pass %d, %s: lag/lost = %d/%d, want %d/%d", pass, keys[i], r.Lag, r.Lost, wantLag, wantLost)
			}
		}
	}
	t.Logf("%d streams on %d masters measured twice", len(keys), len(masters))
}

// redisSlot is the cluster hash slot of key (no hash tags in these keys).
func redisSlot(key string) uint16 {
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc % 16384
}
