package bench

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
	"golang.org/x/sync/errgroup"

	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/message"
	"github.com/chronow/persister/internal/sink"
)

// How the baseline writes its batches.
const (
	// BaselineCommand sends pre-built insert commands (the bytes the
	// daemon's sink sends) with Database.RunCommand: no client work left
	// but the I/O, the closest a client gets to the server's own limit.
	BaselineCommand = "insert command"
	// BaselineInsertMany calls Collection.InsertMany with bson.Raw
	// documents, the plain driver API.
	BaselineInsertMany = "InsertMany"
)

// BaselineResult is the raw bulk-insert rate of the sink.
type BaselineResult struct {
	Method  string
	Docs    int
	Batch   int
	Writers int
	Tenants int
	Elapsed time.Duration
	// DocBytes is the mean BSON size of a document.
	DocBytes int
	// CPU is the CPU time, during the run, of each started server and of
	// the benchmark itself ("client"); nil when not measured.
	CPU map[string]time.Duration
	// Runs is how many runs this is the fastest of (sweeps only).
	Runs int
}

// Rate is documents per second.
func (r BaselineResult) Rate() float64 { return float64(r.Docs) / r.Elapsed.Seconds() }

// baselineBatch is one bulk write, prepared before the clock starts.
type baselineBatch struct {
	db   *mongo.Database
	docs []any  // for InsertMany
	cmd  []byte // for the insert command
}

// Baseline measures what the sink takes with nothing in between, shaped
// like the daemon's writes: n messages documents of the layout, built by
// message.Builder exactly as the daemon builds them, each into its tenant's
// fresh database (created with the daemon's schema), in batches of one
// tenant's documents, writers at a time, from one client. Everything is
// built before the clock starts.
func Baseline(ctx context.Context, mc *mongo.Client, l Layout, n, payloadBytes, batch, writers int, method string) (BaselineResult, error) {
	batches, size, err := buildBatches(mc, l, n, payloadBytes, batch, method)
	if err != nil {
		return BaselineResult{}, err
	}
	return runBaseline(ctx, mc, l, batches, baselineShape{n: n, batch: batch, docBytes: size / max(n, 1)}, writers, method)
}

// baselineShape is what a prepared set of batches holds.
type baselineShape struct{ n, batch, docBytes int }

// SinkSweep measures the sink at each number of writes in flight with the
// same n documents of the layout (built once), each run into fresh
// databases, repeats times interleaved, and returns the fastest run of
// each in the order of writers.
//
// meter, when set, returns the CPU time so far of each process to account
// for: each result gets what it used during its run.
func SinkSweep(ctx context.Context, mc *mongo.Client, l Layout, n, payloadBytes, batch int, writers []int, repeats int, meter func() map[string]time.Duration) (Sweep, error) {
	sw := Sweep{Layout: l}
	batches, size, err := buildBatches(mc, l, n, payloadBytes, batch, BaselineCommand)
	if err != nil {
		return sw, err
	}
	sw.Results = make([]BaselineResult, len(writers))
	for round := range max(repeats, 1) {
		for i, w := range writers {
			var cpu0 map[string]time.Duration
			if meter != nil {
				cpu0 = meter()
			}
			r, err := runBaseline(ctx, mc, l, batches, baselineShape{n: n, batch: batch, docBytes: size / max(n, 1)}, w, BaselineCommand)
			if err != nil {
				return sw, err
			}
			if meter != nil {
				r.CPU = map[string]time.Duration{}
				for k, v := range meter() {
					r.CPU[k] = v - cpu0[k]
				}
			}
			if prev := sw.Results[i]; prev.Elapsed == 0 || r.Rate() > prev.Rate() {
				sw.Results[i] = r
			}
			sw.Results[i].Runs = round + 1
		}
	}
	return sw, nil
}

// SweepRepeats is how many times the sweep runs each number of writes in
// flight, interleaved (1, 2, 4, 8, 1, 2, …); each keeps its fastest run,
// the sink's rate with the least interference from anything else on the
// machine.
const SweepRepeats = 2

// Sweep is the sink's rate of one layout at several writes in flight.
type Sweep struct {
	Layout  Layout
	Results []BaselineResult
	// Full are the sweep's best numbers of writes in flight run again
	// with as many documents as the layout's drain stores, so that a drain
	// is compared with the sink doing the same work: a larger collection
	// can take inserts more slowly (one run here: 2 tenants, 2 in flight,
	// 6,941 docs/s into 100,000 documents vs 7,878 into 20,000; the other
	// layouts within 1% of their sweep).
	Full []BaselineResult
}

// Best is the sink's real limit for the layout: the fastest of the runs
// at the drain's size when there are any, else of the sweep.
func (s Sweep) Best() BaselineResult {
	if len(s.Full) > 0 {
		return fastest(s.Full)
	}
	return s.SweepBest()
}

