package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
	"golang.org/x/sync/errgroup"

	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/message"
	"github.com/chronow/persister/internal/publisher"
)

// LatencyResult is the steady-load stage.
type LatencyResult struct {
	// Target and Achieved are entries/s.
	Target, Achieved float64
	Duration         time.Duration
	Entries          int
	// Acked holds XADD reply → acknowledged by the group, for every entry,
	// sorted. The daemon acknowledges an entry only after MongoDB
	// acknowledged its insert, so this bounds "→ visible" from above.
	Acked []time.Duration
	// Visible holds XADD reply → found by _id for the probed entries
	// (only with a probe rate; see Config.ProbeRate), sorted.
	Visible []time.Duration
	// CPU is the daemon's CPU time during the stage.
	CPU time.Duration
	// Flush is the daemons' bulk-write durations during the stage
	// (persister_flush_duration_seconds, successful writes).
	Flush Histogram
	// ServerCPU is the CPU time of each started server during the stage.
	ServerCPU map[string]time.Duration
	// Wall is the stage's elapsed time, for CPU shares.
	Wall time.Duration
}

// Quantile returns the q-quantile (nearest rank) of the Acked latencies.
func (r LatencyResult) Quantile(q float64) time.Duration { return quantile(r.Acked, q) }

func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

type probe struct {
	tenant, id string
	reply      time.Time
	next       time.Time
}

// latencyStage runs the steady load at half the drain rate (or the given
// rate), after a warm-up at that rate (LatencyWarmup, reported apart), and
// at a quarter, against the drain's daemon (or a warmed-up one).
func (r *runner) latencyStage(ctx context.Context) error {
	cfg, env := r.cfg, r.env
	if r.running == nil {
		// The streams must exist and be consumed before the clock
		// starts (discovery runs every 10s): drain a few entries each.
		_, ds, err := env.Drain(ctx, "latency-warmup", Mixed, 10*Mixed.Streams(), 1, true, nil)
		if err != nil {
			return err
		}
		r.running = ds
	}
	rate := cfg.LatencyRate
	if rate <= 0 {
		rate = r.rep.Drain.Rate() / 2
	}
	seq := cfg.Entries
	r.log.Info("steady latency warm-up", "rate", int(rate), "duration", cfg.LatencyWarmup.String())
	warm, err := env.Latency(ctx, Mixed, r.running, rate, cfg.LatencyWarmup, 0, seq)
	if err != nil {
		return err
	}
	r.rep.LatencyWarmup = &warm
	seq += warm.Entries + 1000
	r.log.Info("steady latency warm-up done", "entries", warm.Entries, "p50_ms", ms(warm.Quantile(.5)), "p99_ms", ms(warm.Quantile(.99)))
	r.log.Info("steady latency", "rate", int(rate), "duration", cfg.LatencyDuration.String(), "probes_per_s", cfg.ProbeRate)
	var profDone chan struct{}
	if cfg.ProfileDir != "" {
		profDone = make(chan struct{})
		go func() {
			defer close(profDone)
			secs := strconv.Itoa(max(1, int(cfg.LatencyDuration.Seconds())-1))
			if err := r.running[0].Fetch(ctx, "/debug/pprof/profile?seconds="+secs, filepath.Join(cfg.ProfileDir, "latency-cpu.pprof")); err != nil {
				r.log.Warn("latency cpu profile", "err", err)
			}
		}()
	}
	l, err := env.Latency(ctx, Mixed, r.running, rate, cfg.LatencyDuration, cfg.ProbeRate, seq)
	if profDone != nil {
		<-profDone
		if err := r.running[0].Fetch(ctx, "/metrics", filepath.Join(cfg.ProfileDir, "latency-metrics.txt")); err != nil {
			r.log.Warn("latency metrics", "err", err)
		}
	}
	if err != nil {
		return err
	}
	r.rep.Latency = &l
	r.log.Info("steady latency done", "entries", l.Entries, "probes", len(l.Visible),
		"p50_ms", ms(l.Quantile(.5)), "p99_ms", ms(l.Quantile(.99)), "max_ms", ms(l.Quantile(1)))
	// The same at half that rate, for the shape of the curve.
	low, err := env.Latency(ctx, Mixed, r.running, rate/2, cfg.LatencyDuration/3, 0, seq+l.Entries+1000)
	if err != nil {
		return err
	}
	r.rep.LatencyLow = &low
	r.log.Info("steady latency at half the rate done", "entries", low.Entries,
		"p50_ms", ms(low.Quantile(.5)), "p99_ms", ms(low.Quantile(.99)), "max_ms", ms(low.Quantile(1)))
	return nil
}

