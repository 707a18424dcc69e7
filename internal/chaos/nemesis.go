package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// Fault kinds.
const (
	FaultKill9        = "kill9-replica"   // SIGKILL a replica, restart it after For
	FaultSIGTERM      = "sigterm-replica" // SIGTERM a replica (under load), restart it after For
	FaultPause        = "sigstop-server"  // SIGSTOP redis-server or a FerretDB for For, then SIGCONT
	FaultRedisRestart = "redis-restart"   // SIGKILL redis-server, relaunch from its AOF after For
	FaultTenantDBDown = "tenant-db-down"  // SIGKILL the FerretDB of one tenant, relaunch after For
	FaultTrim         = "xtrim-below-group"
	FaultLatency      = "latency" // Toxiproxy latency (Param ms, jitter Param/2) for For
	FaultStall        = "stall"   // Toxiproxy timeout toxic with timeout 0: no data flows for For
	FaultCut          = "cut"     // Toxiproxy reset_peer: connections reset for For
)

// Fault is one scheduled fault.
type Fault struct {
	At     time.Duration `json:"at"`
	Kind   string        `json:"kind"`
	Target string        `json:"target"`
	For    time.Duration `json:"for"`
	Param  int           `json:"param,omitempty"`
}

func (f Fault) String() string {
	s := fmt.Sprintf("+%7.2fs %-18s %-28s for %5.2fs", f.At.Seconds(), f.Kind, f.Target, f.For.Seconds())
	if f.Param != 0 {
		s += fmt.Sprintf(" param %d", f.Param)
	}
	return s
}

// lock names what a fault holds while it runs: its server, replica, proxy
// or stream.
func (f Fault) lock() string {
	switch f.Kind {
	case FaultPause, FaultRedisRestart, FaultTenantDBDown:
		return "server:" + f.Target
	}
	return f.Target
}

// Proxies the nemesis may poison: the daemons' connections to each server.
var toxicTargets = []string{"proxy:redis", "proxy:mongo-a", "proxy:mongo-b"}

// Schedule derives the fault schedule from the seed alone: the same seed,
// duration and replica count give the same schedule.
func Schedule(seed int64, d time.Duration, replicas int) []Fault {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x63686169)) //nolint:gosec // a test schedule
	dur := func(lo, hi float64) time.Duration {
		return time.Duration((lo + rng.Float64()*(hi-lo)) * float64(time.Second)).Round(10 * time.Millisecond)
	}
	type kind struct {
		name   string
		weight int
	}
	kinds := []kind{{FaultKill9, 5}, {FaultSIGTERM, 2}, {FaultPause, 4}, {FaultRedisRestart, 2}, {FaultTenantDBDown, 2},
		{FaultTrim, 3}, {FaultLatency, 3}, {FaultStall, 3}, {FaultCut, 3}}
	total := 0
	for _, k := range kinds {
		total += k.weight
	}
	busy := map[string]time.Duration{} // target -> busy until
	var out []Fault
	t := 2 * time.Second
	for {
		t += dur(0.2, 2.5)
		if t >= d {
			break
		}
		n := rng.IntN(total)
		var k string
		for _, c := range kinds {
			if n < c.weight {
				k = c.name
				break
			}
			n -= c.weight
		}
		f := Fault{At: t, Kind: k}
		switch k {
		case FaultKill9:
			f.Target, f.For = fmt.Sprintf("replica-%d", rng.IntN(replicas)), dur(0.1, 4)
		case FaultSIGTERM:
			f.Target, f.For = fmt.Sprintf("replica-%d", rng.IntN(replicas)), dur(0.1, 2)
		case FaultPause:
			f.Target, f.For = []string{"redis", "mongo-a", "mongo-b"}[rng.IntN(3)], dur(0.5, 7)
		case FaultRedisRestart:
			f.Target, f.For = "redis", dur(0, 3)
		case FaultTenantDBDown:
			f.Target, f.For = "mongo-b", dur(1, 10)
		case FaultTrim:
			f.Target = fmt.Sprintf("%s%s:%s:%s:%s", prefix, tenants[rng.IntN(len(tenants))], namespaces[rng.IntN(len(namespaces))],
				[]string{"topic", "topic", "dlq"}[rng.IntN(3)], topics[rng.IntN(len(topics))])
		case FaultLatency:
			f.Target, f.For, f.Param = toxicTargets[rng.IntN(len(toxicTargets))], dur(1, 10), 20+rng.IntN(800)
		case FaultStall:
			f.Target, f.For = toxicTargets[rng.IntN(len(toxicTargets))], dur(0.5, 7)
		case FaultCut:
			f.Target, f.For = toxicTargets[rng.IntN(len(toxicTargets))], dur(0.1, 2)
		}
		// Faults of one target do not overlap (a server is paused or
		// restarted, not both); faults of different targets do. A fault
		// ends by the end of the fault period. A SIGTERM takes up to the
		// grace period more.
		lock := f.lock()
		hold := f.For
		if f.Kind == FaultSIGTERM {
			hold += 7 * time.Second
		}
		if busy[lock] > f.At || f.At+hold > d {
			continue
		}
		busy[lock] = f.At + hold + 200*time.Millisecond
		out = append(out, f)
	}
	return out
}

