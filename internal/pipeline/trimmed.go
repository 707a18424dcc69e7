package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/dlq"
	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/message"
	"github.com/chronow/persister/internal/rescue"
	"github.com/chronow/persister/internal/retry"
	"github.com/chronow/persister/metrics"
)

// maxTrimSettle bounds how long the persister waits before it looks a
// second time for trimmed entries with no document.
const maxTrimSettle = 5 * time.Second

// lastLook bounds the one look made for trimmed entries once the stop's
// grace period is over.
const lastLook = 2 * time.Second

// trimSettle is how long after a first miss the persister looks again for
// a trimmed entry's document: the write timeout, at most maxTrimSettle.
func trimSettle(writeTimeout time.Duration) time.Duration {
	return min(writeTimeout, maxTrimSettle)
}

// ackTrimmed acknowledges pending entries whose body was trimmed away:
// they can never be stored now. Those whose document is in MongoDB all the
// same (a write that landed before a crash, or whose answer was lost) are
// not lost. Those with no document, or all when MongoDB does not answer,
// are handed to the second look (trimChecks), since the last write of a
// replica that died may still land.
func (tp *Tenant) ackTrimmed(ctx context.Context, key keyspace.Key, ids []string, now time.Time) {
	stream := key.String()
	if err := tp.acker.Ack(ctx, map[string][]string{stream: ids}); err != nil {
		tp.log.Warn("ack of trimmed entries failed; will retry when re-read", "stream", stream, "err", err)
		return
	}
	missing, err := tp.trims.notStored(ctx, key, ids)
	if err != nil {
		missing = ids // all are looked for again, until MongoDB answers
	}
	if stored := len(ids) - len(missing); stored > 0 {
		tp.log.Info("pending entries were trimmed from the stream after they were stored", "stream", stream, "count", stored)
	}
	if len(missing) > 0 {
		tp.trims.in <- trimMiss{key: key, ids: missing, at: now}
	}
}

// trimMiss is a group of trimmed entries whose document the first look did
// not find.
type trimMiss struct {
	key keyspace.Key
	ids []string
	at  time.Time // of the first look
}

// trimChecks looks a second time, trimSettle after the first, for trimmed
// entries that had no document, and counts those still missing as lost.
// One goroutine per tenant (run) does it, so readers never wait.
type trimChecks struct {
	tenant string
	dbs    interface {
		Database(string) (*mongo.Database, error)
	}
	writeTimeout time.Duration
	in           chan trimMiss
	m            *metrics.Metrics
	log          *slog.Logger
}

func newTrimChecks(tenant string, dbs interface {
	Database(string) (*mongo.Database, error)
}, writeTimeout time.Duration, m *metrics.Metrics, log *slog.Logger) *trimChecks {
	return &trimChecks{tenant: tenant, dbs: dbs, writeTimeout: writeTimeout, in: make(chan trimMiss, 256), m: m, log: log}
}

// close tells run that no more misses come (the readers have stopped).
func (tc *trimChecks) close() { close(tc.in) }

// run takes misses until close, each looked at again once its settle time
// has passed, and again (with backoff) while MongoDB does not answer. When
// ctx ends (the shutdown grace is over) the remaining ones are counted
// without a look: an upper bound, said in the log.
func (tc *trimChecks) run(ctx context.Context) {
	settle := trimSettle(tc.writeTimeout)
	for miss := range tc.in {
		_ = retry.Sleep(ctx, time.Until(miss.at.Add(settle)))
		lost, err := tc.look(ctx, miss)
		if err != nil {
			tc.count(miss.key, miss.ids, err)
			continue
		}
		if stored := len(miss.ids) - len(lost); stored > 0 {
			tc.log.Info("pending entries were trimmed from the stream after they were stored (found on a second look)",
				"stream", miss.key.String(), "count", stored)
		}
		tc.count(miss.key, lost, nil)
	}
}