// Latency publishes entries of the layout at rate per second for d, with
// the daemons ds already running, and measures for every entry the time
// from its XADD reply to its acknowledgement (watchAcks); with probeRate >
// 0 also, for that many entries per second, the time until a find by _id
// returns the document. Entries are sent every 5 ms in one pipeline; every
// entry of a pipeline has the pipeline's reply time.
func (e *Env) Latency(ctx context.Context, l Layout, ds []*Daemon, rate float64, d time.Duration, probeRate float64, seq0 int) (LatencyResult, error) {
	res := LatencyResult{Target: rate, Duration: d}
	every := 0
	if probeRate > 0 {
		every = max(1, int(math.Round(rate/probeRate)))
	}
	probes := make(chan probe, 4096)
	acks := make(chan sent, 1<<16)
	cpu0, err := cpuOf(ds)
	if err != nil {
		return res, err
	}
	flush0, err := flushes(ctx, ds)
	if err != nil {
		return res, err
	}
	srv0, began := e.processCPU(), time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(probes)
		defer close(acks)
		var err error
		res.Entries, res.Achieved, err = e.produce(gctx, l, rate, d, seq0, every, acks, probes)
		return err
	})
	g.Go(func() error {
		var err error
		res.Acked, err = watchAcks(gctx, e.RDB, Group, acks, time.Minute)
		return err
	})
	g.Go(func() error {
		var err error
		res.Visible, err = e.watchProbes(gctx, probes)
		return err
	})
	if err := g.Wait(); err != nil {
		return res, err
	}
	cpu1, err := cpuOf(ds)
	if err != nil {
		return res, err
	}
	res.CPU = cpu1 - cpu0
	res.Wall = time.Since(began)
	res.ServerCPU = map[string]time.Duration{}
	for name, c := range e.processCPU() {
		if c0, ok := srv0[name]; ok {
			res.ServerCPU[name] = c - c0
		}
	}
	flush1, err := flushes(ctx, ds)
	if err != nil {
		return res, err
	}
	res.Flush = flush1.Sub(flush0)
	slices.Sort(res.Acked)
	slices.Sort(res.Visible)
	if len(res.Acked) != res.Entries {
		return res, fmt.Errorf("latency: %d entries acknowledged, %d sent", len(res.Acked), res.Entries)
	}
	return res, nil
}

// produce publishes entries of the layout at rate per second for d, every
// 5 ms in one pipeline, hands each entry to acks and every every-th (0:
// none) to probes, and returns the entries sent and the achieved rate.
func (e *Env) produce(ctx context.Context, l Layout, rate float64, d time.Duration, seq0, every int, acks chan<- sent, probes chan<- probe) (int, float64, error) {
	pub := &publisher.Publisher{RDB: e.RDB, Prefix: KeyPrefix}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	n := 0
	for time.Since(start) < d {
		due := int(rate*time.Since(start).Seconds()) - n
		if due > 0 {
			ms := make([]publisher.Message, due)
			for i := range ms {
				ms[i] = l.Message(seq0+n+i, e.PayloadBytes)
			}
			ids, err := pub.PublishBatch(ctx, ms)
			if err != nil {
				return n, 0, err
			}
			reply := time.Now()
			for i, m := range ms {
				id, err := parseStreamID(ids[i])
				if err != nil {
					return n, 0, err
				}
				select {
				case acks <- sent{stream: m.Key(KeyPrefix), id: id, reply: reply}:
				case <-ctx.Done():
					return n, 0, ctx.Err()
				}
				if every == 0 || (n+i)%every != 0 {
					continue
				}
				p := probe{tenant: m.Tenant, id: message.Identity(m.Namespace, m.Topic, ids[i]), reply: reply}
				select {
				case probes <- p:
				case <-ctx.Done():
					return n, 0, ctx.Err()
				}
			}
			n += due
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return n, 0, ctx.Err()
		}
	}
	return n, float64(n) / time.Since(start).Seconds(), nil
}

// A probe is first looked for probeFirst after its XADD reply, then every
// eighth of its age (between probeMin and probeMax): a measured latency is
// at most ~12% (or probeMin) above the truth, never below it, and a slow
// daemon is not buried under finds. Due probes are looked up concurrently.
const (
	probeFirst    = 5 * time.Millisecond
	probeMin      = 3 * time.Millisecond
	probeMax      = 100 * time.Millisecond
	probeParallel = 8
	probeGiveUp   = time.Minute
)

