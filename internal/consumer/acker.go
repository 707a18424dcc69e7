package consumer

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Acker acknowledges entries of many streams in one round trip.
type Acker struct {
	rdb   redis.UniversalClient
	group string
}

// NewAcker returns an Acker for group.
func NewAcker(rdb redis.UniversalClient, group string) *Acker {
	return &Acker{rdb: rdb, group: group}
}

// Ack sends XACK for every stream's ids. A stream or group that vanished
// (NOGROUP) has nothing left to acknowledge and is not an error.
func (a *Acker) Ack(ctx context.Context, ids map[string][]string) error {
	if len(ids) == 0 {
		return nil
	}
	cmds, err := a.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for stream, list := range ids {
			p.XAck(ctx, stream, a.group, list...)
		}
		return nil
	})
	if err == nil {
		return nil
	}
	for _, c := range cmds {
		if e := c.Err(); e != nil && !IsNoGroup(e) {
			return fmt.Errorf("xack: %w", e)
		}
	}
	return nil
}
