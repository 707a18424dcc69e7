package sharedmem

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/retry"

	"github.com/chronow/persister/metrics"
)

// Notification event classes (label values of persister_sm_notifications_total).
const (
	EventWrite   = "write"
	EventDelete  = "delete"
	EventIgnored = "ignored"
)

// note is one keyspace notification of a shared-memory key.
type note struct {
	key   keyspace.Key
	event string // EventWrite or EventDelete
}

// eventClass maps a keyspace event name to what it means for the warm copy.
// Expiry and eviction are normal for the hot tier and change nothing; an
// explicit delete (DEL, UNLINK, GETDEL: "del") or a key moved away is a
// delete; every other event on a string key may have changed its value.
func eventClass(event string) string {
	switch event {
	case "del", "rename_from", "move_from":
		return EventDelete
	case "expired", "evicted", "expire", "persist", "new":
		return EventIgnored
	}
	return EventWrite
}

// channelPattern returns the keyspace channel pattern of every
// shared-memory key of the layout in Redis database db (in FormAuto, the
// single prefix's pattern, which the doubled keys match too).
func channelPattern(db int, layout keyspace.Layout) string {
	return keyspaceChannelPrefix(db) + layout.Pattern(keyspace.KindSharedMemory)
}

func keyspaceChannelPrefix(db int) string {
	return "__keyspace@" + strconv.Itoa(db) + "__:"
}

// masters returns a client per master: the cluster's masters, or the one
// client.
func (c *Carrier) masters(ctx context.Context) ([]*redis.Client, error) {
	switch r := c.rdb.(type) {
	case *redis.ClusterClient:
		var mu sync.Mutex
		var nodes []*redis.Client
		err := r.ForEachMaster(ctx, func(_ context.Context, n *redis.Client) error {
			mu.Lock()
			defer mu.Unlock()
			nodes = append(nodes, n)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("list cluster masters: %w", err)
		}
		slices.SortFunc(nodes, func(a, b *redis.Client) int { return strings.Compare(a.Options().Addr, b.Options().Addr) })
		return nodes, nil
	case *redis.Client:
		return []*redis.Client{r}, nil
	}
	return nil, fmt.Errorf("unsupported redis client %T", c.rdb)
}

func addrs(nodes []*redis.Client) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.Options().Addr
	}
	return out
}

// liveLoop subscribes to the keyspace notifications of shared-memory keys on
// every master and turns them into observations, until ctx ends. A failed
// subscription is retried; while it is down, reconcile carries the values.
func (c *Carrier) liveLoop(ctx context.Context) error {
	notes := make(chan note, 4096)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return c.consume(gctx, notes) })
	g.Go(func() error { return c.supervise(gctx, notes) })
	return g.Wait()
}

// supervise keeps one subscription per master, restarting them all when one
// fails or the set of masters changes.
func (c *Carrier) supervise(ctx context.Context, notes chan<- note) error {
	var failures retry.Failures
	for ctx.Err() == nil {
		err := c.subscribeAll(ctx, notes)
		c.m.SMLiveCapture.Set(0)
		if ctx.Err() != nil {
			return nil
		}
		c.m.RedisErrors.WithLabelValues(metrics.OpSMSubscribe).Inc()
		n := failures.Fail(c.log, "shared memory: keyspace subscription failed; values arrive through reconcile until it is back",
			err, "reconcile_interval", c.cfg.ReconcileInterval.String())
		c.kickReconcile()
		wait := min(time.Duration(n)*time.Second, 30*time.Second)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
	return nil
}

// subscribeAll runs one subscription per master until one fails, the set of
// masters changes (cluster), or ctx ends.
func (c *Carrier) subscribeAll(ctx context.Context, notes chan<- note) error {
	nodes, err := c.masters(ctx)
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	ready := make(chan struct{}, len(nodes))
	for _, n := range nodes {
		g.Go(func() error { return c.subscribe(gctx, n, notes, ready) })
	}
	if _, ok := c.rdb.(*redis.ClusterClient); ok {
		g.Go(func() error { return c.watchMasters(gctx, addrs(nodes)) })
	}
	g.Go(func() error {
		for range nodes {
			select {
			case <-gctx.Done():
				return nil
			case <-ready:
			}
		}
		c.setLive(true)
		return nil
	})
	err = g.Wait()
	c.setLive(false)
	if err == nil && ctx.Err() == nil {
		err = errors.New("subscription ended")
	}
	return err
}

// errMastersChanged restarts the subscriptions.
var errMastersChanged = errors.New("cluster masters changed")

func (c *Carrier) watchMasters(ctx context.Context, have []string) error {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		nodes, err := c.masters(ctx)
		if err != nil {
			continue
		}
		if !slices.Equal(addrs(nodes), have) {
			return fmt.Errorf("%w: %v -> %v", errMastersChanged, have, addrs(nodes))
		}
	}
}

