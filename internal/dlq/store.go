package dlq

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"go.mongodb.org/mongo-driver/mongo"

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
// error. Duplicates are success: every document here has a deterministic _id.
func (w writer) insert(ctx context.Context, tenant, coll string, docs [][]byte) error {
	pending := docs
	var last error
	for attempt := 0; attempt < w.attempts && len(pending) > 0; attempt++ {
		if attempt > 0 {
			d := 100 * time.Millisecond << min(attempt, 5)
			select {
			case <-time.After(d/2 + rand.N(d/2+1)):
			case <-ctx.Done():
				return fmt.Errorf("insert into %s: %w (last error: %w)", coll, ctx.Err(), last)
			}
		}
		wctx, cancel := context.WithTimeout(ctx, w.timeout)
		res, err := w.store.Insert(wctx, tenant, coll, pending)
		cancel()
		if err != nil {
			if sink.Classify(err) == sink.ClassFatal {
				return fmt.Errorf("insert into %s: %w: %w", coll, ErrRefused, err)
			}
			last = err
			continue
		}
		var retry [][]byte
		for i, r := range res {
			switch r.Class {
			case sink.ClassNone, sink.ClassDuplicate:
			case sink.ClassPermanent, sink.ClassFatal:
				return fmt.Errorf("insert into %s: %w: %w", coll, ErrRefused, r.Err)
			default:
				last = r.Err
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
