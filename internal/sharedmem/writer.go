package sharedmem

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/chronow/persister/internal/retry"
	"github.com/chronow/persister/metrics"
)

// What was written (label values of persister_sm_values_written_total).
const (
	WrittenValue     = "value"
	WrittenTombstone = "tombstone"
	// WrittenRescued: the server refused the value; the document holds
	// val null, the exact text and the server's error instead.
	WrittenRescued = "rescued"
)

// Skip reasons (label values of persister_sm_values_skipped_total).
const (
	SkipUnchanged  = "unchanged"
	SkipSuperseded = "superseded"
	SkipStale      = "stale"
)

// maxPendingBytes bounds the bytes of values waiting for a flush, beside
// MaxPending keys: past it the writer flushes and stops taking
// observations until there is room.
const maxPendingBytes = 64 << 20

// writer owns the coalescing buffer: the latest observation per key, flushed
// every FlushInterval (or when MaxPending keys wait) as bulk upserts per
// tenant. One goroutine (run) owns pending; the cache is shared with the
// reconciler.
type writer struct {
	store      *store
	cache      *hashCache
	m          *metrics.Metrics
	log        *slog.Logger
	retention  map[string]int // tenant -> retention days of shared_memory
	flushEvery time.Duration
	maxPending int
	maxBackoff time.Duration

	pending      map[string]*Observation // by Redis key
	pendingBytes int
	backoff      map[string]*tenantBackoff
}

type tenantBackoff struct {
	attempt int
	until   time.Time
}

func newWriter(st *store, cache *hashCache, m *metrics.Metrics, log *slog.Logger, cfg Config) *writer {
	ret := map[string]int{}
	for _, t := range cfg.Tenants {
		ret[t.TenantID] = t.RetentionDays[collection]
	}
	return &writer{
		store: st, cache: cache, m: m, log: log, retention: ret,
		flushEvery: cfg.FlushInterval, maxPending: cfg.MaxPending, maxBackoff: cfg.MaxBackoff,
		pending: map[string]*Observation{},
		backoff: map[string]*tenantBackoff{},
	}
}

// run takes observations from in until stopped is closed (after in was
// closed by the producers' owner), then flushes what it holds within
// drainCtx. Every write runs under drainCtx, so a flush under way when the
// daemon is asked to stop completes within the grace period.
func (w *writer) run(drainCtx context.Context, in <-chan []Observation, stopped <-chan struct{}) error {
	t := time.NewTicker(w.flushEvery)
	defer t.Stop()
	for {
		inCh := in
		if w.full() {
			inCh = nil // backpressure: producers wait until a flush made room
		}
		select {
		case batch, ok := <-inCh:
			if !ok {
				return w.final(drainCtx)
			}
			w.add(batch)
			if w.full() {
				w.flush(drainCtx)
			}
		case <-t.C:
			w.flush(drainCtx)
		case <-stopped:
			for batch := range in {
				w.add(batch)
			}
			return w.final(drainCtx)
		case <-drainCtx.Done():
			return nil
		}
	}
}

// full reports whether pending holds as much as it may.
func (w *writer) full() bool {
	return len(w.pending) >= w.maxPending || w.pendingBytes >= maxPendingBytes
}

// put sets (o != nil) or removes the pending observation of k.
func (w *writer) put(k string, o *Observation) {
	if p := w.pending[k]; p != nil {
		w.pendingBytes -= len(p.Value)
	}
	if o == nil {
		delete(w.pending, k)
		return
	}
	w.pending[k] = o
	w.pendingBytes += len(o.Value)
}

// final flushes until nothing is pending or drainCtx ends.
func (w *writer) final(drainCtx context.Context) error {
	for {
		clear(w.backoff)
		w.flush(drainCtx)
		if len(w.pending) == 0 {
			return nil
		}
		select {
		case <-drainCtx.Done():
			w.log.Warn("shared memory: grace period ended with values not stored; the next reconcile pass after a restart finds those still in Redis",
				"pending", len(w.pending))
			return nil
		case <-time.After(w.flushEvery):
		}
	}
}

// add merges observations into pending, keeping the newest per key.
func (w *writer) add(batch []Observation) {
	for i := range batch {
		o := &batch[i]
		k := o.Key.String()
		p := w.pending[k]
		if o.Unchanged {
			// The key holds what the collection holds: an older pending
			// value must not be written after all.
			if p != nil && p.Version < o.Version && w.cache.get(k).hash == o.Hash {
				w.put(k, nil)
				w.m.SMSkipped.WithLabelValues(o.Key.Tenant, SkipSuperseded).Inc()
			}
			continue
		}
		if p != nil {
			if p.Version >= o.Version {
				w.m.SMSkipped.WithLabelValues(o.Key.Tenant, SkipSuperseded).Inc()
				continue
			}
			w.m.SMSkipped.WithLabelValues(o.Key.Tenant, SkipSuperseded).Inc()
			if p.Source == SourceLive && p.Hash == o.Hash && p.Deleted == o.Deleted {
				o.Source = SourceLive // notified already: not a miss of the live path
			}
		}
		w.put(k, o)
	}
	w.m.SMPending.Set(float64(len(w.pending)))
}

