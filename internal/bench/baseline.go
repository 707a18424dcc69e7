package bench

import (
	"context"
	"fmt"
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

// BaselineDB is the database the sink baseline writes into.
const BaselineDB = DBPrefix + "baseline"

// BaselineResult is the raw bulk-insert rate of the sink.
type BaselineResult struct {
	Docs     int
	Batch    int
	Inflight int
	Elapsed  time.Duration
	// DocBytes is the mean BSON size of a document.
	DocBytes int
}

// Rate is documents per second.
func (r BaselineResult) Rate() float64 { return float64(r.Docs) / r.Elapsed.Seconds() }

// Baseline measures what the sink takes with nothing in between: n messages
// documents of the layout, built by message.Builder exactly as the daemon
// builds them (all built before the clock starts), inserted into a fresh
// database carrying the daemon's schema (sink.EnsureSchema) with unordered
// InsertMany of batch documents, inflight at a time, from one client.
func Baseline(ctx context.Context, mc *mongo.Client, l Layout, n, payloadBytes, batch, inflight int) (BaselineResult, error) {
	db := mc.Database(BaselineDB)
	if err := db.Drop(ctx); err != nil {
		return BaselineResult{}, fmt.Errorf("drop %s: %w", BaselineDB, err)
	}
	if _, err := sink.EnsureSchema(ctx, db, false); err != nil {
		return BaselineResult{}, err
	}
	batches, size, err := buildDocs(l, n, payloadBytes, batch)
	if err != nil {
		return BaselineResult{}, err
	}
	coll := db.Collection(config.CollMessages)
	work := make(chan []any)
	g, gctx := errgroup.WithContext(ctx)
	start := time.Now()
	for range inflight {
		g.Go(func() error {
			for docs := range work {
				if _, err := coll.InsertMany(gctx, docs, options.InsertMany().SetOrdered(false)); err != nil {
					return fmt.Errorf("baseline insert: %w", err)
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
		return BaselineResult{}, err
	}
	res := BaselineResult{Docs: n, Batch: batch, Inflight: inflight, Elapsed: time.Since(start), DocBytes: size / max(n, 1)}
	got, err := coll.CountDocuments(ctx, bson.D{})
	if err != nil {
		return res, fmt.Errorf("count baseline documents: %w", err)
	}
	if got != int64(n) {
		return res, fmt.Errorf("baseline: %d documents stored, want %d", got, n)
	}
	return res, nil
}

// buildDocs builds the documents of entries [0, n) as the daemon would,
// with stream ids one millisecond apart, grouped in insert batches.
func buildDocs(l Layout, n, payloadBytes, batch int) ([][]any, int, error) {
	var (
		b     message.Builder
		out   [][]any
		cur   []any
		total int
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
		cur = append(cur, bson.Raw(doc.Raw))
		if len(cur) == batch {
			out = append(out, cur)
			cur = nil
		}
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out, total, nil
}