// SweepBest is the fastest run of the sweep.
func (s Sweep) SweepBest() BaselineResult { return fastest(s.Results) }

// Top returns the writes in flight of the k fastest runs of the sweep,
// fastest first.
func (s Sweep) Top(k int) []int {
	rs := slices.Clone(s.Results)
	slices.SortStableFunc(rs, func(a, b BaselineResult) int { return cmp.Compare(b.Rate(), a.Rate()) })
	var out []int
	for _, r := range rs[:min(k, len(rs))] {
		out = append(out, r.Writers)
	}
	return out
}

func fastest(rs []BaselineResult) BaselineResult {
	var best BaselineResult
	for _, r := range rs {
		if best.Elapsed == 0 || r.Rate() > best.Rate() {
			best = r
		}
	}
	return best
}

// runBaseline writes the prepared batches, writers at a time, into fresh
// databases of the layout, and checks that every document is there.
func runBaseline(ctx context.Context, mc *mongo.Client, l Layout, batches []baselineBatch, shape baselineShape, writers int, method string) (BaselineResult, error) {
	res := BaselineResult{Method: method, Docs: shape.n, Batch: shape.batch, Writers: writers, Tenants: l.Tenants, DocBytes: shape.docBytes}
	for _, t := range l.TenantIDs() {
		db := mc.Database(DBName(t))
		if err := db.Drop(ctx); err != nil {
			return res, fmt.Errorf("drop %s: %w", db.Name(), err)
		}
		if _, err := sink.EnsureSchema(ctx, db, false); err != nil {
			return res, err
		}
	}
	work := make(chan baselineBatch)
	g, gctx := errgroup.WithContext(ctx)
	start := time.Now()
	for range writers {
		g.Go(func() error {
			for b := range work {
				var err error
				if method == BaselineInsertMany {
					_, err = b.db.Collection(config.CollMessages).InsertMany(gctx, b.docs, options.InsertMany().SetOrdered(false))
				} else {
					err = b.db.RunCommand(gctx, bson.Raw(b.cmd)).Err()
				}
				if err != nil {
					return fmt.Errorf("baseline %s into %s: %w", method, b.db.Name(), err)
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		defer close(work)
		for _, b := range batches {
			select {
			case work <- b:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return res, err
	}
	res.Elapsed = time.Since(start)
	stored, err := countStored(ctx, mc, l)
	if err != nil {
		return res, fmt.Errorf("count baseline documents: %w", err)
	}
	if stored != int64(shape.n) {
		return res, fmt.Errorf("baseline: %d documents stored, want %d", stored, shape.n)
	}
	return res, nil
}

// buildDocs builds the documents of entries [0, n) as the daemon would
// (stream ids one millisecond apart), per tenant, and their total size.
func buildDocs(l Layout, n, payloadBytes int) (map[string][][]byte, int, error) {
	var (
		b     message.Builder
		total int
		per   = map[string][][]byte{}
	)
	base := time.Now().Add(-time.Hour).UnixMilli()
	now := time.Now()
	for seq := range n {
		m := l.Message(seq, payloadBytes)
		key := keyspace.Key{Prefix: KeyPrefix, Tenant: m.Tenant, Namespace: m.Namespace, Kind: keyspace.KindTopic, Name: m.Topic}
		id := strconv.FormatInt(base+int64(seq), 10) + "-0"
		doc, err := b.Topic(key, id, Fields(m), now)
		if err != nil {
			return nil, 0, fmt.Errorf("build document %d: %w", seq, err)
		}
		total += len(doc.Raw)
		per[m.Tenant] = append(per[m.Tenant], doc.Raw)
	}
	return per, total, nil
}

// buildBatches groups each tenant's documents in batches of batch and
// interleaves the tenants' batches, ready for method.
func buildBatches(mc *mongo.Client, l Layout, n, payloadBytes, batch int, method string) ([]baselineBatch, int, error) {
	per, total, err := buildDocs(l, n, payloadBytes)
	if err != nil {
		return nil, 0, err
	}
	var out []baselineBatch
	for round := 0; ; round++ {
		added := false
		for _, t := range l.TenantIDs() {
			docs := per[t]
			if round*batch >= len(docs) {
				continue
			}
			added = true
			chunk := docs[round*batch : min((round+1)*batch, len(docs))]
			db := mc.Database(DBName(t))
			b := baselineBatch{db: db}
			if method == BaselineInsertMany {
				b.docs = make([]any, len(chunk))
				for i, d := range chunk {
					b.docs[i] = bson.Raw(d)
				}
			} else {
				cmd, k, err := sink.InsertCommand(nil, config.CollMessages, chunk, db.WriteConcern())
				if err != nil {
					return nil, 0, err
				}
				if k != len(chunk) {
					return nil, 0, fmt.Errorf("baseline batch of %d documents split in commands", len(chunk))
				}
				b.cmd = cmd
			}
			out = append(out, b)
		}
		if !added {
			return out, total, nil
		}
	}
}
