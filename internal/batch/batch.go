// Package batch groups a tenant's decoded entries into bulk writes, flushed
// on count, bytes or linger time, and acknowledges exactly what the sink
// reports as stored.
package batch

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/hold"
	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/retry"
	"github.com/chronow/persister/internal/sink"
	"github.com/chronow/persister/metrics"
)

// Item is one decoded stream entry on its way to the database.
type Item struct {
	// Stream is the Redis key of the stream the entry came from.
	Stream string
	// ID is the stream entry id, acknowledged once the document is stored.
	ID string
	// Kind is the stream kind ("topic", "dlq"), for metrics.
	Kind string
	// Collection is where Doc goes.
	Collection string
	// Doc is the BSON document, with a deterministic _id.
	Doc []byte
	// Time is the stream id time, for the latency metric.
	Time time.Time
	// Attempts counts rescue attempts, to stop a rescue loop.
	Attempts int
	// Hold is the entry's hold on its memory budget, in-flight count and
	// in-hand record, let go when the entry leaves the batcher (finish).
	// The zero Hold holds nothing (replay).
	Hold hold.Hold
}

// Sink writes documents; see sink.Writer.
type Sink interface {
	Insert(ctx context.Context, tenant, collection string, docs [][]byte) ([]sink.Result, error)
}

// Slotter is implemented by sinks that bound the writes in flight across
// batchers (sink.Writer): the batcher takes a slot before each write,
// waiting with the flush's context, outside the write timeout, and ends it
// with what the write measured (its duration, documents and error: the
// adaptive limiter's input), or with no documents when it was not used.
type Slotter interface {
	Slot(ctx context.Context, tenant string) (done sink.Done, err error)
}

// unused gives back a slot taken for a write that did not happen.
func unused(d sink.Done) { d(0, 0, nil) }

// noSlot is the slot of a sink without slots.
func noSlot(time.Duration, int, error) {}

// Acker acknowledges stored entries (consumer.Acker).
type Acker = hold.Acker

// Rescuer stores another way what cannot be stored as usual, for the
// daemon, replay and dead letters alike (rescue.Rescuer): Rescue turns an item
// the database refused for good into an item that can be stored (a stub
// with the raw bytes kept aside, or a dead letter); RescueEntry does the
// same for an entry no document could be built for (e.g. one over the
// BSON limit). ok=false means the entry stays pending and is reported.
type Rescuer interface {
	Rescue(ctx context.Context, it Item, cause error) (replacement Item, ok bool)
	RescueEntry(ctx context.Context, key keyspace.Key, msg redis.XMessage, cause error) (replacement Item, ok bool)
}

// Config tunes a Batcher.
type Config struct {
	Tenant     string
	MaxItems   int
	MaxBytes   int
	Linger     time.Duration
	Inflight   int
	MaxBackoff time.Duration
	// WriteTimeout bounds one bulk write.
	WriteTimeout time.Duration
	// HaltedRetry is the wait between attempts while the tenant is halted.
	HaltedRetry time.Duration
}

// State is a tenant's write health, for readiness and logs.
type State struct {
	Halted  bool
	LastErr error
	Since   time.Time
}

// Batcher owns one tenant's current batch and its flushes.
type Batcher struct {
	cfg     Config
	sink    Sink
	acker   Acker
	rescuer Rescuer
	m       *metrics.Metrics
	log     *slog.Logger

	in chan Item

	mu    sync.Mutex
	state State

	halted atomic.Bool
}

// addQueue bounds the items waiting between Add and the batch: the batch
// itself holds up to MaxItems, so a deeper queue only holds more memory.
const addQueue = 64

