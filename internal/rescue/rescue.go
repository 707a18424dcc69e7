// Package rescue stores what cannot be stored the usual way: an entry too
// large for a document, or a document the server refuses for good, keeps
// its raw bytes in the raw_entries GridFS bucket and is stored as a stub
// document (or, when even that is refused, a dead letter) that points at
// them; it also writes the dead letters the persister makes itself
// (internal/dlq's poison) under the same rules.
//
// Every document made here has a deterministic _id, so a redelivered entry
// finds its document already stored (duplicate key = success) and the
// outcome is the same on every delivery.
package rescue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"

	"github.com/chronow/persister/internal/batch"
	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/message"
	"github.com/chronow/persister/metrics"
)

// Config tunes the Rescuer (and internal/dlq's Poison).
type Config struct {
	// Layout is where Chronow's keys are, to parse stream keys.
	Layout keyspace.Layout
	// WriteTimeout bounds one insert.
	WriteTimeout time.Duration
	// Attempts bounds the inserts of one rescue when the server is
	// unavailable (default 6, about 6 s of backoff); then the entry stays
	// pending and is tried again at its next delivery.
	Attempts int
}

// Rescuer stores entries whose usual document cannot be stored: it
// implements batch.Rescuer (documents the server refused for good, and
// entries no document could be built for, e.g. over
// the BSON limit). What could not go in a document goes to the raw_entries
// bucket first; then a stub document, with the usual _id, is handed back to
// the batcher, which stores it and acknowledges the entry.
type Rescuer struct {
	cfg   Config
	w     writer
	blobs *blobs
	notes Notes
	m     *metrics.Metrics
	log   *slog.Logger
}

var _ batch.Rescuer = (*Rescuer)(nil)

// Notes is told why an entry was left pending (internal/dlq's Memo, which
// names it in the poison dead letter).
type Notes interface {
	Note(stream, id string, err error)
}

// NewRescuer returns a Rescuer writing through store. notes (may be nil) is
// told why entries were left pending.
func NewRescuer(cfg Config, store Store, notes Notes, m *metrics.Metrics, log *slog.Logger) *Rescuer {
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = 6
	}
	w := writer{store: store, timeout: cfg.WriteTimeout, attempts: cfg.Attempts}
	return &Rescuer{cfg: cfg, w: w, blobs: &blobs{w: w, log: log}, notes: notes, m: m, log: log}
}

// note tells notes, when there are any, why the entry was left pending.
func (r *Rescuer) note(stream, id string, err error) {
	if r.notes != nil {
		r.notes.Note(stream, id, err)
	}
}

// RescueEntry stores the fields of an entry that make its document too
// large in the bucket and returns the stub document to store instead, in
// the collection and with the _id the usual document would have had.
// ok=false means nothing could be stored now: the entry stays pending.
func (r *Rescuer) RescueEntry(ctx context.Context, key keyspace.Key, msg redis.XMessage, cause error) (batch.Item, bool) {
	it, err := r.rescueEntry(ctx, key, msg, cause)
	if err != nil {
		err = fmt.Errorf("%w (while storing it another way: %w)", cause, err)
		r.note(key.String(), msg.ID, err)
		r.log.Error("entry cannot be stored and could not be rescued; left pending", "stream", key.String(), "id", msg.ID, "err", err)
		return batch.Item{}, false
	}
	return it, true
}

func (r *Rescuer) rescueEntry(ctx context.Context, key keyspace.Key, msg redis.XMessage, cause error) (batch.Item, error) {
	if _, err := message.IDTime(msg.ID); err != nil {
		return batch.Item{}, err
	}
	now := time.Now()
	coll := Collection(key.Kind)
	docID := message.Identity(key.Namespace, key.Name, msg.ID)
	values := message.Fields(msg.Values)
	offloaded := map[string]BlobRef{}
	var defects []message.Defect
	for _, name := range chooseOffload(values) {
		data := []byte(fmt.Sprint(values[name]))
		ref, err := r.blobs.put(ctx, key.Tenant, fileID(coll, docID, name), data, blobMeta{
			tenant: key.Tenant, stream: key.String(), streamID: msg.ID, field: name, contentType: ContentField,
		}, now)
		if err != nil {
			return batch.Item{}, fmt.Errorf("store field %q in the %s bucket: %w", name, Bucket, err)
		}
		offloaded[name] = ref
		if name == "payload" {
			defects = append(defects, DefectPayloadTooLarge)
		} else {
			defects = append(defects, DefectFieldsTooLarge)
		}
	}
	doc, err := entryDoc{
		coll: coll, id: docID, key: key, entryID: msg.ID, values: values,
		offloaded: offloaded, defects: defects, errText: cause.Error(), now: now,
	}.build()
	if err != nil {
		return batch.Item{}, err
	}
	for _, d := range uniqDefects(defects) {
		r.m.Malformed.WithLabelValues(key.Tenant, string(d)).Inc()
	}
	r.log.Warn("entry too large for a document: stored its large fields in the raw_entries bucket and a stub document",
		"stream", key.String(), "id", msg.ID, "collection", coll, "_id", docID, "offloaded", len(offloaded))
	t, _ := message.IDTime(msg.ID)
	return batch.Item{Collection: coll, Doc: doc, Time: t}, nil
}

