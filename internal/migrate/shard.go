package migrate

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/rescue"
)

// ErrNotMongos is returned when --shard is asked of a server that is not
// the router (mongos) of a sharded cluster.
var ErrNotMongos = errors.New("not a mongos: collections can only be sharded through a sharded cluster's router")

// ShardKey is the shard key migrate gives one collection of a tenant
// database (docs/scaling.md explains each choice).
type ShardKey struct {
	Collection string
	Key        bson.D
	// Index, when set, is created first: the index the shard key needs
	// that the schema does not already hold (unique with Unique).
	Index  bson.D
	Unique bool
}

// String renders the key like the shell does: {topic: 1, msgId: 1}.
func (k ShardKey) String() string { return keyString(k.Key) }

func keyString(d bson.D) string {
	parts := make([]string, len(d))
	for i, e := range d {
		parts[i] = fmt.Sprintf("%s: %v", e.Key, e.Value)
		if s, ok := e.Value.(string); ok {
			parts[i] = fmt.Sprintf("%s: %q", e.Key, s)
		}
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// ShardKeys lists the collections migrate shards and their keys. Every
// unique index the daemon creates has its collection's shard key as a
// prefix, and every upsert filter holds the whole shard key:
//
//   - messages {topic: 1, msgId: 1}: a prefix of the unique index {topic,
//     msgId, tenantId, namespace}, so a redelivered entry meets its first
//     copy on the same shard and is refused as a duplicate. Inserts only.
//   - dead_letters {_id: "hashed"}: its only unique index is _id (a
//     deterministic id), which a shard key on _id makes unique across the
//     cluster; inserts, and requeue's update by _id.
//   - shared_memory {key: 1, namespace: 1}: a prefix of the unique index
//     {key, namespace, tenantId}; the upsert filters name all three.
//   - raw_entries.chunks {files_id: 1, n: 1}: GridFS's own index (dead
//     letters' raw bodies). Inserts only.
//
// topics and raw_entries.files stay unsharded on the database's primary
// shard: one small document per topic or per oversized entry.
func ShardKeys() []ShardKey {
	return []ShardKey{
		{Collection: config.CollMessages, Key: bson.D{{Key: "topic", Value: 1}, {Key: "msgId", Value: 1}}},
		{Collection: config.CollDeadLetters, Key: bson.D{{Key: "_id", Value: "hashed"}},
			Index: bson.D{{Key: "_id", Value: "hashed"}}},
		{Collection: config.CollSharedMemory, Key: bson.D{{Key: "key", Value: 1}, {Key: "namespace", Value: 1}}},
		{Collection: rescue.Bucket + ".chunks", Key: bson.D{{Key: "files_id", Value: 1}, {Key: "n", Value: 1}},
			Index: bson.D{{Key: "files_id", Value: 1}, {Key: "n", Value: 1}}, Unique: true}, // as GridFS creates it
	}
}

// Sharding statuses.
const (
	StatusSharded    = "sharded"
	StatusWouldShard = "would-shard"
	StatusFailed     = "failed"
)

// ShardResult is what happened to one collection.
type ShardResult struct {
	Collection string `json:"collection"`
	Key        string `json:"key"`
	Status     string `json:"status"`
	Detail     string `json:"detail,omitempty"`
}

// Runner runs one command against a database (the admin database for
// hello, enableSharding and shardCollection) and returns the reply.
type Runner func(ctx context.Context, db string, cmd bson.D) (bson.Raw, error)

// DatabaseRunner returns a Runner on client.
func DatabaseRunner(client *mongo.Client) Runner {
	return func(ctx context.Context, db string, cmd bson.D) (bson.Raw, error) {
		return client.Database(db).RunCommand(ctx, cmd).Raw()
	}
}

// CheckMongos asks the server `hello`; a mongos answers msg "isdbgrid".
func CheckMongos(ctx context.Context, run Runner) error {
	reply, err := run(ctx, "admin", bson.D{{Key: "hello", Value: 1}})
	if err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	if msg, ok := reply.Lookup("msg").StringValueOK(); ok && msg == "isdbgrid" {
		return nil
	}
	return ErrNotMongos
}

// EnableShardingCommand is the admin command that enables sharding of db
// (needed before MongoDB 6.0, harmless after).
func EnableShardingCommand(db string) bson.D {
	return bson.D{{Key: "enableSharding", Value: db}}
}

// ShardCollectionCommand is the admin command that shards db.coll on key.
func ShardCollectionCommand(db string, k ShardKey) bson.D {
	return bson.D{{Key: "shardCollection", Value: db + "." + k.Collection}, {Key: "key", Value: k.Key}}
}

// CreateIndexCommand creates the index a shard key needs (a no-op when an
// identical one exists).
func CreateIndexCommand(k ShardKey) bson.D {
	ix := bson.D{{Key: "key", Value: k.Index}, {Key: "name", Value: indexName(k.Index)}}
	if k.Unique {
		ix = append(ix, bson.E{Key: "unique", Value: true})
	}
	return bson.D{{Key: "createIndexes", Value: k.Collection}, {Key: "indexes", Value: bson.A{ix}}}
}

func indexName(keys bson.D) string {
	parts := make([]string, len(keys))
	for i, e := range keys {
		parts[i] = fmt.Sprintf("%s_%v", e.Key, e.Value)
	}
	return strings.Join(parts, "_")
}

// Shard shards db's collections on ShardKeys through a mongos: it checks
// the server is one, enables sharding of the database, creates the indexes
// the keys need, and shards each collection (idempotent: a collection
// already sharded on the same key is fine). Run it after Tenant, which
// creates the unique indexes the keys are prefixes of. With dryRun it
// only checks the server and reports.
func Shard(ctx context.Context, run Runner, db string, dryRun bool) ([]ShardResult, error) {
	keys := ShardKeys()
	out := make([]ShardResult, 0, len(keys))
	if err := CheckMongos(ctx, run); err != nil {
		return out, err
	}
	if dryRun {
		for _, k := range keys {
			out = append(out, ShardResult{Collection: k.Collection, Key: k.String(), Status: StatusWouldShard})
		}
		return out, nil
	}
	if _, err := run(ctx, "admin", EnableShardingCommand(db)); err != nil && !isAlreadyInitialized(err) {
		return out, fmt.Errorf("enableSharding %s: %w", db, err)
	}
	var errs []error
	for _, k := range keys {
		r := ShardResult{Collection: k.Collection, Key: k.String(), Status: StatusSharded}
		err := shardOne(ctx, run, db, k)
		if err != nil {
			r.Status, r.Detail = StatusFailed, err.Error()
			errs = append(errs, fmt.Errorf("%s.%s: %w", db, k.Collection, err))
		}
		out = append(out, r)
	}
	return out, errors.Join(errs...)
}

func shardOne(ctx context.Context, run Runner, db string, k ShardKey) error {
	if k.Index != nil {
		if _, err := run(ctx, db, CreateIndexCommand(k)); err != nil {
			return fmt.Errorf("create the shard key index %s: %w", k, err)
		}
	}
	if _, err := run(ctx, "admin", ShardCollectionCommand(db, k)); err != nil {
		return fmt.Errorf("shardCollection on %s: %w", k, err)
	}
	return nil
}

// isAlreadyInitialized reports MongoDB's AlreadyInitialized (code 23),
// the answer of enableSharding on a database sharding is enabled for on
// some versions.
func isAlreadyInitialized(err error) bool {
	var ce mongo.CommandError
	return errors.As(err, &ce) && ce.Code == 23
}