// New creates a Batcher. rescuer may be nil.
func New(cfg Config, s Sink, a Acker, r Rescuer, m *metrics.Metrics, log *slog.Logger) *Batcher {
	if cfg.Inflight <= 0 {
		cfg.Inflight = 1
	}
	if cfg.HaltedRetry <= 0 {
		cfg.HaltedRetry = time.Minute
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	return &Batcher{
		cfg: cfg, sink: s, acker: a, rescuer: r, m: m, log: log.With("tenant", cfg.Tenant),
		in: make(chan Item, min(cfg.MaxItems, addQueue)),
	}
}

// Add hands an item to the batcher, blocking while it is full (backpressure).
func (b *Batcher) Add(ctx context.Context, it Item) error {
	select {
	case b.in <- it:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close tells the batcher no more items come; Run then flushes what it has
// and returns. Call it once, after every Add has returned.
func (b *Batcher) Close() { close(b.in) }

// Rescuer returns the rescuer the batcher was built with (may be nil).
func (b *Batcher) Rescuer() Rescuer { return b.rescuer }

// State returns the tenant's write health.
func (b *Batcher) State() State {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state
}

// job is a batch handed to a flush worker, with the write slot taken for
// its first insert (a no-op when the sink has no slots).
type job struct {
	items []Item
	slot  sink.Done
}

// Run batches until Close, then flushes the rest. ctx bounds the writes and
// acks: when it is cancelled, what is not stored stays pending in Redis.
//
// Group commit: a batch is ready when it is full or its linger time has
// passed; it is cut and handed to a flush worker only when a worker is
// free and a write slot of the connection (Slotter, shared with the other
// tenants) is taken for it. Until then it keeps taking items, up to full.
// While the sink is busy, batches grow instead of queueing: fewer, larger
// writes under load, no wait beyond the linger time when the sink keeps
// up, and the entries waiting hold no more memory than one batch.
func (b *Batcher) Run(ctx context.Context) error {
	jobs := make(chan job)
	done := make(chan struct{}, b.cfg.Inflight)
	var wg sync.WaitGroup
	for range b.cfg.Inflight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				b.flush(ctx, j.items, j.slot)
				done <- struct{}{}
			}
		}()
	}
	slots := b.slotter(ctx)
	defer wg.Wait()
	defer close(jobs)
	defer slots.stop()

	var (
		cur      []Item
		bytes    int
		lingered bool
		lastLen  int       // size of the last batch handed out
		busy     int       // jobs handed out, not done
		slot     sink.Done // a write slot taken for the ready batch
		timer    = time.NewTimer(time.Hour)
	)
	timer.Stop()
	full := func() bool { return len(cur) >= b.cfg.MaxItems || bytes >= b.cfg.MaxBytes }
	in := b.in
	for {
		ready := len(cur) > 0 && (lingered || full())
		if ready && busy < b.cfg.Inflight && slot == nil {
			slots.ask()
		}
		var out chan<- job
		if ready && busy < b.cfg.Inflight && slot != nil {
			out = jobs
		}
		take := in
		if full() {
			take = nil // backpressure: the batch waits for a worker and a slot
		}
		if take == nil && len(cur) == 0 && busy == 0 {
			if slot != nil {
				unused(slot)
			}
			return nil // closed, and everything written
		}
		var cancelled <-chan struct{}
		if ready {
			cancelled = ctx.Done()
		}
		select {
		case it, ok := <-take:
			if !ok {
				in = nil
				lingered = true // closing: flush what is left now
				continue
			}
			if len(cur) == 0 {
				timer.Reset(b.cfg.Linger)
				lingered = false
				// Sized like the last batch: full-size slices for a
				// tenant with a backlog, small ones for a quiet tenant
				// (with many tenants, MaxItems-sized slices add up).
				cur = make([]Item, 0, min(max(lastLen, 16), b.cfg.MaxItems))
			}
			cur = append(cur, it)
			bytes += len(it.Doc)
		case rel := <-slots.granted:
			slot, slots.asked = rel, false
		case out <- job{items: cur, slot: slot}:
			lastLen = len(cur)
			timer.Stop()
			cur, bytes, lingered, slot = nil, 0, in == nil, nil
			busy++
		case <-done:
			busy--
		case <-timer.C:
			lingered = true
		case <-cancelled:
			// Stopped before the batch could be written: it stays
			// pending in Redis.
			_ = b.finish(ctx, cur, false)
			timer.Stop()
			cur, bytes = nil, 0
			if slot != nil {
				unused(slot)
				slot = nil
			}
		}
	}
}

