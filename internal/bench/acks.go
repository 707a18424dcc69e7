package bench

import (
	"context"
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
		poll  = ackMarks{group: group}
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
		marks, err := poll.marks(ctx, rdb, keys)
		if err != nil {
			return nil, fmt.Errorf("watch acks: %w", err)
		}
		now := time.Now()
		for i, k := range keys {
			last, oldest := marks[i].last, marks[i].oldest
			if last == nil {
				continue // the group is not there yet
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

// ackMarksScript returns, for each stream of KEYS, the group ARGV[1]'s
// last-delivered-id (false when the stream or group is missing) and the
// oldest id still pending in it (false when none is): one call per poll
// for every stream, so that the poller costs the machine little (the
// daemon and the servers it measures share its cores).
const ackMarksScript = `
local out = {}
for i, k in ipairs(KEYS) do
  local last, low = false, false
  local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', k)
  if ok then
    for _, g in ipairs(groups) do
      local name, ld
      for j = 1, #g, 2 do
        if g[j] == 'name' then name = g[j+1] elseif g[j] == 'last-delivered-id' then ld = g[j+1] end
      end
      if name == ARGV[1] then last = ld end
    end
  end
  if last then
    local p = redis.call('XPENDING', k, ARGV[1])
    if p[1] > 0 then low = p[2] end
  end
  out[i] = {last, low}
end
return out
`

// ackMark is what Redis says of one stream: nil last while its group is
// missing, nil oldest while nothing is pending.
type ackMark struct{ last, oldest *streamID }

// ackMarks asks Redis for the ack marks of streams: one script call on a
// single Redis, one per stream (pipelined, routed by key) on a cluster.
type ackMarks struct {
	group  string
	script *redis.Script
}

func (a *ackMarks) marks(ctx context.Context, rdb redis.UniversalClient, keys []string) ([]ackMark, error) {
	if a.script == nil {
		a.script = redis.NewScript(ackMarksScript)
		if err := a.script.Load(ctx, rdb).Err(); err != nil {
			return nil, fmt.Errorf("load the ack poller's script: %w", err)
		}
	}
	var rows []any
	if _, cluster := rdb.(*redis.ClusterClient); cluster {
		cmds := make([]*redis.Cmd, len(keys))
		if _, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, k := range keys {
				cmds[i] = a.script.EvalSha(ctx, p, []string{k}, a.group)
			}
			return nil
		}); err != nil {
			return nil, err
		}
		for _, c := range cmds {
			r, err := c.Slice()
			if err != nil {
				return nil, fmt.Errorf("ack marks: %w", err)
			}
			if len(r) != 1 {
				return nil, fmt.Errorf("ack marks of one stream: %d rows", len(r))
			}
			rows = append(rows, r[0])
		}
	} else {
		r, err := a.script.EvalSha(ctx, rdb, keys, a.group).Slice()
		if err != nil {
			return nil, err
		}
		rows = r
	}
	if len(rows) != len(keys) {
		return nil, fmt.Errorf("ack marks: %d rows for %d streams", len(rows), len(keys))
	}
	out := make([]ackMark, len(keys))
	for i, row := range rows {
		pair, ok := row.([]any)
		if !ok || len(pair) != 2 {
			return nil, fmt.Errorf("ack marks of %s: unexpected reply %v", keys[i], row)
		}
		for j, dst := range []**streamID{&out[i].last, &out[i].oldest} {
			s, ok := pair[j].(string)
			if !ok {
				continue // false: none
			}
			id, err := parseStreamID(s)
			if err != nil {
				return nil, fmt.Errorf("ack marks of %s: %w", keys[i], err)
			}
			*dst = &id
		}
	}
	return out, nil
}