// nemesis applies a schedule to the world.
type nemesis struct {
	w      *world
	hist   *history
	counts map[string]int
	errs   []string
	mu     sync.Mutex
	// locks serialize the faults of one target, should one outlast its
	// slot in the schedule (a slow SIGTERM, a slow relaunch).
	locks map[string]*sync.Mutex
}

// trimRecord is one XTRIM: every entry of Stream below MinID is gone;
// Pending were delivered to the group and not acked when it happened.
type trimRecord struct {
	Stream  string   `json:"stream"`
	MinID   string   `json:"min_id"`
	Removed int64    `json:"removed"`
	Pending []string `json:"pending"`
}

func (n *nemesis) count(kind string) {
	n.mu.Lock()
	n.counts[kind]++
	n.mu.Unlock()
}

func (n *nemesis) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	n.hist.logf("nemesis error: %s", msg)
	n.mu.Lock()
	n.errs = append(n.errs, msg)
	n.mu.Unlock()
}

// run applies every fault at its time (each in its own goroutine, all
// awaited) and returns when the last one has healed.
func (n *nemesis) run(ctx context.Context, start time.Time, faults []Fault) {
	n.locks = map[string]*sync.Mutex{}
	for _, f := range faults {
		if n.locks[f.lock()] == nil {
			n.locks[f.lock()] = &sync.Mutex{}
		}
	}
	var wg sync.WaitGroup
	for _, f := range faults {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(start.Add(f.At))):
			}
			n.apply(ctx, f)
		}()
	}
	wg.Wait()
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func (n *nemesis) apply(ctx context.Context, f Fault) {
	l := n.locks[f.lock()]
	l.Lock()
	defer l.Unlock()
	n.hist.logf("fault start %s", f)
	w := n.w
	switch f.Kind {
	case FaultKill9, FaultSIGTERM:
		rp := w.replica(f.Target)
		if !rp.running() {
			n.hist.logf("fault %s: %s already down", f.Kind, f.Target)
			return
		}
		n.count(f.Kind)
		sig, timeout := syscall.SIGKILL, time.Duration(0)
		if f.Kind == FaultSIGTERM {
			sig, timeout = syscall.SIGTERM, w.cfg.grace()+20*time.Second
			if waited, up := rp.waitUp(10 * time.Second); !up || waited > time.Second {
				n.hist.logf("fault %s: %s answered /healthz after %s (up: %v)", f.Kind, f.Target, waited.Round(time.Millisecond), up)
			}
		}
		code, err := rp.stop(sig, timeout)
		if err != nil {
			n.fail("%s %s: %v", f.Kind, f.Target, err)
		} else if f.Kind == FaultSIGTERM && code != 0 {
			n.fail("%s %s: exit code %d, want 0 (SIGTERM: store what is in hand, or leave it pending when the grace period ends, and exit 0)", f.Kind, f.Target, code)
		}
		n.hist.logf("fault %s: %s exited (code %d)", f.Kind, f.Target, code)
		sleepCtx(ctx, f.For)
		if err := rp.start(); err != nil {
			n.fail("restart %s: %v", f.Target, err)
		}
	case FaultPause:
		n.count(f.Kind)
		sv := w.server(f.Target)
		if err := sv.pause(); err != nil {
			n.fail("pause %s: %v", f.Target, err)
			return
		}
		sleepCtx(ctx, f.For)
		if err := sv.resume(); err != nil {
			n.fail("resume %s: %v", f.Target, err)
		}
	case FaultRedisRestart, FaultTenantDBDown:
		n.count(f.Kind)
		sv := w.server(f.Target)
		if err := sv.kill(); err != nil {
			n.fail("kill %s: %v", f.Target, err)
		}
		sleepCtx(ctx, f.For)
		if err := sv.relaunch(); err != nil {
			n.fail("relaunch %s: %v", f.Target, err)
		}
	case FaultTrim:
		n.trim(ctx, f.Target)
	case FaultLatency, FaultStall, FaultCut:
		n.count(f.Kind)
		p := w.proxy(f.Target)
		name := fmt.Sprintf("%s-%d", f.Kind, f.At.Milliseconds())
		var err error
		switch f.Kind {
		case FaultLatency:
			err = w.px.addToxic(p, name, "latency", "downstream", fmt.Sprintf(`{"latency":%d,"jitter":%d}`, f.Param, f.Param/2))
		case FaultStall:
			err = w.px.addToxic(p, name, "timeout", "downstream", `{"timeout":0}`)
		case FaultCut:
			err = w.px.addToxic(p, name, "reset_peer", "upstream", `{"timeout":0}`)
		}
		if err != nil {
			n.fail("%v", err)
			return
		}
		sleepCtx(ctx, f.For)
		if err := w.px.removeToxic(p, name); err != nil {
			n.fail("remove toxic %s: %v", name, err)
		}
	}
	n.hist.logf("fault end   %s", f)
}