// look returns the ids of miss still without a document, asking MongoDB
// until it answers or ctx ends; then it asks once more, briefly.
func (tc *trimChecks) look(ctx context.Context, miss trimMiss) ([]string, error) {
	backoff := retry.Backoff{Base: 500 * time.Millisecond, Max: 10 * time.Second}
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			last, cancel := context.WithTimeout(context.WithoutCancel(ctx), lastLook)
			defer cancel()
			if lost, lerr := tc.notStored(last, miss.key, miss.ids); lerr == nil {
				return lost, nil
			}
			return nil, fmt.Errorf("no second look before the stop: %w", err)
		}
		lost, err := tc.notStored(ctx, miss.key, miss.ids)
		if err == nil {
			return lost, nil
		}
		if retry.Log(attempt) {
			tc.log.Warn("could not look for trimmed entries in MongoDB; retrying", "stream", miss.key.String(), "attempt", attempt, "err", err)
		}
		_ = backoff.Wait(ctx, attempt)
	}
}

// count counts ids as lost with a warning naming them; lookErr says why
// they were not (all) looked for, making the count an upper bound.
func (tc *trimChecks) count(key keyspace.Key, ids []string, lookErr error) {
	if len(ids) == 0 {
		return
	}
	tc.m.Lost.WithLabelValues(tc.tenant, metrics.CauseTrimmed).Add(float64(len(ids)))
	args := []any{"stream", key.String(), "kind", string(key.Kind), "count", len(ids), "first_id", ids[0], "last_id", ids[len(ids)-1]}
	if lookErr != nil {
		args = append(args, "err", lookErr, "note", "not looked for in MongoDB before the stop; some of them may be stored (an upper bound)")
	}
	tc.log.Warn("pending entries were trimmed from the stream before they were stored; counted as lost", args...)
}

// notStored returns the ids of entries of key with no document: neither
// their usual one, nor a dead letter the persister made of them.
func (tc *trimChecks) notStored(ctx context.Context, key keyspace.Key, ids []string) ([]string, error) {
	db, err := tc.dbs.Database(tc.tenant)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, tc.writeTimeout)
	defer cancel()
	usual := config.CollMessages
	if key.Kind == keyspace.KindDLQ {
		usual = config.CollDeadLetters
	}
	byDoc := map[string]string{} // document _id -> entry id
	var usualIDs, dlIDs []string
	for _, id := range ids {
		u, p, r := message.Identity(key.Namespace, key.Name, id), dlq.PoisonID(key, id), rescue.RefusedID(key, id)
		byDoc[u], byDoc[p], byDoc[r] = id, id, id
		usualIDs = append(usualIDs, u)
		dlIDs = append(dlIDs, p, r)
	}
	found := map[string]bool{}
	for _, l := range []struct {
		coll string
		ids  []string
	}{{usual, usualIDs}, {config.CollDeadLetters, dlIDs}} {
		if err := findIDs(ctx, db.Collection(l.coll), l.ids, func(docID string) { found[byDoc[docID]] = true }); err != nil {
			return nil, err
		}
	}
	var lost []string
	for _, id := range ids {
		if !found[id] {
			lost = append(lost, id)
		}
	}
	return lost, nil
}

// findIDs calls each for every string _id among ids that coll holds.
func findIDs(ctx context.Context, coll *mongo.Collection, ids []string, each func(string)) error {
	cur, err := coll.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}},
		options.Find().SetProjection(bson.D{{Key: "_id", Value: 1}}))
	if err != nil {
		return fmt.Errorf("look for trimmed entries in %s.%s: %w", coll.Database().Name(), coll.Name(), err)
	}
	defer cur.Close(ctx)
	for cur.Next(ctx) {
		if s, ok := cur.Current.Lookup("_id").StringValueOK(); ok {
			each(s)
		}
	}
	if err := cur.Err(); err != nil {
		return fmt.Errorf("look for trimmed entries in %s.%s: %w", coll.Database().Name(), coll.Name(), err)
	}
	return nil
}
