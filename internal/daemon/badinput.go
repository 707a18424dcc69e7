package daemon

import (
	"context"

	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/batch"
	"github.com/chronow/persister/internal/dlq"
	"github.com/chronow/persister/internal/rescue"
	"github.com/chronow/persister/internal/topics"
)

// memoEntries bounds how many "last error" records are kept for poison
// dead letters.
const memoEntries = 10000

// setupBadInput builds the parts that deal with input that cannot be stored
// the usual way (internal/rescue, and internal/dlq's poison) and the topics
// metadata (internal/topics). It runs in New, before the tenant pipelines
// are built.
func (d *Daemon) setupBadInput() {
	p := d.cfg.Persister
	memo := dlq.NewMemo(memoEntries)
	cfg := rescue.Config{Layout: d.layout, WriteTimeout: p.WriteTimeout}
	d.rescuer = rescue.NewRescuer(cfg, d.sink, memo, d.m, d.log.With("part", "rescue"))
	d.poison = dlq.NewPoison(dlq.PoisonConfig{Config: cfg, Group: p.Group, MaxDeliveries: int64(p.MaxDeliveries)},
		d.rdb, d.sink, d.acker, memo, d.m, d.log.With("part", "poison"))
	d.topics = topics.New(topics.Config{Layout: d.layout, WriteTimeout: p.WriteTimeout},
		d.rdb, d.sink, d.log.With("part", "topics"))
}

// screen dead-letters the poison among entries re-read from a pending list
// (own drain or claimed) and returns the rest.
func (d *Daemon) screen(ctx context.Context, stream string, msgs []redis.XMessage) []redis.XMessage {
	return d.poison.Screen(ctx, stream, msgs)
}

var _ batch.Rescuer = (*rescue.Rescuer)(nil) // the daemon hands it to every batcher
