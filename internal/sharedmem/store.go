package sharedmem

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"

	"github.com/chronow/persister/internal/bsonjson"
	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/message"
	"github.com/chronow/persister/internal/sink"
)

// Databases is what the store needs from the sink: a tenant's database and
// its schema (the unique index on key, namespace, tenantId, which the
// ordering guarantee relies on).
type Databases = sink.Databases

// The defects a stored value can have, kept in _system.defects.
const (
	DefectNotJSON     = "val_not_json"
	DefectKeysEscaped = "val_keys_escaped"
	// DefectUnicode: text with no exact UTF-8 form (a lone UTF-16
	// surrogate escape as JavaScript writes it, or bytes that are not
	// UTF-8) was stored with U+FFFD in its place.
	DefectUnicode = "val_unicode_replaced"
	// DefectRefused: the server refused the value; val is null and
	// _system.raw.val holds the exact text, _system.error the reason.
	DefectRefused = "refused_by_server"
	// DefectTooLarge: with DefectRefused, the value was too large to keep
	// its text in the document (over maxRawRescue bytes); only its hash is.
	DefectTooLarge = "val_too_large"
)

// maxRawRescue is the largest value whose exact text a rescue keeps in the
// document (well under the 16 MiB document limit).
const maxRawRescue = 8 << 20

// opsPerCommand caps the updates sent in one command. FerretDB (v1, SQLite)
// keeps the cursor of every update of a command open until the command
// ends, from a pool of 100 SQLite connections: a command of 100 updates that
// match existing documents never returns. 32 leaves room for other commands
// on the same database.
const opsPerCommand = 32

// outcome is what became of one observation's write.
type outcome uint8

const (
	// outWritten: the document now holds this observation.
	outWritten outcome = iota + 1
	// outStale: the document holds this version or a newer one.
	outStale
	// outRefused: this value can never be written as it is.
	outRefused
	// outRetry: not written; try again later.
	outRetry
)

// writeOp is one conditional upsert.
type writeOp struct {
	filter  bson.D
	update  bson.Raw
	ident   bson.D // the document's identity: key, namespace, tenantId
	version int64
	// refusedBy is set by write when the outcome is outRefused: the
	// server's error for this op.
	refusedBy error
}

// buildOp turns an observation into its conditional upsert. retentionDays
// is the tenant's retention for shared_memory (0: none).
//
// The filter matches the document only when it holds an older version (or
// none, when another writer created it): an older observation never
// replaces a newer one. When it does not match, the upsert's insert hits
// the unique index and fails with a duplicate key error, which the store
// reads as "stale" after one retry.
func buildOp(o *Observation, retentionDays int) (writeOp, error) {
	ident := bson.D{
		{Key: "key", Value: o.Key.Name},
		{Key: "namespace", Value: o.Key.Namespace},
		{Key: "tenantId", Value: o.Key.Tenant},
	}
	filter := append(ident[:len(ident):len(ident)],
		bson.E{Key: "$or", Value: bson.A{
			bson.D{{Key: "_system.version", Value: bson.D{{Key: "$lt", Value: o.Version}}}},
			bson.D{{Key: "_system.version", Value: bson.D{{Key: "$exists", Value: false}}}},
		}})
	at := o.millis()
	idx, u := bsoncore.AppendDocumentStart(nil)

	// $set
	sidx, u := bsoncore.AppendDocumentElementStart(u, "$set")
	var unset []string
	if o.Deleted {
		u = bsoncore.AppendBooleanElement(u, "_system.tombstone", true)
		u = bsoncore.AppendDateTimeElement(u, "_system.deletedAt", at)
		unset = append(unset, "_system.hash")
	} else {
		var (
			defects []string
			keepRaw bool
		)
		u, defects, keepRaw = appendValue(u, o)
		u = bsoncore.AppendStringElement(u, "_system.hash", o.Hash)
		if len(defects) > 0 {
			aidx, a := bsoncore.AppendArrayElementStart(u, "_system.defects")
			for i, d := range defects {
				a = bsoncore.AppendStringElement(a, fmt.Sprint(i), d)
			}
			u, _ = bsoncore.AppendArrayEnd(a, aidx)
		} else {
			unset = append(unset, "_system.defects")
		}
		if keepRaw {
			ridx, r := bsoncore.AppendDocumentElementStart(u, "_system.raw")
			r = message.AppendText(r, "val", string(o.Value))
			u, _ = bsoncore.AppendDocumentEnd(r, ridx)
		} else {
			unset = append(unset, "_system.raw")
		}
		if o.refusal != "" {
			u = bsoncore.AppendStringElement(u, "_system.error", o.refusal)
		} else {
			unset = append(unset, "_system.error")
		}
		unset = append(unset, "_system.tombstone", "_system.deletedAt")
	}
	u = bsoncore.AppendDateTimeElement(u, "_system.updatedAt", at)
	u = bsoncore.AppendInt64Element(u, "_system.version", o.Version)
	if retentionDays > 0 {
		u = bsoncore.AppendInt32Element(u, "_system.retentionDays", int32(retentionDays))
		u = bsoncore.AppendDateTimeElement(u, "_system.expireAt", at+int64(retentionDays)*int64(24*time.Hour/time.Millisecond))
	} else {
		unset = append(unset, "_system.retentionDays", "_system.expireAt")
	}
	u, _ = bsoncore.AppendDocumentEnd(u, sidx)

	// $setOnInsert
	oidx, u := bsoncore.AppendDocumentElementStart(u, "$setOnInsert")
	u = bsoncore.AppendDateTimeElement(u, "_system.createdAt", at)
	if o.Deleted {
		u = bsoncore.AppendNullElement(u, "val")
	}
	u, _ = bsoncore.AppendDocumentEnd(u, oidx)

	// $unset
	uidx, u := bsoncore.AppendDocumentElementStart(u, "$unset")
	for _, f := range unset {
		u = bsoncore.AppendStringElement(u, f, "")
	}
	u, _ = bsoncore.AppendDocumentEnd(u, uidx)

	u, _ = bsoncore.AppendDocumentEnd(u, idx)
	if len(u) > message.MaxDocBytes {
		return writeOp{}, fmt.Errorf("%s: %d bytes: %w", o.Key, len(u), message.ErrTooLarge)
	}
	return writeOp{filter: filter, update: u, ident: ident, version: o.Version}, nil
}

