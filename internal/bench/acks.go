package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// sent is one entry the steady producer XADDed.
type sent struct {
	stream string
	id     streamID
	reply  time.Time
}

// streamID is a parsed stream entry id, ordered like Redis orders them.
type streamID struct{ ms, seq uint64 }

func parseStreamID(s string) (streamID, error) {
	a, b, ok := strings.Cut(s, "-")
	ms, err1 := strconv.ParseUint(a, 10, 64)
	seq, err2 := strconv.ParseUint(b, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		return streamID{}, fmt.Errorf("stream id %q: not ms-seq", s)
	}
	return streamID{ms, seq}, nil
}

func (a streamID) less(b streamID) bool {
	return a.ms < b.ms || (a.ms == b.ms && a.seq < b.seq)
}

// ackPoll is how often the acknowledgement watcher asks Redis.
const ackPoll = 5 * time.Millisecond

// watchAcks measures, for every entry it is given, the time from the XADD
// reply to the moment Redis shows it acknowledged by the group: delivered
// (id ≤ the group's last-delivered-id) and older than the oldest entry
// still pending (XPENDING). An entry acknowledged before an older one of
// its stream counts when the older one is, so the measure never runs early.
// The daemon acknowledges only after MongoDB acknowledged the insert, so
// this bounds "XADD reply → document visible" from above. It returns when
// entries is closed and every entry is acknowledged, or fails when one is
// not within giveUp.
func watchAcks(ctx context.Context, rdb redis.UniversalClient, group string, entries <-chan sent, giveUp time.Duration) ([]time.Duration, error) {
	var (
		out   []time.Duration
		queue = map[string][]sent{} // per stream, in XADD order
		open  = true
		tick  = time.NewTicker(ackPoll)
	)
	defer tick.Stop()
	outstanding := func() int {
		n := 0
		for _, q := range queue {
			n += len(q)
		}
		return n
	}
	for open || outstanding() > 0 {
		select {
		case s, ok := <-entries:
			if !ok {
				open = false
				continue
			}
			queue[s.stream] = append(queue[s.stream], s)
			continue
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
		var keys []string
		for k, q := range queue {
			if len(q) > 0 {
				keys = append(keys, k)
			}
		}
		if len(keys) == 0 {
			continue
		}
		infos := make([]*redis.XInfoGroupsCmd, len(keys))
		pends := make([]*redis.XPendingCmd, len(keys))
		_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, k := range keys {
				infos[i] = p.XInfoGroups(ctx, k)
				pends[i] = p.XPending(ctx, k, group)
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("watch acks: %w", err)
		}
		now := time.Now()
		for i, k := range keys {
			last, ok, err := lastDelivered(infos[i], group)
			if err != nil {
				return nil, fmt.Errorf("xinfo groups %s: %w", k, err)
			}
			if !ok {
				continue // the group is not there yet
			}
			pend, err := pends[i].Result()
			if err != nil {
				return nil, fmt.Errorf("xpending %s: %w", k, err)
			}
			var oldest *streamID
			if pend.Count > 0 {
				o, err := parseStreamID(pend.Lower)
				if err != nil {
					return nil, err
				}
				oldest = &o
			}
			q := queue[k]
			n := 0
			for _, s := range q {
				if last.less(s.id) || (oldest != nil && !s.id.less(*oldest)) {
					break
				}
				out = append(out, now.Sub(s.reply))
				n++
			}
			queue[k] = q[n:]
			if len(queue[k]) > 0 && now.Sub(queue[k][0].reply) > giveUp {
				return nil, fmt.Errorf("entry %s %d-%d not acknowledged %s after XADD", k, queue[k][0].id.ms, queue[k][0].id.seq, giveUp)
			}
		}
	}
	return out, nil
}

// lastDelivered returns the group's last-delivered-id from XINFO GROUPS.
func lastDelivered(cmd *redis.XInfoGroupsCmd, group string) (streamID, bool, error) {
	groups, err := cmd.Result()
	if err != nil {
		return streamID{}, false, err
	}
	for _, g := range groups {
		if g.Name == group {
			id, err := parseStreamID(g.LastDeliveredID)
			return id, err == nil, err
		}
	}
	return streamID{}, false, nil
}
