package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/dlq"
	"github.com/chronow/persister/internal/hold"
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

// minLook is the least time a look that decides trimmed entries may take:
// it is a find of their _ids, an index lookup on MongoDB, but a scan of
// the collection on FerretDB's SQLite backend, which can take longer than
// a write; cut off at the write timeout, every look would fail on a large
// collection, be tried again, and keep the server busy for nothing.
const minLook = 30 * time.Second

// trimSettle is how long after a first miss the persister looks again for
// a trimmed entry's document: the write timeout, at most maxTrimSettle.
func trimSettle(writeTimeout time.Duration) time.Duration {
	return min(writeTimeout, maxTrimSettle)
}

// trimmed deals with pending entries whose body was trimmed away: they
// can never be stored now. Each is acknowledged once it is decided: stored
// after all (its document, or a dead letter made of it, is in MongoDB: a
// write that landed before a crash, or whose answer was lost), or lost
// (counted, with a warning naming it). Until then it stays pending, so a
// crash before the decision leaves it to the next reader or claim sweep.
//
// Entries re-read from this consumer's own pending list are looked for
// now; those not found are looked for again trimSettle later by the
// tenant's trimChecks (the last write of a replica that died may still
// land). Entries a claim sweep found trimmed (claimed) were idle for the
// claim's minimum idle time: their first look decides. An entry already
// waiting for its decision is not queued twice (a sweep finds it again
// until it is acked).
func (tp *Tenant) trimmed(ctx context.Context, key keyspace.Key, ids []string, now time.Time, claimed bool) {
	if ids = tp.trims.enter(key, ids); len(ids) == 0 {
		return
	}
	if claimed {
		tp.trims.in <- trimMiss{key: key, ids: ids, at: now.Add(-trimSettle(tp.trims.writeTimeout))}
		return
	}
	missing, err := tp.trims.notStored(ctx, key, ids, tp.trims.writeTimeout)
	if err != nil {
		missing = ids // all are looked for again, until MongoDB answers
	}
	if stored := setMinus(ids, missing); len(stored) > 0 {
		tp.trims.decide(ctx, key, stored, nil)
	}
	if len(missing) > 0 {
		tp.trims.in <- trimMiss{key: key, ids: missing, at: now}
	}
}

// setMinus returns the ids of a not in b.
func setMinus(a, b []string) []string {
	drop := make(map[string]bool, len(b))
	for _, id := range b {
		drop[id] = true
	}
	var out []string
	for _, id := range a {
		if !drop[id] {
			out = append(out, id)
		}
	}
	return out
}

// trimMiss is a group of trimmed entries still to be decided.
type trimMiss struct {
	key keyspace.Key
	ids []string
	at  time.Time // of the first look
}

// trimChecks decides trimmed entries the first look did not find: it looks
// again trimSettle after the first look, acknowledges them and counts those
// still missing as lost. One goroutine per tenant (run) does it, so readers
// never wait.
type trimChecks struct {
	tenant string
	dbs    interface {
		Database(string) (*mongo.Database, error)
	}
	acker        hold.Acker
	writeTimeout time.Duration
	in           chan trimMiss
	m            *metrics.Metrics
	log          *slog.Logger

	mu       sync.Mutex
	deciding map[trimKey]bool // entries entered and not yet decided
}

type trimKey struct{ stream, id string }

// enter returns the ids of key not already being decided, and records
// them as being decided (until decide or the stop).
func (tc *trimChecks) enter(key keyspace.Key, ids []string) []string {
	stream := key.String()
	tc.mu.Lock()
	defer tc.mu.Unlock()
	var out []string
	for _, id := range ids {
		if k := (trimKey{stream, id}); !tc.deciding[k] {
			tc.deciding[k] = true
			out = append(out, id)
		}
	}
	return out
}

// leave forgets that ids of stream are being decided.
func (tc *trimChecks) leave(stream string, ids []string) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	for _, id := range ids {
		delete(tc.deciding, trimKey{stream, id})
	}
}

// close tells run that no more misses come (the readers have stopped).
func (tc *trimChecks) close() { close(tc.in) }