// Rescue implements batch.Rescuer for a document the server refused for
// good (BadValue, DollarPrefixedFieldName, BSONObjectTooLarge, ...): the
// refused document goes to the bucket as BSON and a stub with the same _id
// replaces it. When the stub is refused too (it.Attempts > 0), a minimal
// dead letter keeps the reference instead.
func (r *Rescuer) Rescue(ctx context.Context, it batch.Item, cause error) (batch.Item, bool) {
	rep, err := r.rescue(ctx, it, cause)
	if err != nil {
		err = fmt.Errorf("%w (while storing it another way: %w)", cause, err)
		r.note(it.Stream, it.ID, err)
		r.log.Error("document refused by the server and could not be rescued; left pending", "stream", it.Stream, "id", it.ID, "err", err)
		return batch.Item{}, false
	}
	return rep, true
}

func (r *Rescuer) rescue(ctx context.Context, it batch.Item, cause error) (batch.Item, error) {
	key, err := r.cfg.Layout.Parse(it.Stream)
	if err != nil {
		return batch.Item{}, err
	}
	doc := bsoncore.Document(it.Doc)
	if err := doc.Validate(); err != nil {
		return batch.Item{}, fmt.Errorf("refused document is not valid BSON: %w", err)
	}
	now := time.Now()
	docID, ok := doc.Lookup("_id").StringValueOK()
	if !ok {
		return batch.Item{}, errors.New("refused document has no string _id")
	}
	rep := it
	if it.Attempts == 0 {
		ref, err := r.blobs.put(ctx, key.Tenant, fileID(it.Collection, docID, "document"), it.Doc, blobMeta{
			tenant: key.Tenant, stream: it.Stream, streamID: it.ID, field: "document", contentType: ContentBSON,
		}, now)
		if err != nil {
			return batch.Item{}, fmt.Errorf("store the refused document in the %s bucket: %w", Bucket, err)
		}
		rep.Doc = refusedStub(doc, ref, cause.Error(), now)
		r.m.Malformed.WithLabelValues(key.Tenant, string(DefectRefused)).Inc()
		r.log.Warn("document refused by the server: stored it as BSON in the raw_entries bucket and a stub document",
			"stream", it.Stream, "id", it.ID, "collection", it.Collection, "_id", docID, "err", cause)
		return rep, nil
	}
	// The stub was refused: keep its reference in a minimal dead letter.
	v, err := doc.LookupErr("_system", "offloaded", "document")
	if err != nil {
		return batch.Item{}, errors.New("refused stub holds no reference to the stored document")
	}
	var ref BlobRef
	rd, _ := v.DocumentOK()
	ref.FileID, _ = rd.Lookup("fileId").StringValueOK()
	ref.Length, _ = rd.Lookup("length").Int64OK()
	ref.SHA256, _ = rd.Lookup("sha256").StringValueOK()
	rep.Collection = config.CollDeadLetters
	rep.Doc = refusedDeadLetter(key, it.ID, ref, cause.Error(), now)
	r.m.DeadLettered.WithLabelValues(key.Tenant, string(DefectRefused)).Inc()
	r.log.Warn("stub document refused too: dead-lettered the entry with a reference to its stored bytes",
		"stream", it.Stream, "id", it.ID, "_id", RefusedID(key, it.ID), "err", cause)
	return rep, nil
}

func uniqDefects(ds []message.Defect) []message.Defect {
	seen := map[message.Defect]bool{}
	var out []message.Defect
	for _, d := range ds {
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out
}
