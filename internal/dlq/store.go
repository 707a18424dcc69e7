package dlq

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/mongo"

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