type tenantBatch struct {
	keys []string
	obs  []*Observation
	ops  []writeOp
	out  []outcome
	err  error
}

// flush writes what is pending, one batch per tenant (tenants in parallel).
func (w *writer) flush(ctx context.Context) {
	if len(w.pending) == 0 {
		return
	}
	now := time.Now()
	batches := map[string]*tenantBatch{}
	for k, o := range w.pending {
		tenant := o.Key.Tenant
		if b := w.backoff[tenant]; b != nil && now.Before(b.until) {
			continue
		}
		e := w.cache.get(k)
		if e.hash != "" {
			unchanged := (o.Deleted && e.hash == tombstoneHash) || (!o.Deleted && o.Hash == e.hash)
			switch {
			case o.Version <= e.version:
				w.m.SMSkipped.WithLabelValues(tenant, SkipStale).Inc()
				w.put(k, nil)
				continue
			case unchanged:
				w.m.SMSkipped.WithLabelValues(tenant, SkipUnchanged).Inc()
				w.put(k, nil)
				continue
			}
		}
		op, err := buildOp(o, w.retention[tenant])
		if err != nil {
			w.refused(k, o, err)
			continue
		}
		b := batches[tenant]
		if b == nil {
			b = &tenantBatch{}
			batches[tenant] = b
		}
		b.keys = append(b.keys, k)
		b.obs = append(b.obs, o)
		b.ops = append(b.ops, op)
	}
	var wg sync.WaitGroup
	for tenant, b := range batches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			b.out, b.err = w.store.write(ctx, tenant, b.ops)
			result := metrics.ResultOK
			if b.err != nil {
				result = metrics.ResultError
			}
			w.m.FlushDuration.WithLabelValues(result).Observe(time.Since(start).Seconds())
		}()
	}
	wg.Wait()
	for tenant, b := range batches {
		w.apply(tenant, b)
	}
	w.m.SMPending.Set(float64(len(w.pending)))
}

// apply records the outcome of one tenant's batch.
func (w *writer) apply(tenant string, b *tenantBatch) {
	failed := 0
	for i, o := range b.obs {
		k := b.keys[i]
		switch b.out[i] {
		case outWritten:
			w.put(k, nil)
			hash := o.Hash
			op := WrittenValue
			switch {
			case o.Deleted:
				hash, op = tombstoneHash, WrittenTombstone
			case o.refusal != "":
				op = WrittenRescued
			}
			w.cache.set(k, hash, o.Version)
			w.m.SMWritten.WithLabelValues(tenant, op).Inc()
			if o.Source == SourceReconcile {
				w.m.SMFoundByReconcile.WithLabelValues(tenant).Inc()
			}
		case outStale:
			w.put(k, nil)
			w.cache.drop(k)
			w.m.SMSkipped.WithLabelValues(tenant, SkipStale).Inc()
		case outRefused:
			w.refused(k, o, b.ops[i].refusedBy)
		default:
			failed++
		}
	}
	if failed == 0 {
		delete(w.backoff, tenant)
		return
	}
	bo := w.backoff[tenant]
	if bo == nil {
		bo = &tenantBackoff{}
		w.backoff[tenant] = bo
	}
	bo.attempt++
	d := retry.Backoff{Base: 2 * w.flushEvery, Max: w.maxBackoff}.Delay(bo.attempt)
	bo.until = time.Now().Add(d)
	w.m.WriteErrors.WithLabelValues(tenant, metrics.ClassRetryable).Inc()
	if retry.Log(bo.attempt) {
		w.log.Warn("shared memory: writing values failed; will retry", "tenant", tenant,
			"values", failed, "attempt", bo.attempt, "retry_in", d.String(), "err", b.err)
	}
}

// refused handles a value that can never be stored as it is. The first
// refusal turns the observation into a rescue, written with the next flush
// (val null, the exact text and the server's error: the warm copy never
// silently keeps an older value). A rescue that is refused too (it should
// not be) is dropped with an error log, and its hash remembered so that
// the same value is not tried again.
func (w *writer) refused(k string, o *Observation, err error) {
	w.m.WriteErrors.WithLabelValues(o.Key.Tenant, metrics.ClassPermanent).Inc()
	if o.refusal == "" && err != nil {
		w.log.Warn("shared memory: the server refused a value; storing it as a rescue (val null, exact text in _system.raw.val)",
			"tenant", o.Key.Tenant, "namespace", o.Key.Namespace, "key", o.Key.Name, "bytes", len(o.Value), "err", err)
		r := *o
		r.refusal = err.Error()
		w.put(k, &r)
		return
	}
	w.put(k, nil)
	w.cache.set(k, o.Hash, o.Version)
	w.log.Error("shared memory: value cannot be stored, not even as a rescue; the warm copy keeps its previous value",
		"tenant", o.Key.Tenant, "namespace", o.Key.Namespace, "key", o.Key.Name, "bytes", len(o.Value), "err", err)
}
