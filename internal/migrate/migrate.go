// Package migrate creates and reports a tenant database's collections,
// indexes and retention (TTL) indexes.
package migrate

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/sink"
)

// RetentionIndexName is the name of the TTL index migrate keeps on a
// collection with a retention. Only an index of this name is ever dropped.
const RetentionIndexName = "retention_ttl"

// SharedMemoryExpireField is the field of a shared_memory document holding
// its own expiry time (updatedAt plus its _system.retentionDays); the TTL
// index on it expires each document at that time.
const SharedMemoryExpireField = "_system.expireAt"

// Retention statuses.
const (
	StatusCreated     = "created"
	StatusExists      = "exists"
	StatusUpdated     = "updated"
	StatusDropped     = "dropped"
	StatusWouldCreate = "would-create"
	StatusWouldUpdate = "would-update"
	StatusWouldDrop   = "would-drop"
	StatusUnsupported = "unsupported"
	StatusSkipped     = "skipped"
)

// ErrTTLUnsupported is returned when the server refuses TTL indexes.
var ErrTTLUnsupported = errors.New("the server does not support TTL indexes: retention is not enforced")

// TTL is the retention index of one collection.
type TTL struct {
	Collection string
	// Field is the date field documents expire by.
	Field string
	// Days is the configured retention.
	Days int
	// ExpireAfterSeconds is the index option.
	ExpireAfterSeconds int64
}

// ExpiryField returns the date field a collection's documents expire by,
// and whether the expiry is per document (the field holds the expiry time
// itself, expireAfterSeconds 0).
//
//   - messages: firstSeenAt, the time Redis accepted the entry (its stream
//     id), so a message replayed later still expires by its own age;
//   - dead_letters: failedAt;
//   - topics: _system.updatedAt (a topic not seen for the period goes);
//   - shared_memory: _system.expireAt, set by the writer from the value's
//     _system.retentionDays.
func ExpiryField(collection string) (field string, perDocument bool) {
	switch collection {
	case config.CollMessages:
		return "firstSeenAt", false
	case config.CollDeadLetters:
		return "failedAt", false
	case config.CollTopics:
		return "_system.updatedAt", false
	case config.CollSharedMemory:
		return SharedMemoryExpireField, true
	}
	return "", false
}

// RetentionIndexes returns the TTL index for each collection with a
// retention, in collection order.
func RetentionIndexes(days map[string]int) []TTL {
	var out []TTL
	for _, c := range config.Collections {
		d, ok := days[c]
		if !ok || d <= 0 {
			continue
		}
		field, perDoc := ExpiryField(c)
		t := TTL{Collection: c, Field: field, Days: d, ExpireAfterSeconds: int64(d) * 86400}
		if perDoc {
			t.ExpireAfterSeconds = 0
		}
		out = append(out, t)
	}
	return out
}

// Options tunes a migration.
type Options struct {
	// DryRun reports what would be done and writes nothing.
	DryRun bool
	// SkipRetention leaves TTL indexes alone (for servers without TTL
	// support, or when retention is enforced elsewhere).
	SkipRetention bool
}

// RetentionResult is what happened to one retention index.
type RetentionResult struct {
	Collection         string `json:"collection"`
	Field              string `json:"field"`
	Days               int    `json:"days,omitempty"`
	ExpireAfterSeconds int64  `json:"expireAfterSeconds"`
	Index              string `json:"index"`
	Status             string `json:"status"`
	Detail             string `json:"detail,omitempty"`
}

// TenantReport says what a migration found and did for one tenant.
type TenantReport struct {
	Tenant              string            `json:"tenant"`
	Database            string            `json:"database"`
	Connection          string            `json:"connection"`
	DryRun              bool              `json:"dryRun"`
	CreatedCollections  []string          `json:"createdCollections"`
	ExistingCollections []string          `json:"existingCollections"`
	CreatedIndexes      []string          `json:"createdIndexes"`
	ExistingIndexes     []string          `json:"existingIndexes"`
	Retention           []RetentionResult `json:"retention"`
	Sharding            []ShardResult     `json:"sharding,omitempty"`
	Warnings            []string          `json:"warnings,omitempty"`
	Error               string            `json:"error,omitempty"`
}