// appendValue appends val, the value as the document stores it, and says
// which defects it has and whether its exact text must be kept beside it.
func appendValue(u []byte, o *Observation) ([]byte, []string, bool) {
	if o.refusal != "" {
		if len(o.Value) > maxRawRescue {
			return bsoncore.AppendNullElement(u, "val"), []string{DefectRefused, DefectTooLarge}, false
		}
		return bsoncore.AppendNullElement(u, "val"), []string{DefectRefused}, true
	}
	out, res, err := bsonjson.AppendElement(u, "val", o.Value)
	if err != nil {
		if !utf8.Valid(o.Value) {
			return bsoncore.AppendStringElement(u, "val", strings.ToValidUTF8(string(o.Value), "\uFFFD")),
				[]string{DefectNotJSON, DefectUnicode}, true
		}
		return bsoncore.AppendStringElement(u, "val", string(o.Value)), []string{DefectNotJSON}, false
	}
	var defects []string
	if res.EscapedKeys {
		defects = append(defects, DefectKeysEscaped)
	}
	if res.Replaced {
		defects = append(defects, DefectUnicode)
	}
	return out, defects, len(defects) > 0
}

// store writes observations into tenants' shared_memory collections.
type store struct {
	dbs          Databases
	writeTimeout time.Duration
}

// write applies ops to one tenant's collection and returns one outcome per
// op. The error, when not nil, is why some ops got outRetry; an op refused
// for good gets outRefused and the server's error in its refusedBy.
//
// Ops go in unordered bulks of opsPerCommand. A bulk without error wrote
// every op. A bulk with write errors is replayed op by op: servers differ in
// what they report (FerretDB stops at the first error and reports it at
// index 0), and replaying is safe because every op is conditional on its
// version. A command-level error leaves the rest for a later retry.
func (s *store) write(ctx context.Context, tenant string, ops []writeOp) ([]outcome, error) {
	out := make([]outcome, len(ops))
	for i := range out {
		out[i] = outRetry
	}
	db, err := s.dbs.Database(tenant)
	if err != nil {
		return out, err
	}
	sctx, cancel := context.WithTimeout(ctx, s.writeTimeout)
	err = s.dbs.EnsureSchema(sctx, tenant)
	cancel()
	if err != nil {
		return out, err
	}
	coll := db.Collection(config.CollSharedMemory)
	var firstErr error
	for start := 0; start < len(ops); start += opsPerCommand {
		end := min(start+opsPerCommand, len(ops))
		chunk := ops[start:end]
		models := make([]mongo.WriteModel, len(chunk))
		for i, op := range chunk {
			models[i] = mongo.NewUpdateOneModel().SetFilter(op.filter).SetUpdate(op.update).SetUpsert(true)
		}
		cctx, cancel := context.WithTimeout(ctx, s.writeTimeout)
		_, err := coll.BulkWrite(cctx, models, options.BulkWrite().SetOrdered(false))
		cancel()
		if err == nil {
			for i := start; i < end; i++ {
				out[i] = outWritten
			}
			continue
		}
		var bwe mongo.BulkWriteException
		if !errors.As(err, &bwe) || bwe.WriteConcernError != nil || len(bwe.WriteErrors) == 0 {
			return out, fmt.Errorf("bulk upsert into %s.%s: %w", db.Name(), config.CollSharedMemory, err)
		}
		for i, op := range chunk {
			o, err := s.writeOne(ctx, coll, op)
			out[start+i] = o
			if o == outRefused {
				chunk[i].refusedBy = err
			}
			if err != nil && firstErr == nil {
				firstErr = err
			}
			if o == outRetry {
				return out, firstErr
			}
		}
	}
	return out, firstErr
}

