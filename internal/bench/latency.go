package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
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
	// Samples holds XADD reply → document visible for every probe.
	Samples []time.Duration
	// CPU is the daemon's CPU time during the stage.
	CPU time.Duration
}

// Quantile returns the q-quantile (nearest rank) of the samples.
func (r LatencyResult) Quantile(q float64) time.Duration { return quantile(r.Samples, q) }

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

// Latency publishes entries of the layout at rate per second for d, with
// the daemons ds already running, and measures for one entry in every
// rate/probeRate the time from the XADD reply to the moment a find by _id
// returns its document. Entries are sent every 5 ms in one pipeline; every
// entry of a pipeline has the pipeline's reply time.
func (e *Env) Latency(ctx context.Context, l Layout, ds []*Daemon, rate float64, d time.Duration, probeRate float64, seq0 int) (LatencyResult, error) {
	res := LatencyResult{Target: rate, Duration: d}
	every := max(1, int(math.Round(rate/probeRate)))
	probes := make(chan probe, 4096)
	cpu0, err := cpuOf(ds)
	if err != nil {
		return res, err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(probes)
		pub := &publisher.Publisher{RDB: e.RDB, Prefix: KeyPrefix}
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		start := time.Now()
		sent := 0
		for {
			el := time.Since(start)
			if el >= d {
				break
			}
			due := int(rate*el.Seconds()) - sent
			if due > 0 {
				ms := make([]publisher.Message, due)
				for i := range ms {
					ms[i] = l.Message(seq0+sent+i, e.PayloadBytes)
				}
				ids, err := pub.PublishBatch(gctx, ms)
				if err != nil {
					return err
				}
				reply := time.Now()
				for i, m := range ms {
					if (sent+i)%every != 0 {
						continue
					}
					p := probe{tenant: m.Tenant, id: message.Identity(m.Namespace, m.Topic, ids[i]), reply: reply, next: reply}
					select {
					case probes <- p:
					case <-gctx.Done():
						return gctx.Err()
					}
				}
				sent += due
			}
			select {
			case <-tick.C:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		res.Entries = sent
		res.Achieved = float64(sent) / time.Since(start).Seconds()
		return nil
	})
	var samples []time.Duration
	g.Go(func() error {
		var err error
		samples, err = e.watchProbes(gctx, probes)
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
	slices.Sort(samples)
	res.Samples = samples
	return res, nil
}

// probeEvery is how often one outstanding probe is looked for.
const probeEvery = 2 * time.Millisecond

// watchProbes looks each probe up by _id (the one filter FerretDB's SQLite
// backend answers from its primary key) until it is found, and returns the
// latencies. It returns when probes is closed and every probe is found, or
// fails when one stays invisible for a minute.
func (e *Env) watchProbes(ctx context.Context, probes <-chan probe) ([]time.Duration, error) {
	var (
		out     []time.Duration
		pending []probe
		open    = true
		colls   = map[string]*mongo.Collection{}
	)
	proj := options.FindOne().SetProjection(bson.D{{Key: "_id", Value: 1}})
	for open || len(pending) > 0 {
		if len(pending) == 0 && open {
			select {
			case p, ok := <-probes:
				if !ok {
					open = false
					continue
				}
				pending = append(pending, p)
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		for more := open; more; {
			select {
			case p, ok := <-probes:
				if !ok {
					open, more = false, false
					break
				}
				pending = append(pending, p)
			default:
				more = false
			}
		}
		now := time.Now()
		wait := probeEvery
		kept := pending[:0]
		for _, p := range pending {
			if now.Before(p.next) {
				wait = min(wait, p.next.Sub(now))
				kept = append(kept, p)
				continue
			}
			c := colls[p.tenant]
			if c == nil {
				c = e.Mongo.Database(DBName(p.tenant)).Collection(config.CollMessages)
				colls[p.tenant] = c
			}
			err := c.FindOne(ctx, bson.D{{Key: "_id", Value: p.id}}, proj).Err()
			switch {
			case err == nil:
				out = append(out, time.Since(p.reply))
				continue
			case !errors.Is(err, mongo.ErrNoDocuments):
				return nil, fmt.Errorf("find probe %s: %w", p.id, err)
			}
			if time.Since(p.reply) > time.Minute {
				return nil, fmt.Errorf("entry %s of tenant %s not visible a minute after XADD", p.id, p.tenant)
			}
			p.next = time.Now().Add(probeEvery)
			kept = append(kept, p)
		}
		pending = kept
		if len(pending) > 0 {
			select {
			case <-time.After(max(wait, 200*time.Microsecond)):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	return out, nil
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