// slotAsker takes write slots for Run in the background, one at a time, so
// that Run keeps filling the batch while it waits for one.
type slotAsker struct {
	req     chan struct{}
	granted chan sink.Done
	quit    chan struct{}
	wg      sync.WaitGroup
	asked   bool
}

// slotter starts the batcher's slot asker. Without a Slotter sink every
// ask is granted at once.
func (b *Batcher) slotter(ctx context.Context) *slotAsker {
	a := &slotAsker{req: make(chan struct{}, 1), granted: make(chan sink.Done), quit: make(chan struct{})}
	sl, _ := b.sink.(Slotter)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		for {
			select {
			case <-a.req:
			case <-a.quit:
				return
			}
			var release sink.Done = noSlot
			if sl != nil {
				r, err := sl.Slot(ctx, b.cfg.Tenant)
				if err != nil {
					// ctx ended: Run abandons the batch; grant a no-op
					// so that its ask is answered.
					r = noSlot
				}
				release = r
			}
			select {
			case a.granted <- release:
			case <-a.quit:
				unused(release)
				return
			}
		}
	}()
	return a
}

// ask requests a slot unless one is already on its way.
func (a *slotAsker) ask() {
	if a.asked {
		return
	}
	a.asked = true
	a.req <- struct{}{}
}

// stop ends the asker, releasing a slot it holds, and waits for it.
func (a *slotAsker) stop() {
	close(a.quit)
	a.wg.Wait()
}

// finish is the way an entry leaves the batcher, whatever happened to it
// (stored, already there, rescued, refused, or the process stopping): it
// hands the entries to hold.Leave, the one way out of a tenant pipeline.
// With acked, they are acknowledged (one XACK round trip for all their
// streams, retried while Redis is unreachable, until ctx ends) and counted;
// either way their holds are let go. Entries not acknowledged stay pending
// in Redis and are read again later (the own pending drain at start, or a
// claim): never lost.
func (b *Batcher) finish(ctx context.Context, items []Item, acked bool) error {
	way := hold.GivenUp
	if acked {
		way = hold.Acked
	}
	outs := make([]hold.Out, len(items))
	for i, it := range items {
		outs[i] = hold.Out{Stream: it.Stream, ID: it.ID, Hold: it.Hold}
	}
	if _, err := hold.Leave(ctx, retryingAcker{b}, outs, way); err != nil {
		return err
	}
	if acked {
		b.countAcked(items)
	}
	return nil
}

// flush writes items until each is stored and acked, rescued, or ctx ends.
// slot is the write slot taken for the first insert (nil: take one).
func (b *Batcher) flush(ctx context.Context, items []Item, slot sink.Done) {
	defer func() {
		if slot != nil {
			unused(slot) // nothing was written with it
		}
	}()
	b.m.BatchSize.Observe(float64(len(items)))
	pending := items
	for attempt := 0; len(pending) > 0; attempt++ {
		if attempt > 0 {
			wait := b.backoff(attempt)
			if b.halted.Load() {
				wait = b.cfg.HaltedRetry
			}
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				_ = b.finish(ctx, pending, false)
				return
			}
		}
		var stored []Item
		stored, pending = b.writeOnce(ctx, pending, &slot)
		if len(stored) > 0 {
			if err := b.finish(ctx, stored, true); err != nil {
				// Not acked: stays pending in Redis and is stored again
				// (as a duplicate) when re-read.
				_ = b.finish(ctx, pending, false)
				return
			}
		}
		if ctx.Err() != nil {
			_ = b.finish(ctx, pending, false)
			return
		}
	}
}

