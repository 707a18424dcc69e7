package rescue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/chronow/persister/internal/batch"
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

// Stored reports whether the tenant's collection coll holds a document
// with _id id.
func (w *Writer) Stored(ctx context.Context, tenant, coll, id string) (bool, error) {
	db, err := w.w.store.Database(tenant)
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(ctx, w.w.timeout)
	defer cancel()
	err = db.Collection(coll).FindOne(ctx, bson.D{{Key: "_id", Value: id}}, options.FindOne().SetProjection(bson.D{{Key: "_id", Value: 1}})).Err()
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, mongo.ErrNoDocuments):
		return false, nil
	}
	return false, fmt.Errorf("look up %s in %s: %w", id, coll, err)
}

// Insert stores every doc in the tenant's collection coll (inserted or
// already there) or returns the last error.
func (w *Writer) Insert(ctx context.Context, tenant, coll string, docs [][]byte) error {
	return w.w.insert(ctx, tenant, coll, docs)
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
