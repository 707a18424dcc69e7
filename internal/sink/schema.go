package sink

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/chronow/persister/internal/config"
)

// ErrLegacyIndex is returned when a collection holds a unique index that
// would merge documents of different namespaces into one.
var ErrLegacyIndex = errors.New("conflicting legacy unique index")

// Index is one index the persister keeps on a collection.
type Index struct {
	Collection string
	Keys       bson.D
	Unique     bool
	Sparse     bool
}

// Name returns MongoDB's default name for the index.
func (i Index) Name() string {
	parts := make([]string, 0, len(i.Keys))
	for _, k := range i.Keys {
		parts = append(parts, fmt.Sprintf("%s_%v", k.Key, k.Value))
	}
	return strings.Join(parts, "_")
}

// Indexes lists every index of a messaging database: the seed's, with
// namespace added to the unique identities (two namespaces of one tenant
// may hold the same topic and the same stream ids).
func Indexes() []Index {
	return []Index{
		{Collection: config.CollMessages, Keys: bson.D{{Key: "topic", Value: 1}, {Key: "msgId", Value: 1}, {Key: "tenantId", Value: 1}, {Key: "namespace", Value: 1}}, Unique: true},
		{Collection: config.CollMessages, Keys: bson.D{{Key: "firstSeenAt", Value: -1}}},
		{Collection: config.CollMessages, Keys: bson.D{{Key: "topic", Value: 1}, {Key: "firstSeenAt", Value: -1}}},
		{Collection: config.CollDeadLetters, Keys: bson.D{{Key: "topic", Value: 1}, {Key: "failedAt", Value: -1}}},
		{Collection: config.CollDeadLetters, Keys: bson.D{{Key: "failedAt", Value: -1}}},
		{Collection: config.CollTopics, Keys: bson.D{{Key: "topic", Value: 1}, {Key: "tenantId", Value: 1}, {Key: "namespace", Value: 1}}, Unique: true},
		{Collection: config.CollSharedMemory, Keys: bson.D{{Key: "key", Value: 1}, {Key: "namespace", Value: 1}, {Key: "tenantId", Value: 1}}, Unique: true},
		{Collection: config.CollSharedMemory, Keys: bson.D{{Key: "_system.updatedAt", Value: -1}}},
		{Collection: config.CollSharedMemory, Keys: bson.D{{Key: "_system.deletedAt", Value: 1}}, Sparse: true},
	}
}

// legacyUnique are unique indexes of the seed that lack namespace. Kept, they
// would make the message of a second namespace look like a duplicate and be
// acknowledged without being stored.
var legacyUnique = map[string][]string{
	config.CollMessages: {"topic", "msgId", "tenantId"},
	config.CollTopics:   {"topic", "tenantId"},
}

// SchemaReport says what EnsureSchema found and did.
type SchemaReport struct {
	CreatedCollections  []string
	ExistingCollections []string
	CreatedIndexes      []string
	ExistingIndexes     []string
	Warnings            []string
}