// Tenant creates (or with DryRun, reports) the collections and indexes of
// one tenant's database, then its retention indexes. The report holds what
// was done even when an error is returned. A server that refuses TTL
// indexes yields ErrTTLUnsupported after everything else was done.
func Tenant(ctx context.Context, db *mongo.Database, t config.TenantDatabase, o Options) (TenantReport, error) {
	rep := TenantReport{Tenant: t.TenantID, Database: t.DBName, Connection: t.DBConnRef, DryRun: o.DryRun}
	sr, err := sink.EnsureSchema(ctx, db, o.DryRun)
	rep.CreatedCollections = nonNil(sr.CreatedCollections)
	rep.ExistingCollections = nonNil(sr.ExistingCollections)
	rep.CreatedIndexes = nonNil(sr.CreatedIndexes)
	rep.ExistingIndexes = nonNil(sr.ExistingIndexes)
	rep.Warnings = sr.Warnings
	rep.Retention = []RetentionResult{}
	if err != nil {
		rep.Error = err.Error()
		return rep, err
	}
	if o.SkipRetention {
		for _, ttl := range RetentionIndexes(t.RetentionDays) {
			rep.Retention = append(rep.Retention, result(ttl, StatusSkipped, "--skip-retention"))
		}
		return rep, nil
	}
	res, err := retention(ctx, db, t.RetentionDays, o.DryRun)
	rep.Retention = append(rep.Retention, res...)
	if err != nil {
		rep.Error = err.Error()
	}
	return rep, err
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func result(t TTL, status, detail string) RetentionResult {
	return RetentionResult{
		Collection: t.Collection, Field: t.Field, Days: t.Days, ExpireAfterSeconds: t.ExpireAfterSeconds,
		Index: RetentionIndexName, Status: status, Detail: detail,
	}
}

// retention makes each collection's TTL index match the configured days:
// created when missing, updated (collMod) when the period changed, dropped
// when the retention was removed from the configuration.
func retention(ctx context.Context, db *mongo.Database, days map[string]int, dryRun bool) ([]RetentionResult, error) {
	want := map[string]TTL{}
	for _, t := range RetentionIndexes(days) {
		want[t.Collection] = t
	}
	ferret := isFerretDB(ctx, db)
	var out []RetentionResult
	unsupported := 0
	for _, coll := range config.Collections {
		have, err := listIndexes(ctx, db.Collection(coll))
		if err != nil {
			return out, err
		}
		t, wanted := want[coll]
		if !wanted {
			if ix, ok := have[RetentionIndexName]; ok && ix.ttl {
				r := RetentionResult{Collection: coll, Field: strings.Join(ix.keys, ","), ExpireAfterSeconds: ix.expire, Index: RetentionIndexName,
					Detail: "no retentionDays configured for this collection: documents no longer expire"}
				if dryRun {
					r.Status = StatusWouldDrop
				} else {
					if _, err := db.Collection(coll).Indexes().DropOne(ctx, RetentionIndexName); err != nil {
						return out, fmt.Errorf("drop index %s.%s.%s: %w", db.Name(), coll, RetentionIndexName, err)
					}
					r.Status = StatusDropped
				}
				out = append(out, r)
			}
			continue
		}
		r, err := ensureTTL(ctx, db, t, have, dryRun, ferret)
		if err != nil {
			return out, err
		}
		if r.Status == StatusUnsupported {
			unsupported++
		}
		out = append(out, r)
	}
	if unsupported > 0 {
		return out, fmt.Errorf("database %s: %d retention index(es) not applied: %w", db.Name(), unsupported, ErrTTLUnsupported)
	}
	return out, nil
}

// ttlAction is what a collection's retention index needs.
type ttlAction int

const (
	ttlKeep ttlAction = iota
	ttlCreate
	ttlUpdate
	ttlConflict
)

// decideTTL compares the wanted TTL index with the collection's indexes:
// a TTL index on the field (either direction, any name) with the same
// period is kept, one with another period is updated in place, none is
// created; an index with the retention name on another field conflicts.
func decideTTL(t TTL, have map[string]indexInfo) (ttlAction, string, indexInfo) {
	if name, cur, found := findSingleField(have, t.Field); found {
		if cur.expire == t.ExpireAfterSeconds {
			return ttlKeep, name, cur
		}
		return ttlUpdate, name, cur
	}
	if ix, ok := have[RetentionIndexName]; ok {
		return ttlConflict, RetentionIndexName, ix
	}
	return ttlCreate, RetentionIndexName, indexInfo{}
}

func ensureTTL(ctx context.Context, db *mongo.Database, t TTL, have map[string]indexInfo, dryRun, ferret bool) (RetentionResult, error) {
	if t.ExpireAfterSeconds > math.MaxInt32 {
		return result(t, "", ""), fmt.Errorf("%w: retentionDays[%q] = %d: MongoDB's TTL limit is %d days", config.ErrInvalid, t.Collection, t.Days, math.MaxInt32/86400)
	}
	action, name, cur := decideTTL(t, have)
	r := result(t, "", "")
	r.Index = name
	switch action {
	case ttlKeep:
		r.Status = StatusExists
		return r, nil
	case ttlConflict:
		return r, fmt.Errorf("%s.%s has an index named %q on (%s), not a TTL index on %s: drop it (db.%s.dropIndex(%q)) and run migrate again: %w",
			db.Name(), t.Collection, name, strings.Join(cur.keys, ", "), t.Field, t.Collection, name, errConflict)
	case ttlUpdate:
		r.Detail = fmt.Sprintf("expireAfterSeconds was %d", cur.expire)
		if dryRun {
			r.Status = StatusWouldUpdate
			return r, nil
		}
		err := db.RunCommand(ctx, bson.D{
			{Key: "collMod", Value: t.Collection},
			{Key: "index", Value: bson.D{{Key: "name", Value: name}, {Key: "expireAfterSeconds", Value: t.ExpireAfterSeconds}}},
		}).Err()
		if isUnsupported(err) {
			r.Status, r.Detail = StatusUnsupported, "the server refused collMod: "+err.Error()
			return r, nil
		}
		if err != nil {
			return r, fmt.Errorf("update TTL index %s.%s.%s: %w", db.Name(), t.Collection, name, err)
		}
		r.Status = StatusUpdated
		return r, nil
	}
	if dryRun {
		r.Status = StatusWouldCreate
		if ferret {
			r.Status, r.Detail = StatusUnsupported, "the server is FerretDB, which refuses TTL indexes"
		}
		return r, nil
	}
	_, err := db.Collection(t.Collection).Indexes().CreateOne(ctx, mongo.IndexModel{
		Keys:    bson.D{{Key: t.Field, Value: 1}},
		Options: options.Index().SetName(RetentionIndexName).SetExpireAfterSeconds(int32(t.ExpireAfterSeconds)),
	})
	if isUnsupported(err) {
		r.Status, r.Detail = StatusUnsupported, "the server refused the index: "+err.Error()
		return r, nil
	}
	if err != nil {
		return r, fmt.Errorf("create TTL index %s.%s on %s: %w", db.Name(), t.Collection, t.Field, err)
	}
	r.Status = StatusCreated
	return r, nil
}

var errConflict = errors.New("conflicting index")

type indexInfo struct {
	keys   []string
	ttl    bool
	expire int64
}

func listIndexes(ctx context.Context, coll *mongo.Collection) (map[string]indexInfo, error) {
	out := map[string]indexInfo{}
	cur, err := coll.Indexes().List(ctx)
	if err != nil {
		// A collection that does not exist yet (dry run) has no indexes.
		var ce mongo.CommandError
		if errors.As(err, &ce) && (ce.Code == 26 || ce.Name == "NamespaceNotFound") {
			return out, nil
		}
		return nil, fmt.Errorf("list indexes of %s: %w", coll.Name(), err)
	}
	defer cur.Close(ctx)
	for cur.Next(ctx) {
		var ix struct {
			Name string `bson:"name"`
			Key  bson.D `bson:"key"`
		}
		if err := cur.Decode(&ix); err != nil {
			return nil, fmt.Errorf("decode index of %s: %w", coll.Name(), err)
		}
		info := indexInfo{}
		for _, k := range ix.Key {
			info.keys = append(info.keys, k.Key)
		}
		if v, err := cur.Current.LookupErr("expireAfterSeconds"); err == nil {
			if n, ok := v.AsInt64OK(); ok {
				info.ttl, info.expire = true, n
			} else if f, ok := v.DoubleOK(); ok {
				info.ttl, info.expire = true, int64(f)
			}
		}
		out[ix.Name] = info
	}
	if err := cur.Err(); err != nil {
		return nil, fmt.Errorf("list indexes of %s: %w", coll.Name(), err)
	}
	return out, nil
}

// findSingleField finds a TTL index on exactly field (either direction),
// preferring the retention index name.
func findSingleField(have map[string]indexInfo, field string) (string, indexInfo, bool) {
	if ix, ok := have[RetentionIndexName]; ok && ix.ttl && len(ix.keys) == 1 && ix.keys[0] == field {
		return RetentionIndexName, ix, true
	}
	names := make([]string, 0, len(have))
	for n := range have {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		ix := have[n]
		if ix.ttl && len(ix.keys) == 1 && ix.keys[0] == field {
			return n, ix, true
		}
	}
	return "", indexInfo{}, false
}

// isFerretDB reports whether the server says it is FerretDB (buildInfo
// carries ferretdbVersion), which refuses TTL indexes as of v1.24.
func isFerretDB(ctx context.Context, db *mongo.Database) bool {
	raw, err := db.RunCommand(ctx, bson.D{{Key: "buildInfo", Value: 1}}).Raw()
	if err != nil {
		return false
	}
	_, err = raw.LookupErr("ferretdbVersion")
	return err == nil
}

// isUnsupported reports an error that means the server lacks the feature:
// NotImplemented (238), CommandNotSupported (115), CommandNotFound (59), or
// FerretDB's "not implemented" texts.
func isUnsupported(err error) bool {
	if err == nil {
		return false
	}
	var ce mongo.CommandError
	if errors.As(err, &ce) {
		switch ce.Code {
		case 238, 115, 59:
			return true
		}
	}
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "not implemented") || strings.Contains(s, "not supported")
}