// trimsKey is a stream where the trim script records every trim, in the same
// atomic step: the checker reads it, so a trim whose reply was lost (Redis
// paused or restarted while it ran) is still known exactly.
const trimsKey = "chaos:trims"

// trimScript trims a stream below the group's position, atomically with
// reading which of the removed entries were pending: KEYS[1] the stream,
// KEYS[2] trimsKey, ARGV[1] the group. It returns {min_id, removed,
// pending ids}, or {} when the group has not read anything yet.
const trimScript = `
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local last = nil
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, ld
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i+1] end
    if g[i] == 'last-delivered-id' then ld = g[i+1] end
  end
  if name == ARGV[1] then last = ld end
end
if not last or last == '0-0' then return {} end
local ids = {}
for _, p in ipairs(redis.call('XPENDING', KEYS[1], ARGV[1], '-', '(' .. last, 1000000)) do
  ids[#ids + 1] = p[1]
end
local n = redis.call('XTRIM', KEYS[1], 'MINID', last)
redis.call('XADD', KEYS[2], '*', 'stream', KEYS[1], 'min_id', last, 'removed', n, 'pending', table.concat(ids, ','))
return {last, n, ids}
`

func (n *nemesis) trim(ctx context.Context, stream string) {
	res, err := n.w.rdb.Eval(ctx, trimScript, []string{stream, trimsKey}, group).Slice()
	if err != nil {
		// Redis may be paused or down: the trim may still happen later;
		// the checker reads what happened from trimsKey.
		n.hist.logf("trim %s: no answer: %v (the checker reads %s)", stream, err, trimsKey)
		n.count(FaultTrim + " (no answer)")
		return
	}
	if len(res) == 0 {
		n.hist.logf("trim %s: nothing delivered yet", stream)
		return
	}
	n.count(FaultTrim)
	n.hist.logf("trim done %s below %v: %v removed, %d of them pending", stream, res[0], res[1], len(res[2].([]any)))
}

// readTrims returns every trim recorded in trimsKey.
func readTrims(ctx context.Context, rdb *redis.Client) ([]trimRecord, error) {
	msgs, err := rdb.XRange(ctx, trimsKey, "-", "+").Result()
	if err != nil {
		return nil, fmt.Errorf("xrange %s: %w", trimsKey, err)
	}
	var out []trimRecord
	for _, m := range msgs {
		rec := trimRecord{Stream: fmt.Sprint(m.Values["stream"]), MinID: fmt.Sprint(m.Values["min_id"])}
		fmt.Sscan(fmt.Sprint(m.Values["removed"]), &rec.Removed)
		if p := fmt.Sprint(m.Values["pending"]); p != "" {
			rec.Pending = strings.Split(p, ",")
		}
		out = append(out, rec)
	}
	return out, nil
}
