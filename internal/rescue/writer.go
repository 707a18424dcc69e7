package rescue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/chronow/persister/internal/batch"
	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/message"
	"github.com/chronow/persister/internal/retry"
	"github.com/chronow/persister/internal/sink"
)

// Store is what this package needs of the database: sink.Writer.
type Store interface {
	Insert(ctx context.Context, tenant, collection string, docs [][]byte) ([]sink.Result, error)
	Database(tenant string) (*mongo.Database, error)
}

var _ Store = (*sink.Writer)(nil)

// ErrRefused is returned when the server refuses a document for good
// (a permanent or fatal error class).
var ErrRefused = errors.New("refused by the server")

// writer inserts documents directly (not through a batcher), retrying what
// may succeed later a bounded number of times.
type writer struct {
	store    Store
	timeout  time.Duration
	attempts int
}

// insert stores every doc (inserted or already there) or returns the last
// error, under the write rule (batch.Insert, without a rescuer: these
// documents are the rescue), with a bounded number of attempts.
// Duplicates are success: every document here has a deterministic _id.
func (w writer) insert(ctx context.Context, tenant, coll string, docs [][]byte) error {
	pending := make([]batch.Item, len(docs))
	for i, d := range docs {
		pending[i] = batch.Item{Collection: coll, Doc: d}
	}
	var last error
	for attempt := 0; attempt < w.attempts && len(pending) > 0; attempt++ {
		if attempt > 0 {
			if err := insertBackoff().Wait(ctx, attempt); err != nil {
				return fmt.Errorf("insert into %s: %w (last error: %w)", coll, err, last)
			}
		}
		out := batch.Insert(ctx, w.store, tenant, coll, pending, nil, w.timeout)
		var retry []batch.Item
		for i, d := range out.Decisions {
			switch d {
			case batch.Inserted, batch.Present:
			case batch.Refused, batch.Halt:
				return fmt.Errorf("insert into %s: %w: %w", coll, ErrRefused, out.Errs[i])
			default:
				last = out.Errs[i]
				retry = append(retry, pending[i])
			}
		}
		pending = retry
	}
	if len(pending) > 0 {
		return fmt.Errorf("insert into %s: %d of %d documents not stored after %d attempts: %w", coll, len(pending), len(docs), w.attempts, last)
	}
	return nil
}

// insertBackoff spaces the attempts of a direct insert: 200ms doubling to 3.2s.
func insertBackoff() retry.Backoff {
	return retry.Backoff{Base: 200 * time.Millisecond, Max: 3200 * time.Millisecond}
}

// Writer writes the dead letters the persister makes itself (internal/dlq's
// poison) directly, not through a batcher, with the fields too large for a
// document in the raw_entries bucket.
type Writer struct {
	w     writer
	blobs *blobs
}

// NewWriter returns a Writer through store: each insert is bounded by
// timeout, and tried at most attempts times while the server is
// unavailable.
func NewWriter(store Store, timeout time.Duration, attempts int, log *slog.Logger) *Writer {
	w := writer{store: store, timeout: timeout, attempts: attempts}
	return &Writer{w: w, blobs: &blobs{w: w, log: log}}
}

// Database returns the tenant's database.
func (w *Writer) Database(tenant string) (*mongo.Database, error) {
	return w.w.store.Database(tenant)
}

// Insert stores every doc in the tenant's collection coll (inserted or
// already there) or returns the last error.
func (w *Writer) Insert(ctx context.Context, tenant, coll string, docs [][]byte) error {
	return w.w.insert(ctx, tenant, coll, docs)
}

// DeadLetter describes a dead letter the persister makes itself for a raw
// stream entry.
type DeadLetter struct {
	// ID is the document's _id.
	ID string
	// Key is the entry's stream, parsed; Stream is its name as read.
	Key    keyspace.Key
	Stream string
	Msg    redis.XMessage
	// Defect is the one defect recorded.
	Defect message.Defect
	// Reason, then ": " and Error (valid UTF-8, bounded), is the reason
	// field; Error is also _system.error.
	Reason, Error string
	// Deliveries is the deliveries field; failedAt is Now.
	Deliveries int64
	Now        time.Time
}

// DeadLetter stores the fields of d's entry that would make the document
// too large in the bucket and returns the dead_letters document to insert,
// which keeps the other fields and references the stored ones.
func (w *Writer) DeadLetter(ctx context.Context, d DeadLetter) ([]byte, error) {
	e := entryDoc{
		coll: config.CollDeadLetters, id: d.ID, key: d.Key, entryID: d.Msg.ID,
		values: message.Fields(d.Msg.Values), defects: []message.Defect{d.Defect}, errText: d.Error,
		own: true, deliveries: d.Deliveries, now: d.Now, reason: d.Reason + ": " + safeString(d.Error),
	}
	if off := chooseOffload(e.values); len(off) > 0 {
		e.offloaded = map[string]BlobRef{}
		for _, name := range off {
			ref, err := w.blobs.put(ctx, d.Key.Tenant, fileID(config.CollDeadLetters, e.id, name), []byte(fmt.Sprint(e.values[name])), blobMeta{
				tenant: d.Key.Tenant, stream: d.Stream, streamID: d.Msg.ID, field: name, contentType: ContentField,
			}, d.Now)
			if err != nil {
				return nil, fmt.Errorf("store field %q of %s in the %s bucket: %w", name, d.Msg.ID, Bucket, err)
			}
			e.offloaded[name] = ref
		}
	}
	return e.build()
}