// writeOnce makes one bulk insert per collection under the write rule
// (Insert) and returns the items now stored and those to try again. The
// first insert uses *slot when set (and clears it); the others take a write
// slot of their own.
func (b *Batcher) writeOnce(ctx context.Context, items []Item, slot *sink.Done) (stored, retry []Item) {
	byColl, order := groupByCollection(items)
	stored = make([]Item, 0, len(items))
	for _, coll := range order {
		group := byColl[coll]
		var release sink.Done = noSlot
		if *slot != nil {
			release, *slot = *slot, nil
		} else if sl, ok := b.sink.(Slotter); ok {
			r, err := sl.Slot(ctx, b.cfg.Tenant)
			if err != nil {
				// ctx ended while waiting: nothing was written.
				retry = append(retry, group...)
				continue
			}
			release = r
		}
		start := time.Now()
		out := Insert(ctx, b.sink, b.cfg.Tenant, coll, group, b.rescuer, b.cfg.WriteTimeout)
		elapsed := time.Since(start)
		congestion := out.Err
		if out.Err != nil && out.Decisions[0] == Halt {
			congestion = nil // an operator's problem, not the server's load
		}
		release(elapsed, len(group), congestion)
		if out.Err != nil {
			b.m.FlushDuration.WithLabelValues(metrics.ResultError).Observe(elapsed.Seconds())
			label := metrics.ClassUnknownOutcome
			if out.Decisions[0] == Halt {
				label = metrics.ClassFatal
			}
			b.m.WriteErrors.WithLabelValues(b.cfg.Tenant, label).Inc()
			b.setErr(out.Err, out.Decisions[0] == Halt)
			retry = append(retry, group...)
			continue
		}
		b.m.FlushDuration.WithLabelValues(metrics.ResultOK).Observe(elapsed.Seconds())
		b.setErr(nil, false)
		var s []Item
		s, retry = b.apply(ctx, group, out, retry)
		stored = append(stored, s...)
		b.countStored(coll, out)
	}
	return stored, retry
}

// apply sorts a group by the rule's decisions: stored items are returned,
// items to write again (and replacements) appended to retry, refused ones
// given up (left pending in Redis).
func (b *Batcher) apply(ctx context.Context, group []Item, out Outcome, retry []Item) (stored, _ []Item) {
	for i, d := range out.Decisions {
		it := group[i]
		switch d {
		case Inserted, Present:
			stored = append(stored, it)
		case Rescued:
			b.m.WriteErrors.WithLabelValues(b.cfg.Tenant, metrics.ClassPermanent).Inc()
			retry = append(retry, out.Replacements[i])
		case Refused:
			b.m.WriteErrors.WithLabelValues(b.cfg.Tenant, metrics.ClassPermanent).Inc()
			b.log.Error("entry refused by MongoDB and not rescued; left pending", "stream", it.Stream, "id", it.ID, "err", out.Errs[i])
			_ = b.finish(ctx, []Item{it}, false)
		case Halt:
			b.m.WriteErrors.WithLabelValues(b.cfg.Tenant, metrics.ClassFatal).Inc()
			b.setErr(out.Errs[i], true)
			retry = append(retry, it)
		default:
			b.m.WriteErrors.WithLabelValues(b.cfg.Tenant, metrics.ClassRetryable).Inc()
			retry = append(retry, it)
		}
	}
	return stored, retry
}

// countStored counts the group's stored documents by outcome.
func (b *Batcher) countStored(coll string, out Outcome) {
	inserted, present := 0, 0
	for _, d := range out.Decisions {
		switch d {
		case Inserted:
			inserted++
		case Present:
			present++
		}
	}
	if inserted > 0 {
		b.m.EntriesStored.WithLabelValues(b.cfg.Tenant, coll, metrics.OutcomeInserted).Add(float64(inserted))
	}
	if present > 0 {
		b.m.EntriesStored.WithLabelValues(b.cfg.Tenant, coll, metrics.OutcomeDuplicate).Add(float64(present))
	}
}