// run takes misses until close, each looked at again once its settle time
// has passed, and again (with backoff) while MongoDB does not answer. When
// ctx ends (the shutdown grace is over) one last brief look is made; what
// it cannot decide stays pending for the next reader or claim sweep.
func (tc *trimChecks) run(ctx context.Context) {
	settle := trimSettle(tc.writeTimeout)
	for miss := range tc.in {
		_ = retry.Sleep(ctx, time.Until(miss.at.Add(settle)))
		lost, err := tc.look(ctx, miss)
		if err != nil {
			tc.leave(miss.key.String(), miss.ids)
			tc.log.Info("trimmed pending entries not decided before the stop; left pending for the next reader",
				"stream", miss.key.String(), "count", len(miss.ids), "err", err)
			continue
		}
		tc.decide(context.WithoutCancel(ctx), miss.key, setMinus(miss.ids, lost), lost)
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
			if lost, lerr := tc.notStored(last, miss.key, miss.ids, lastLook); lerr == nil {
				return lost, nil
			}
			return nil, fmt.Errorf("no second look before the stop: %w", err)
		}
		lost, err := tc.notStored(ctx, miss.key, miss.ids, max(tc.writeTimeout, minLook))
		if err == nil {
			return lost, nil
		}
		if retry.Log(attempt) {
			tc.log.Warn("could not look for trimmed entries in MongoDB; retrying", "stream", miss.key.String(), "attempt", attempt, "err", err)
		}
		_ = backoff.Wait(ctx, attempt)
	}
}

// decide acknowledges the decided entries of key, one XACK each, and
// counts as lost those of lost this consumer acknowledged (XACK 1): an
// entry another replica acknowledged meanwhile (it claimed and decided it,
// or stored it after all) is not counted here.
//
// An XACK that fails has an unknown outcome: Redis may have acted on it
// and its answer been lost (a cut connection, a timeout). Then every lost
// entry is counted at once (a kill while Redis is away must not lose the
// count), and the XACKs are sent again until Redis answers (for at most
// minLook), so that they are acknowledged by someone: never fewer counted
// than were lost, at worst one counted by two replicas (said in the
// warning). Either way the entries are no longer being decided here.
func (tc *trimChecks) decide(ctx context.Context, key keyspace.Key, stored, lost []string) {
	stream := key.String()
	defer tc.leave(stream, stored)
	defer tc.leave(stream, lost)
	all := append(append([]string(nil), stored...), lost...)
	acks, err := tc.ack(ctx, stream, all)
	counted := lost
	if err == nil {
		counted = nil
		for i, id := range lost {
			if acks[len(stored)+i] {
				counted = append(counted, id)
			}
		}
	}
	if len(counted) > 0 {
		tc.m.Lost.WithLabelValues(tc.tenant, metrics.CauseTrimmed).Add(float64(len(counted)))
		args := []any{"stream", stream, "kind", string(key.Kind), "count", len(counted),
			"first_id", counted[0], "last_id", counted[len(counted)-1]}
		if err != nil {
			args = append(args, "note", "the XACK's answer was lost ("+err.Error()+"): counted here, another replica may count some of them too")
		}
		tc.log.Warn("pending entries were trimmed from the stream before they were stored; counted as lost", args...)
	}
	if err != nil {
		if err := tc.ackAgain(ctx, stream, all); err != nil {
			tc.log.Warn("ack of trimmed entries failed; they stay pending and are decided again when read or claimed", "stream", stream, "err", err)
		}
	}
	if len(stored) > 0 {
		tc.log.Info("pending entries were trimmed from the stream after they were stored", "stream", stream, "count", len(stored))
	}
}

// ackAgain sends the XACKs of ids again, with backoff, until Redis answers
// or minLook has passed.
func (tc *trimChecks) ackAgain(ctx context.Context, stream string, ids []string) error {
	ctx, cancel := context.WithTimeout(ctx, minLook)
	defer cancel()
	backoff := retry.Backoff{Base: 200 * time.Millisecond, Max: 5 * time.Second}
	for attempt := 1; ; attempt++ {
		_, err := tc.ack(ctx, stream, ids)
		if err == nil {
			return nil
		}
		if werr := backoff.Wait(ctx, attempt); werr != nil {
			return fmt.Errorf("ack %d trimmed entries of %s: %w", len(ids), stream, err)
		}
	}
}

// ack acknowledges the entries of stream, one XACK each (hold.Leave), and
// reports which ones this call acknowledged.
func (tc *trimChecks) ack(ctx context.Context, stream string, ids []string) ([]bool, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, tc.writeTimeout)
	defer cancel()
	outs := make([]hold.Out, len(ids))
	for i, id := range ids {
		outs[i] = hold.Out{Stream: stream, ID: id} // trimmed entries are never in hand: no hold
	}
	return hold.Leave(ctx, tc.acker, outs, hold.AckedEach)
}

// notStored returns the ids of entries of key with no document: neither
// their usual one, nor a dead letter the persister made of them.
// The first look (in the reader) is bounded by the write timeout; if it
// fails, the second look (trimChecks.run) has at least minLook.
func (tc *trimChecks) notStored(ctx context.Context, key keyspace.Key, ids []string, timeout time.Duration) ([]string, error) {
	db, err := tc.dbs.Database(tc.tenant)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
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