// writeOne applies one op. A duplicate key error means the document exists
// with this version or a newer one, or that another writer inserted it an
// instant ago; the second attempt tells them apart, since the document then
// exists. When it holds exactly this version, an earlier attempt whose
// answer was lost (a timeout) wrote it: that is a write, not a stale value.
func (s *store) writeOne(ctx context.Context, coll *mongo.Collection, op writeOp) (outcome, error) {
	for attempt := range 2 {
		cctx, cancel := context.WithTimeout(ctx, s.writeTimeout)
		_, err := coll.UpdateOne(cctx, op.filter, op.update, options.Update().SetUpsert(true))
		cancel()
		switch {
		case err == nil:
			return outWritten, nil
		case mongo.IsDuplicateKeyError(err) && attempt == 0:
			continue
		case mongo.IsDuplicateKeyError(err):
			return s.storedVersionIs(ctx, coll, op)
		}
		switch classify(err) {
		case sink.ClassPermanent:
			return outRefused, err
		default:
			return outRetry, err
		}
	}
	return outStale, nil
}

// storedVersionIs tells whether the stored document holds op's version
// (outWritten: ours, from an attempt whose answer was lost) or another,
// newer one (outStale).
func (s *store) storedVersionIs(ctx context.Context, coll *mongo.Collection, op writeOp) (outcome, error) {
	cctx, cancel := context.WithTimeout(ctx, s.writeTimeout)
	defer cancel()
	var d struct {
		System struct {
			Version int64 `bson:"version"`
		} `bson:"_system"`
	}
	err := coll.FindOne(cctx, op.ident, options.FindOne().SetProjection(bson.D{{Key: "_system.version", Value: 1}})).Decode(&d)
	if err != nil {
		return outRetry, fmt.Errorf("read the stored version after a duplicate key error: %w", err)
	}
	if d.System.Version == op.version {
		return outWritten, nil
	}
	return outStale, nil
}

// classify classifies the error of one update.
func classify(err error) sink.Class {
	var we mongo.WriteException
	if errors.As(err, &we) && we.WriteConcernError == nil && len(we.WriteErrors) > 0 {
		return sink.ClassifyCode(we.WriteErrors[0].Code, we.WriteErrors[0].Message)
	}
	return sink.Classify(err)
}

// storedState is what the collection holds for one key.
type storedState struct {
	hash    string // tombstoneHash for a tombstone, "" when unknown
	version int64
}

// lookup reads the stored hash and version of names in one namespace of a
// tenant's collection. Names without a document are absent from the map.
func (s *store) lookup(ctx context.Context, tenant, namespace string, names []string) (map[string]storedState, error) {
	db, err := s.dbs.Database(tenant)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.writeTimeout)
	defer cancel()
	filter := bson.D{
		{Key: "key", Value: bson.D{{Key: "$in", Value: names}}},
		{Key: "namespace", Value: namespace},
		{Key: "tenantId", Value: tenant},
	}
	proj := bson.D{{Key: "key", Value: 1}, {Key: "_system.hash", Value: 1}, {Key: "_system.version", Value: 1}, {Key: "_system.tombstone", Value: 1}}
	cur, err := db.Collection(config.CollSharedMemory).Find(ctx, filter, options.Find().SetProjection(proj))
	if err != nil {
		return nil, fmt.Errorf("read stored hashes from %s.%s: %w", db.Name(), config.CollSharedMemory, err)
	}
	defer cur.Close(ctx)
	out := make(map[string]storedState, len(names))
	for cur.Next(ctx) {
		var d struct {
			Key    string `bson:"key"`
			System struct {
				Hash      string `bson:"hash"`
				Version   int64  `bson:"version"`
				Tombstone bool   `bson:"tombstone"`
			} `bson:"_system"`
		}
		if err := cur.Decode(&d); err != nil {
			return nil, fmt.Errorf("decode stored hash from %s.%s: %w", db.Name(), config.CollSharedMemory, err)
		}
		st := storedState{hash: d.System.Hash, version: d.System.Version}
		if d.System.Tombstone {
			st.hash = tombstoneHash
		}
		out[d.Key] = st
	}
	if err := cur.Err(); err != nil {
		return nil, fmt.Errorf("read stored hashes from %s.%s: %w", db.Name(), config.CollSharedMemory, err)
	}
	return out, nil
}
