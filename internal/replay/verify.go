package replay

import (
	"context"
	"fmt"
	"sort"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/dlq"
	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/rescue"
)

// StreamVerify compares one stream with its documents over a range.
type StreamVerify struct {
	Stream     string `json:"stream"`
	Tenant     string `json:"tenant"`
	Namespace  string `json:"namespace"`
	Kind       string `json:"kind"`
	Topic      string `json:"topic"`
	Collection string `json:"collection"`
	// Range is the range compared: the requested one, ending at the
	// stream's last id when verification started (later entries are not
	// judged).
	Range string `json:"range"`
	// InRedis counts the entries Redis holds in the range; Matched those
	// with their document.
	InRedis int `json:"inRedis"`
	Matched int `json:"matched"`
	// StandIns counts matched entries stored another way by the persister:
	// its own dead letter (poison, refused) or a document under another
	// _id holding the entry id.
	StandIns int `json:"standIns"`
	// MissingInMongo lists entry ids Redis holds that have no document.
	MissingInMongo []string `json:"missingInMongo"`
	// OnlyInMongo lists entry ids that have a document but are no longer
	// in Redis (trimmed or deleted there), the first MaxListed of them in
	// id order; OnlyInMongoCount counts them all. Normal for old entries:
	// that is what the cold tier is for.
	OnlyInMongo      []string `json:"onlyInMongo"`
	OnlyInMongoCount int      `json:"onlyInMongoCount"`
	// OnlyInMongoChecked is false when this kind's documents cannot be
	// listed by stream (then OnlyInMongo is empty).
	OnlyInMongoChecked bool `json:"onlyInMongoChecked"`
	// Undecodable lists the missing entries no usual document can be built
	// for (e.g. over the BSON limit), and why; the daemon stores those as a
	// stub or a dead letter, and a replay does the same.
	Undecodable []Refusal `json:"undecodable,omitempty"`
}

// VerifyReport is the outcome of a verification.
type VerifyReport struct {
	Range        string         `json:"range"`
	Streams      []StreamVerify `json:"streams"`
	Unconfigured []string       `json:"unconfiguredStreams,omitempty"`
	Totals       VerifyTotals   `json:"totals"`
	Seconds      float64        `json:"seconds"`
}

// VerifyTotals sums a VerifyReport.
type VerifyTotals struct {
	Streams        int `json:"streams"`
	InRedis        int `json:"inRedis"`
	Matched        int `json:"matched"`
	StandIns       int `json:"standIns"`
	MissingInMongo int `json:"missingInMongo"`
	OnlyInMongo    int `json:"onlyInMongo"`
	Undecodable    int `json:"undecodable"`
}

// Complete reports whether every entry Redis holds in the range has its
// document.
func (v *VerifyReport) Complete() bool { return v.Totals.MissingInMongo == 0 }

func (v *VerifyReport) total() {
	t := VerifyTotals{Streams: len(v.Streams)}
	for _, s := range v.Streams {
		t.InRedis += s.InRedis
		t.Matched += s.Matched
		t.StandIns += s.StandIns
		t.MissingInMongo += len(s.MissingInMongo)
		t.OnlyInMongo += s.OnlyInMongoCount
		t.Undecodable += len(s.Undecodable)
	}
	v.Totals = t
}

// MaxListed bounds the "only in MongoDB" ids kept per stream (the count
// stays exact): a stream's cold tier may hold millions of trimmed entries.
const MaxListed = 100000

// locator says how to list a kind's documents of one stream.
type locator struct {
	coll      string
	idField   string // holds the stream entry id
	timeField string // holds the entry id's time, for range queries ("" if none)
}

func locatorFor(kind keyspace.Kind) (locator, bool) {
	switch kind {
	case keyspace.KindTopic:
		return locator{coll: config.CollMessages, idField: "msgId", timeField: "firstSeenAt"}, true
	case keyspace.KindDLQ:
		// failedAt is the consumer's time, not the entry id's: no range
		// query, the ids are filtered here.
		return locator{coll: config.CollDeadLetters, idField: "dlqId"}, true
	}
	return locator{}, false
}

// redisEntry is an entry's document identity.
type redisEntry struct {
	id      string
	coll    string // "" when undecodable
	seen    bool
	standIn bool
	// undecodable is why no document could be built for the entry.
	undecodable string
}