func nextProbe(p probe, now time.Time) time.Time {
	return now.Add(min(max(now.Sub(p.reply)/8, probeMin), probeMax))
}

// watchProbes looks each probe up by _id (the one filter FerretDB's SQLite
// backend answers from its primary key) until it is found, and returns the
// latencies, measured to the reply of the find that saw the document. It
// returns when probes is closed and every probe is found, or fails when one
// stays invisible for probeGiveUp.
func (e *Env) watchProbes(ctx context.Context, probes <-chan probe) ([]time.Duration, error) {
	var (
		out     []time.Duration
		pending []probe
		open    = true
		colls   = map[string]*mongo.Collection{}
	)
	coll := func(tenant string) *mongo.Collection {
		c := colls[tenant]
		if c == nil {
			c = e.Mongo.Database(DBName(tenant)).Collection(config.CollMessages)
			colls[tenant] = c
		}
		return c
	}
	take := func(p probe, ok bool) {
		if !ok {
			open = false
			return
		}
		p.next = p.reply.Add(probeFirst)
		pending = append(pending, p)
	}
	for open || len(pending) > 0 {
		if len(pending) == 0 {
			select {
			case p, ok := <-probes:
				take(p, ok)
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	intake:
		for open {
			select {
			case p, ok := <-probes:
				take(p, ok)
			default:
				break intake
			}
		}
		now := time.Now()
		var due []int
		wake := now.Add(probeMax)
		for i, p := range pending {
			if now.Before(p.next) {
				if p.next.Before(wake) {
					wake = p.next
				}
				continue
			}
			due = append(due, i)
		}
		found, err := lookup(ctx, coll, pending, due)
		if err != nil {
			return nil, err
		}
		now = time.Now()
		isDue := make(map[int]time.Time, len(due))
		for j, i := range due {
			isDue[i] = found[j]
		}
		kept := pending[:0]
		for i, p := range pending {
			at, polled := isDue[i]
			switch {
			case polled && !at.IsZero():
				out = append(out, at.Sub(p.reply))
				continue
			case polled:
				if now.Sub(p.reply) > probeGiveUp {
					return nil, fmt.Errorf("entry %s of tenant %s not visible %s after XADD", p.id, p.tenant, probeGiveUp)
				}
				p.next = nextProbe(p, now)
				if p.next.Before(wake) {
					wake = p.next
				}
			}
			kept = append(kept, p)
		}
		pending = kept
		if len(pending) > 0 && len(due) == 0 {
			var more <-chan probe
			if open {
				more = probes
			}
			select {
			case <-time.After(max(time.Until(wake), 200*time.Microsecond)):
			case p, ok := <-more:
				take(p, ok)
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	return out, nil
}

// lookup finds the due probes by _id, probeParallel at a time, and
// returns when each was found (zero: not yet).
func lookup(ctx context.Context, coll func(string) *mongo.Collection, pending []probe, due []int) ([]time.Time, error) {
	proj := options.FindOne().SetProjection(bson.D{{Key: "_id", Value: 1}})
	found := make([]time.Time, len(due))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(probeParallel)
	for j, i := range due {
		c, id := coll(pending[i].tenant), pending[i].id
		g.Go(func() error {
			err := c.FindOne(gctx, bson.D{{Key: "_id", Value: id}}, proj).Err()
			switch {
			case err == nil:
				found[j] = time.Now()
			case !errors.Is(err, mongo.ErrNoDocuments):
				return fmt.Errorf("find probe %s: %w", id, err)
			}
			return nil
		})
	}
	return found, g.Wait()
}

// flushes sums the daemons' successful bulk-write duration histograms.
func flushes(ctx context.Context, ds []*Daemon) (Histogram, error) {
	total := Histogram{}
	for _, d := range ds {
		h, err := d.ScrapeHistogram(ctx, "persister_flush_duration_seconds", `result="ok"`)
		if err != nil {
			return nil, err
		}
		for b, v := range h {
			total[b] += v
		}
	}
	return total, nil
}

func cpuOf(ds []*Daemon) (time.Duration, error) {
	var total time.Duration
	for _, d := range ds {
		u, err := ReadUsage(d.Pid())
		if err != nil {
			return 0, err
		}
		total += u.CPU
	}
	return total, nil
}
