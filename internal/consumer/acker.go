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

// AckEach sends one XACK per id of stream (pipelined) and reports which
// ones this call acknowledged (XACK answered 1): an entry another consumer
// acknowledged meanwhile answers 0.
func (a *Acker) AckEach(ctx context.Context, stream string, ids []string) ([]bool, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	pipe := a.rdb.Pipeline()
	cmds := make([]*redis.IntCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.XAck(ctx, stream, a.group, id)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("xack %s: %w", stream, err)
	}
	out := make([]bool, len(ids))
	for i, c := range cmds {
		out[i] = c.Val() == 1
	}
	return out, nil
}