// groupByCollection splits items by collection, in order of first
// appearance. The usual batch has one collection: it is returned as is.
func groupByCollection(items []Item) (map[string][]Item, []string) {
	one := true
	for _, it := range items {
		if it.Collection != items[0].Collection {
			one = false
			break
		}
	}
	if one && len(items) > 0 {
		return map[string][]Item{items[0].Collection: items}, []string{items[0].Collection}
	}
	byColl := map[string][]Item{}
	var order []string
	for _, it := range items {
		if _, ok := byColl[it.Collection]; !ok {
			order = append(order, it.Collection)
		}
		byColl[it.Collection] = append(byColl[it.Collection], it)
	}
	return byColl, order
}

// retryingAcker is the batcher's acker that retries while Redis is
// unreachable, until ctx ends: a stored entry must not be left pending
// for a blip.
type retryingAcker struct{ b *Batcher }

func (r retryingAcker) Ack(ctx context.Context, ids map[string][]string) error {
	for attempt := 0; ; attempt++ {
		err := r.b.acker.Ack(ctx, ids)
		if err == nil {
			return nil
		}
		if retry.Log(attempt + 1) {
			r.b.log.Warn("ack failed; retrying", "streams", len(ids), "attempt", attempt+1, "err", err)
		}
		select {
		case <-time.After(r.b.backoff(attempt + 1)):
		case <-ctx.Done():
			return fmt.Errorf("ack: %w", ctx.Err())
		}
	}
}

func (r retryingAcker) AckEach(ctx context.Context, stream string, ids []string) ([]bool, error) {
	return r.b.acker.AckEach(ctx, stream, ids)
}

// countAcked counts acknowledged items and observes their latency from
// XADD to acknowledged.
func (b *Batcher) countAcked(items []Item) {
	// Metric children are looked up once per kind, not once per entry.
	now := time.Now()
	var (
		kind    string
		latency prometheus.Observer
		n       int
	)
	for _, it := range items {
		if latency == nil || it.Kind != kind {
			if n > 0 {
				b.m.Acked.WithLabelValues(b.cfg.Tenant, kind).Add(float64(n))
			}
			kind, latency, n = it.Kind, b.m.StoreLatency.WithLabelValues(it.Kind), 0
		}
		latency.Observe(now.Sub(it.Time).Seconds())
		n++
	}
	if n > 0 {
		b.m.Acked.WithLabelValues(b.cfg.Tenant, kind).Add(float64(n))
	}
}

func (b *Batcher) setErr(err error, fatal bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	was := b.state
	switch {
	case err == nil:
		if was.LastErr != nil {
			b.log.Info("tenant writes recovered", "after", time.Since(was.Since).Round(time.Millisecond).String())
		}
		b.state = State{}
		b.halted.Store(false)
		b.m.TenantHalted.WithLabelValues(b.cfg.Tenant).Set(0)
		return
	case was.LastErr == nil || was.Halted != fatal:
		if fatal {
			b.log.Error("tenant halted: fatal write error; retrying slowly until an operator fixes it", "err", err, "retry_every", b.cfg.HaltedRetry.String())
		} else {
			b.log.Warn("tenant writes failing; retrying with backoff", "err", err)
		}
		b.state = State{Halted: fatal, LastErr: err, Since: time.Now()}
	default:
		b.state.LastErr = err
	}
	b.halted.Store(fatal)
	if fatal {
		b.m.TenantHalted.WithLabelValues(b.cfg.Tenant).Set(1)
	}
}

// backoff is exponential with jitter, from 200ms up to MaxBackoff.
func (b *Batcher) backoff(attempt int) time.Duration {
	return retry.Backoff{Base: 200 * time.Millisecond, Max: b.cfg.MaxBackoff}.Delay(attempt)
}
