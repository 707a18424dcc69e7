// Package sink writes documents into each tenant's MongoDB database with
// idempotent unordered bulk inserts and reports the outcome of every document.
package sink

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/chronow/persister/internal/config"
)

// ErrUnknownTenant is returned for a tenant that is not configured.
var ErrUnknownTenant = errors.New("unknown tenant")

// Result is the outcome of one document of a bulk insert.
type Result struct {
	// Class is ClassNone (inserted), ClassDuplicate (already stored), or the
	// class of the error that kept it out.
	Class Class
	// Err is the server's error for this document, if any.
	Err error
}

// Stored reports whether the document is durably in the collection.
func (r Result) Stored() bool { return r.Class == ClassNone || r.Class == ClassDuplicate }

// Writer owns one MongoDB client per configured connection, shared by the
// tenants on it.
type Writer struct {
	clients map[string]*mongo.Client
	tenants map[string]*tenant
}

type tenant struct {
	cfg config.TenantDatabase
	db  *mongo.Database

	mu       sync.Mutex
	schemaOK bool
}

// Options tunes the clients.
type Options struct {
	// AppName is sent to the server (visible in its logs and currentOp).
	AppName string
	// ServerSelectionTimeout bounds how long an operation waits for a server.
	ServerSelectionTimeout time.Duration
}

// New creates the clients. It does not wait for any server: MongoDB may be
// down at start; writes retry until it is up.
func New(ctx context.Context, ch config.Chronos, o Options) (*Writer, error) {
	w := &Writer{clients: map[string]*mongo.Client{}, tenants: map[string]*tenant{}}
	if o.ServerSelectionTimeout <= 0 {
		o.ServerSelectionTimeout = 5 * time.Second
	}
	for name, dc := range ch.DBConnections {
		used := false
		for _, t := range ch.Tenants() {
			used = used || t.DBConnRef == name
		}
		if !used {
			continue
		}
		opts := options.Client().ApplyURI(dc.MongoURI).
			SetServerSelectionTimeout(o.ServerSelectionTimeout).
			SetAppName(o.AppName)
		c, err := mongo.Connect(ctx, opts)
		if err != nil {
			w.Close(ctx)
			return nil, fmt.Errorf("mongo connection %q (%s): %w", name, config.RedactURI(dc.MongoURI), scrub(err, dc.MongoURI))
		}
		w.clients[name] = c
	}
	for _, t := range ch.Tenants() {
		w.tenants[t.TenantID] = &tenant{cfg: t, db: w.clients[t.DBConnRef].Database(t.DBName)}
	}
	return w, nil
}

// Close disconnects every client.
func (w *Writer) Close(ctx context.Context) {
	for _, c := range w.clients {
		_ = c.Disconnect(ctx)
	}
}

// Database returns the tenant's database handle.
func (w *Writer) Database(tenantID string) (*mongo.Database, error) {
	t, ok := w.tenants[tenantID]
	if !ok {
		return nil, fmt.Errorf("tenant %q: %w", tenantID, ErrUnknownTenant)
	}
	return t.db, nil
}

// Ping checks that the tenant's server answers.
func (w *Writer) Ping(ctx context.Context, tenantID string) error {
	db, err := w.Database(tenantID)
	if err != nil {
		return err
	}
	return db.RunCommand(ctx, bson.D{{Key: "ping", Value: 1}}).Err()
}

// EnsureSchema creates the tenant's collections and indexes once per process.
func (w *Writer) EnsureSchema(ctx context.Context, tenantID string) error {
	t, ok := w.tenants[tenantID]
	if !ok {
		return fmt.Errorf("tenant %q: %w", tenantID, ErrUnknownTenant)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.schemaOK {
		return nil
	}
	if _, err := EnsureSchema(ctx, t.db, false); err != nil {
		return fmt.Errorf("tenant %q database %s: %w", tenantID, t.cfg.DBName, err)
	}
	t.schemaOK = true
	return nil
}

// Insert writes docs (BSON documents with a deterministic _id) into one
// collection of a tenant's database with one unordered bulk insert, and
// returns one Result per doc. A non-nil error means the command as a whole
// failed and the outcome of every document is unknown.
func (w *Writer) Insert(ctx context.Context, tenantID, collection string, docs [][]byte) ([]Result, error) {
	t, ok := w.tenants[tenantID]
	if !ok {
		return nil, fmt.Errorf("tenant %q: %w", tenantID, ErrUnknownTenant)
	}
	if err := w.EnsureSchema(ctx, tenantID); err != nil {
		return nil, err
	}
	results := make([]Result, len(docs))
	if len(docs) == 0 {
		return results, nil
	}
	in := make([]any, len(docs))
	for i, d := range docs {
		in[i] = bson.Raw(d)
	}
	_, err := t.db.Collection(collection).InsertMany(ctx, in, options.InsertMany().SetOrdered(false))
	if err == nil {
		return results, nil
	}
	var bwe mongo.BulkWriteException
	if !errors.As(err, &bwe) || bwe.WriteConcernError != nil || len(bwe.WriteErrors) == 0 {
		return nil, fmt.Errorf("insert into %s.%s: %w", t.cfg.DBName, collection, err)
	}
	for _, we := range bwe.WriteErrors {
		if we.Index < 0 || we.Index >= len(docs) {
			return nil, fmt.Errorf("insert into %s.%s: write error for index %d of %d: %w", t.cfg.DBName, collection, we.Index, len(docs), err)
		}
		results[we.Index] = Result{Class: ClassifyCode(we.Code, we.Message), Err: we}
	}
	return results, nil
}

// scrub removes a URI (which may hold a password) from a driver error.
func scrub(err error, uri string) error {
	return &scrubbed{err: err, uri: uri}
}

type scrubbed struct {
	err error
	uri string
}

func (s *scrubbed) Error() string {
	if s.uri == "" {
		return s.err.Error()
	}
	return strings.ReplaceAll(s.err.Error(), s.uri, config.RedactURI(s.uri))
}

func (s *scrubbed) Unwrap() error { return s.err }