// EnsureSchema creates the four collections and every index of a messaging
// database, idempotently. With dryRun it only reports what it would create.
func EnsureSchema(ctx context.Context, db *mongo.Database, dryRun bool) (SchemaReport, error) {
	var rep SchemaReport
	names, err := db.ListCollectionNames(ctx, bson.D{})
	if err != nil {
		return rep, fmt.Errorf("list collections of %s: %w", db.Name(), err)
	}
	have := map[string]bool{}
	for _, n := range names {
		have[n] = true
	}
	for _, c := range config.Collections {
		if have[c] {
			rep.ExistingCollections = append(rep.ExistingCollections, c)
			continue
		}
		rep.CreatedCollections = append(rep.CreatedCollections, c)
		if dryRun {
			continue
		}
		if err := db.CreateCollection(ctx, c); err != nil && !isNamespaceExists(err) {
			return rep, fmt.Errorf("create collection %s.%s: %w", db.Name(), c, err)
		}
	}
	existing := map[string]map[string]indexSpec{}
	for _, c := range config.Collections {
		if !have[c] {
			existing[c] = map[string]indexSpec{}
			continue
		}
		specs, err := listIndexes(ctx, db.Collection(c))
		if err != nil {
			return rep, err
		}
		existing[c] = specs
		if legacy, ok := legacyUnique[c]; ok {
			for name, s := range specs {
				if s.unique && sameKeys(s.keys, legacy) {
					return rep, fmt.Errorf("%s.%s has unique index %q on (%s), which would merge namespaces: drop it (db.%s.dropIndex(%q)) and start again: %w",
						db.Name(), c, name, strings.Join(legacy, ", "), c, name, ErrLegacyIndex)
				}
			}
		}
	}
	for _, ix := range Indexes() {
		label := ix.Collection + "." + ix.Name()
		if _, ok := existing[ix.Collection][ix.Name()]; ok {
			rep.ExistingIndexes = append(rep.ExistingIndexes, label)
			continue
		}
		if s, ok := findByKeys(existing[ix.Collection], ix.Keys); ok && s.unique == ix.Unique {
			rep.ExistingIndexes = append(rep.ExistingIndexes, label)
			continue
		}
		rep.CreatedIndexes = append(rep.CreatedIndexes, label)
		if dryRun {
			continue
		}
		opts := options.Index().SetName(ix.Name())
		if ix.Unique {
			opts.SetUnique(true)
		}
		if ix.Sparse {
			opts.SetSparse(true)
		}
		_, err := db.Collection(ix.Collection).Indexes().CreateOne(ctx, mongo.IndexModel{Keys: ix.Keys, Options: opts})
		if err != nil && ix.Sparse && isNotImplemented(err) {
			// FerretDB v1 lacks sparse indexes; a plain index serves the same
			// queries, only larger.
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s: server does not support sparse indexes, created a plain one", label))
			_, err = db.Collection(ix.Collection).Indexes().CreateOne(ctx, mongo.IndexModel{Keys: ix.Keys, Options: options.Index().SetName(ix.Name())})
		}
		if err != nil {
			return rep, fmt.Errorf("create index %s.%s: %w", db.Name(), label, err)
		}
	}
	return rep, nil
}

type indexSpec struct {
	keys   []string
	unique bool
}

func listIndexes(ctx context.Context, coll *mongo.Collection) (map[string]indexSpec, error) {
	cur, err := coll.Indexes().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list indexes of %s: %w", coll.Name(), err)
	}
	defer cur.Close(ctx)
	out := map[string]indexSpec{}
	for cur.Next(ctx) {
		var ix struct {
			Name   string `bson:"name"`
			Key    bson.D `bson:"key"`
			Unique bool   `bson:"unique"`
		}
		if err := cur.Decode(&ix); err != nil {
			return nil, fmt.Errorf("decode index of %s: %w", coll.Name(), err)
		}
		var keys []string
		for _, k := range ix.Key {
			keys = append(keys, k.Key)
		}
		out[ix.Name] = indexSpec{keys: keys, unique: ix.Unique}
	}
	if err := cur.Err(); err != nil {
		return nil, fmt.Errorf("list indexes of %s: %w", coll.Name(), err)
	}
	return out, nil
}

func sameKeys(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func findByKeys(specs map[string]indexSpec, keys bson.D) (indexSpec, bool) {
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.Key
	}
	for _, s := range specs {
		if sameKeys(s.keys, names) {
			return s, true
		}
	}
	return indexSpec{}, false
}

func isNamespaceExists(err error) bool {
	var ce mongo.CommandError
	return errors.As(err, &ce) && (ce.Code == 48 || ce.Name == "NamespaceExists")
}

func isNotImplemented(err error) bool {
	var ce mongo.CommandError
	if errors.As(err, &ce) && (ce.Code == 238 || ce.Name == "NotImplemented") {
		return true
	}
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "not implemented") || strings.Contains(s, "not supported")
}