// Verify compares Redis and MongoDB over the filter's range without writing.
func (r *Replayer) Verify(ctx context.Context, f Filter) (*VerifyReport, error) {
	f = f.orAll()
	rep := &VerifyReport{Range: f.Range.String()}
	defer stopwatch(&rep.Seconds, rep.total)()
	keys, m, err := r.plan(ctx, f, "verify", &rep.Unconfigured)
	if err != nil {
		return rep, err
	}
	defer m.finish()
	for _, k := range keys {
		sv, err := r.verifyStream(ctx, k, f.Range, m)
		if err != nil {
			return rep, fmt.Errorf("verify %s: %w", k, err)
		}
		rep.Streams = append(rep.Streams, sv)
	}
	return rep, nil
}

func (r *Replayer) verifyStream(ctx context.Context, k keyspace.Key, rng Range, m *meter) (StreamVerify, error) {
	stream := k.String()
	sv := StreamVerify{
		Stream: stream, Tenant: k.Tenant, Namespace: k.Namespace, Kind: string(k.Kind), Topic: k.Name,
		MissingInMongo: []string{}, OnlyInMongo: []string{},
	}
	// Entries added after this point are not judged: the daemon may not
	// have stored them yet.
	if info, err := r.rdb.XInfoStream(ctx, stream).Result(); err == nil {
		if last, err := ParseID(info.LastGeneratedID); err == nil && last.Less(rng.To) {
			rng.To = last
		}
	}
	sv.Range = rng.String()
	dec := r.cfg.Decoders[k.Kind]
	byDoc := map[string]*redisEntry{}
	var order []*redisEntry
	from := rng.From
	for {
		msgs, err := r.page(ctx, stream, from, rng)
		if err != nil {
			return sv, err
		}
		if len(msgs) == 0 {
			break
		}
		now := time.Now()
		for _, msg := range msgs {
			sv.InRedis++
			it, _, err := dec.Decode(k, msg, now)
			if err != nil {
				// The daemon stores such an entry another way (a stub
				// holding the entry id, or its own dead letter): it is
				// matched by entry id, not by _id.
				order = append(order, &redisEntry{id: msg.ID, undecodable: err.Error()})
				continue
			}
			e := &redisEntry{id: msg.ID, coll: it.Collection}
			byDoc[docID(it.Doc)] = e
			order = append(order, e)
			if sv.Collection == "" {
				sv.Collection = it.Collection
			}
		}
		m.add(len(msgs), stream)
		last, err := ParseID(msgs[len(msgs)-1].ID)
		if err != nil {
			return sv, err
		}
		if len(msgs) < r.cfg.PageSize || last == rng.To {
			break
		}
		from = last.Next()
	}
	db, err := r.store.Database(k.Tenant)
	if err != nil {
		return sv, err
	}
	if loc, ok := locatorFor(k.Kind); ok {
		sv.Collection = loc.coll
		sv.OnlyInMongoChecked = true
		if err := r.listDocs(ctx, db, k, rng, loc, byDoc, order, &sv); err != nil {
			return sv, err
		}
	}
	// Look up by _id what listing did not find (all of it when the kind
	// cannot be listed; a second look for entries the daemon may have
	// stored meanwhile otherwise).
	var unseen []*redisEntry
	for _, e := range order {
		if !e.seen && e.coll != "" {
			unseen = append(unseen, e)
		}
	}
	if err := r.lookup(ctx, db, byDoc, unseen); err != nil {
		return sv, err
	}
	if err := r.lookupStandIns(ctx, db, k, order); err != nil {
		return sv, err
	}
	for _, e := range order {
		if e.seen {
			sv.Matched++
			if e.standIn {
				sv.StandIns++
			}
			continue
		}
		sv.MissingInMongo = append(sv.MissingInMongo, e.id)
		if e.undecodable != "" {
			sv.Undecodable = append(sv.Undecodable, Refusal{ID: e.id, Reason: e.undecodable})
		}
	}
	sortIDs(sv.OnlyInMongo)
	if len(sv.OnlyInMongo) > MaxListed {
		sv.OnlyInMongo = sv.OnlyInMongo[:MaxListed]
	}
	return sv, nil
}