// subscribe runs one PSUBSCRIBE on one server and forwards its
// notifications. go-redis reconnects and subscribes again by itself; a
// repeated subscription confirmation means the connection dropped and
// notifications may have been lost, so it asks for a reconcile pass.
func (c *Carrier) subscribe(ctx context.Context, node *redis.Client, notes chan<- note, ready chan<- struct{}) error {
	pattern := channelPattern(node.Options().DB, c.cfg.Layout)
	chPrefix := keyspaceChannelPrefix(node.Options().DB)
	ps := node.PSubscribe(ctx, pattern)
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		return fmt.Errorf("PSUBSCRIBE %s on %s: %w", pattern, node.Options().Addr, err)
	}
	ready <- struct{}{}
	ch := ps.ChannelWithSubscriptions(redis.WithChannelSize(4096))
	for {
		var msg any
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case msg, ok = <-ch:
		}
		if !ok {
			return fmt.Errorf("subscription on %s closed", node.Options().Addr)
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			c.log.Info("shared memory: keyspace subscription re-established; reconciling what may have been missed", "addr", node.Options().Addr)
			c.kickReconcile()
		case *redis.Message:
			n, ok := c.parseNote(strings.TrimPrefix(m.Channel, chPrefix), m.Payload)
			if !ok {
				continue
			}
			select {
			case <-ctx.Done():
				return nil
			case notes <- n:
			}
		}
	}
}

// parseNote turns a notification into a note, counting what it skips.
func (c *Carrier) parseNote(key, event string) (note, bool) {
	class := eventClass(event)
	if class == EventDelete && !c.cfg.Tombstone {
		class = EventIgnored
	}
	c.m.SMNotifications.WithLabelValues(class).Inc()
	if class == EventIgnored {
		return note{}, false
	}
	k, ok := c.parseKey(key)
	if !ok {
		return note{}, false
	}
	return note{key: k, event: class}, true
}

// consume batches notifications, reads the values and hands them to the
// writer. Notifications of one key within a batch collapse into one read.
func (c *Carrier) consume(ctx context.Context, notes <-chan note) error {
	const maxBatch = 512
	for {
		var first note
		select {
		case <-ctx.Done():
			return nil
		case first = <-notes:
		}
		events := map[string]string{first.key.String(): first.event}
		keys := []keyspace.Key{first.key}
	drain:
		for len(keys) < maxBatch {
			select {
			case n := <-notes:
				s := n.key.String()
				if prev, seen := events[s]; seen {
					if n.event == EventDelete || prev == EventDelete {
						events[s] = EventDelete
					}
					continue
				}
				events[s] = n.event
				keys = append(keys, n.key)
			default:
				break drain
			}
		}
		known := make([]string, len(keys)) // always read the value
		res, err := capture(ctx, c.rdb, keys, known)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			c.m.RedisErrors.WithLabelValues(metrics.OpSMGet).Inc()
			c.log.Warn("shared memory: reading notified values failed; reconcile will find them", "keys", len(keys), "err", err)
			c.kickReconcile()
			continue
		}
		obs := make([]Observation, 0, len(res))
		for _, r := range res {
			switch r.status {
			case statusValue:
				obs = append(obs, Observation{Key: r.key, Version: r.version, Value: r.value, Hash: r.hash, Source: SourceLive})
			case statusMissing:
				// Gone since the notification. Only a delete makes a
				// tombstone; a key that expired keeps its warm copy.
				if events[r.key.String()] == EventDelete && c.cfg.Tombstone {
					obs = append(obs, Observation{Key: r.key, Version: r.version, Deleted: true, Source: SourceLive})
				}
			case statusWrongType:
				c.m.SMKeysIgnored.WithLabelValues(IgnoredNotString).Inc()
			}
		}
		if !c.send(ctx, obs) {
			return nil
		}
	}
}