// listDocs lists the documents of stream k in rng and marks those Redis
// still holds; the others are only in MongoDB.
func (r *Replayer) listDocs(ctx context.Context, db *mongo.Database, k keyspace.Key, rng Range, loc locator, byDoc map[string]*redisEntry, order []*redisEntry, sv *StreamVerify) error {
	byEntry := make(map[string]*redisEntry, len(order))
	for _, e := range order {
		byEntry[e.id] = e
	}
	filter := bson.D{{Key: "namespace", Value: k.Namespace}, {Key: "topic", Value: k.Name}}
	if loc.timeField != "" && rng.Bounded() {
		filter = append(filter, bson.E{Key: loc.timeField, Value: bson.D{
			{Key: "$gte", Value: msTime(rng.From.Ms)},
			{Key: "$lte", Value: msTime(rng.To.Ms)},
		}})
	}
	opts := options.Find().SetProjection(bson.D{{Key: "_id", Value: 1}, {Key: loc.idField, Value: 1}}).SetBatchSize(5000)
	cur, err := db.Collection(loc.coll).Find(ctx, filter, opts)
	if err != nil {
		return fmt.Errorf("list %s.%s: %w", db.Name(), loc.coll, err)
	}
	defer cur.Close(ctx)
	for cur.Next(ctx) {
		id := docID(cur.Current)
		if e, ok := byDoc[id]; ok {
			e.seen = true
			continue
		}
		v, err := cur.Current.LookupErr(loc.idField)
		if err != nil {
			continue
		}
		entryID, ok := v.StringValueOK()
		if !ok {
			continue
		}
		if eid, err := ParseID(entryID); err != nil || !rng.Contains(eid) {
			continue
		}
		if e, ok := byEntry[entryID]; ok {
			// Another document of the same entry (the stub of an entry too
			// large for a document, a persister-made dead letter of a
			// dead-letter entry): stored, another way.
			if !e.seen {
				e.seen, e.standIn = true, true
			}
			continue
		}
		sv.OnlyInMongoCount++
		sv.OnlyInMongo = append(sv.OnlyInMongo, entryID)
		if len(sv.OnlyInMongo) >= 2*MaxListed {
			sortIDs(sv.OnlyInMongo)
			sv.OnlyInMongo = sv.OnlyInMongo[:MaxListed]
		}
	}
	if err := cur.Err(); err != nil {
		return fmt.Errorf("list %s.%s: %w", db.Name(), loc.coll, err)
	}
	return nil
}

// lookup marks the entries whose document exists, by _id.
func (r *Replayer) lookup(ctx context.Context, db *mongo.Database, byDoc map[string]*redisEntry, entries []*redisEntry) error {
	if len(entries) == 0 {
		return nil
	}
	ids := map[*redisEntry]string{}
	for id, e := range byDoc {
		ids[e] = id
	}
	byColl := map[string][]string{}
	for _, e := range entries {
		byColl[e.coll] = append(byColl[e.coll], ids[e])
	}
	const chunk = 500
	for coll, all := range byColl {
		for i := 0; i < len(all); i += chunk {
			part := all[i:min(i+chunk, len(all))]
			cur, err := db.Collection(coll).Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: part}}}},
				options.Find().SetProjection(bson.D{{Key: "_id", Value: 1}}))
			if err != nil {
				return fmt.Errorf("look up %s.%s: %w", db.Name(), coll, err)
			}
			for cur.Next(ctx) {
				if e, ok := byDoc[docID(cur.Current)]; ok {
					e.seen = true
				}
			}
			err = cur.Err()
			_ = cur.Close(ctx)
			if err != nil {
				return fmt.Errorf("look up %s.%s: %w", db.Name(), coll, err)
			}
		}
	}
	return nil
}

// lookupStandIns looks for the persister's own dead letters (poison,
// refused) of the entries still unseen.
func (r *Replayer) lookupStandIns(ctx context.Context, db *mongo.Database, k keyspace.Key, order []*redisEntry) error {
	alt := map[string]*redisEntry{}
	var ids []string
	for _, e := range order {
		if e.seen {
			continue
		}
		for _, id := range []string{dlq.PoisonID(k, e.id), rescue.RefusedID(k, e.id)} {
			alt[id] = e
			ids = append(ids, id)
		}
	}
	const chunk = 500
	for i := 0; i < len(ids); i += chunk {
		part := ids[i:min(i+chunk, len(ids))]
		cur, err := db.Collection(config.CollDeadLetters).Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: part}}}},
			options.Find().SetProjection(bson.D{{Key: "_id", Value: 1}}))
		if err != nil {
			return fmt.Errorf("look up %s.%s: %w", db.Name(), config.CollDeadLetters, err)
		}
		for cur.Next(ctx) {
			if e, ok := alt[docID(cur.Current)]; ok {
				e.seen, e.standIn = true, true
			}
		}
		err = cur.Err()
		_ = cur.Close(ctx)
		if err != nil {
			return fmt.Errorf("look up %s.%s: %w", db.Name(), config.CollDeadLetters, err)
		}
	}
	return nil
}

func sortIDs(ids []string) {
	sort.Slice(ids, func(i, j int) bool {
		a, errA := ParseID(ids[i])
		b, errB := ParseID(ids[j])
		if errA != nil || errB != nil {
			return ids[i] < ids[j]
		}
		return a.Less(b)
	})
}
