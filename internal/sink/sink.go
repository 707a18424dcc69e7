// Package sink writes documents into each tenant's MongoDB database with
// idempotent unordered bulk inserts and reports the outcome of every document.
package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/bsontype"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
	"go.mongodb.org/mongo-driver/mongo/writeconcern"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"

	"github.com/chronow/persister/internal/arc"
	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/metrics"
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

// Databases is what the writers of the other collections (topics, shared
// memory) need of the sink: a tenant's database, with its collections and
// indexes made (the unique indexes their idempotent writes rely on).
// Writer is one.
type Databases interface {
	Database(tenantID string) (*mongo.Database, error)
	EnsureSchema(ctx context.Context, tenantID string) error
}

var _ Databases = (*Writer)(nil)

// Writer owns one MongoDB client per configured connection, shared by the
// tenants on it.
type Writer struct {
	clients map[string]*mongo.Client
	tenants map[string]*tenant
	// conns bounds the bulk writes in flight per connection, dbs per
	// database (adaptive concurrency only); nil maps: no bound.
	conns map[string]*arc.Limiter
	dbs   map[string]*arc.Limiter
	// cmdBufs recycles insert command buffers (*[]byte).
	cmdBufs sync.Pool
}

// maxPooledCmd is the largest command buffer kept for reuse.
const maxPooledCmd = 4 << 20

type tenant struct {
	cfg config.TenantDatabase
	db  *mongo.Database
	// conn and dbLimit are the write limiters of its connection and of
	// its database (nil: no bound).
	conn, dbLimit *arc.Limiter

	mu       sync.Mutex
	schemaOK bool
}

// Options tunes the clients.
type Options struct {
	// AppName is sent to the server (visible in its logs and currentOp).
	AppName string
	// ServerSelectionTimeout bounds how long an operation waits for a server.
	ServerSelectionTimeout time.Duration
	// MaxConcurrentWrites bounds the bulk inserts in flight on each
	// connection, whatever the number of tenants on it (see Slot); 0 means
	// no bound. The documents of a write are held several times over while
	// it is in flight (ours, the driver's copy, its wire message), so this
	// bounds memory as well as the load put on the server.
	MaxConcurrentWrites int
	// Concurrency is ConcurrencyAdaptive (the limit of each connection and
	// of each database moves within [1, MaxConcurrentWrites] with the
	// writes' latency and throughput: internal/arc) or ConcurrencyFixed
	// (the default: MaxConcurrentWrites per connection, no bound per
	// database).
	Concurrency string
	// Log receives the limit changes at debug level (nil: none).
	Log *slog.Logger
}

// Values of Options.Concurrency (PERSISTER_WRITE_CONCURRENCY).
const (
	ConcurrencyAdaptive = "adaptive"
	ConcurrencyFixed    = "fixed"
)

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
	w.limiters(o)
	return w, nil
}

// limiters makes the write limiters: one per connection, and with
// adaptive concurrency one per database too (a server may serialise the
// writes of a database: FerretDB's SQLite backend does).
func (w *Writer) limiters(o Options) {
	if o.MaxConcurrentWrites <= 0 {
		return
	}
	adaptive := o.Concurrency == ConcurrencyAdaptive
	limiter := func(scope, name string) *arc.Limiter {
		cfg := arc.Config{Max: o.MaxConcurrentWrites, Fixed: !adaptive}
		if o.Log != nil {
			cfg.OnChange = func(limit int, reason string) {
				o.Log.Debug("write concurrency limit changed", "scope", scope, "name", name, "limit", limit, "reason", reason)
			}
		}
		return arc.New(cfg)
	}
	w.conns, w.dbs = map[string]*arc.Limiter{}, map[string]*arc.Limiter{}
	for _, t := range w.tenants {
		name := t.cfg.DBConnRef
		if w.conns[name] == nil {
			w.conns[name] = limiter(ScopeConnection, name)
		}
		t.conn = w.conns[name]
		if !adaptive {
			continue
		}
		key := name + "/" + t.cfg.DBName
		if w.dbs[key] == nil {
			w.dbs[key] = limiter(ScopeDatabase, key)
		}
		t.dbLimit = w.dbs[key]
	}
}

// Limit is the state of one write limiter, for metrics.
type Limit struct {
	// Scope is "connection" or "database"; Name is the connection's name,
	// or the database's (connection/database).
	Scope, Name string
	Limit       int
	InFlight    int
	Floor       time.Duration
}

// Scopes of Limit.
const (
	ScopeConnection = metrics.ScopeConnection
	ScopeDatabase   = metrics.ScopeDatabase
)

// Limits returns the state of every write limiter.
func (w *Writer) Limits() []Limit {
	var out []Limit
	for scope, m := range map[string]map[string]*arc.Limiter{ScopeConnection: w.conns, ScopeDatabase: w.dbs} {
		for name, l := range m {
			out = append(out, Limit{Scope: scope, Name: name, Limit: l.Limit(), InFlight: l.InFlight(), Floor: l.Floor()})
		}
	}
	return out
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

// Done ends a write begun with Slot, with what it measured: the write's
// duration (not the wait for its slot), its documents and its error (nil,
// or the error of the command as a whole). docs == 0 gives back a slot
// that was not used.
type Done func(elapsed time.Duration, docs int, err error)

// Slot waits until a write may start on the tenant's database and
// connection and returns the function that ends it; with no bound (or an
// unknown tenant, which Insert reports) it returns at once. The database's
// slot is taken first, so a write waiting for its database holds no slot
// of the connection that other tenants could use. The batcher takes a
// slot before each Insert, so the wait is not part of the write timeout.
// It fails only when ctx ends first.
func (w *Writer) Slot(ctx context.Context, tenantID string) (Done, error) {
	t, ok := w.tenants[tenantID]
	if !ok || t.conn == nil {
		return func(time.Duration, int, error) {}, nil
	}
	var dbTok arc.Token
	if t.dbLimit != nil {
		tok, err := t.dbLimit.Acquire(ctx)
		if err != nil {
			return nil, err
		}
		dbTok = tok
	}
	connTok, err := t.conn.Acquire(ctx)
	if err != nil {
		if t.dbLimit != nil {
			t.dbLimit.Release(dbTok, 0, 0, nil)
		}
		return nil, err
	}
	return func(elapsed time.Duration, docs int, err error) {
		t.conn.Release(connTok, elapsed, docs, err)
		if t.dbLimit != nil {
			t.dbLimit.Release(dbTok, elapsed, docs, err)
		}
	}, nil
}

// Insert writes docs (BSON documents with a deterministic _id) into one
// collection of a tenant's database with unordered bulk inserts, and
// returns one Result per doc. A non-nil error means a command as a whole
// failed and the outcome of every document is unknown.
//
// The insert command is built here from the documents' bytes and run with
// RunCommand (see InsertCommand): Collection.InsertMany would copy every
// document element by element and decode its _id back through reflection,
// which cost more CPU than building the document did.
func (w *Writer) Insert(ctx context.Context, tenantID, collection string, docs [][]byte) ([]Result, error) {
	t, ok := w.tenants[tenantID]
	if !ok {
		return nil, fmt.Errorf("tenant %q: %w", tenantID, ErrUnknownTenant)
	}
	if err := w.EnsureSchema(ctx, tenantID); err != nil {
		return nil, err
	}
	results := make([]Result, len(docs))
	buf, _ := w.cmdBufs.Get().(*[]byte)
	if buf == nil {
		buf = new([]byte)
	}
	defer func() {
		if cap(*buf) <= maxPooledCmd {
			w.cmdBufs.Put(buf)
		}
	}()
	for from := 0; from < len(docs); {
		cmd, n, err := InsertCommand((*buf)[:0], collection, docs[from:], t.db.WriteConcern())
		if err != nil {
			return nil, fmt.Errorf("insert into %s.%s: %w", t.cfg.DBName, collection, err)
		}
		*buf = cmd // the driver copies the command: the buffer is free again when RunCommand returns
		err = t.db.RunCommand(ctx, bson.Raw(cmd)).Err()
		if err != nil {
			var we mongo.WriteException
			if !errors.As(err, &we) || we.WriteConcernError != nil || len(we.WriteErrors) == 0 {
				return nil, fmt.Errorf("insert into %s.%s: %w", t.cfg.DBName, collection, err)
			}
			for _, e := range we.WriteErrors {
				if e.Index < 0 || e.Index >= n {
					return nil, fmt.Errorf("insert into %s.%s: write error for index %d of %d: %w", t.cfg.DBName, collection, e.Index, n, err)
				}
				results[from+e.Index] = Result{Class: ClassifyCode(e.Code, e.Message), Err: e}
			}
		}
		from += n
	}
	return results, nil
}

// maxCommandBytes bounds one insert command: a command document may be
// 16 MiB plus 16 KiB, the room the driver needs for $db, lsid and
// $clusterTime. One document of up to message.MaxDocBytes always fits.
const maxCommandBytes = 16 << 20

// InsertCommand appends to dst the command {insert, documents, ordered:
// false, writeConcern} holding as many of docs (at least one) as fit in
// maxCommandBytes, and returns it with the number of documents it holds.
// Insert runs it with Database.RunCommand; the benchmark's sink baseline
// sends the same bytes.
func InsertCommand(dst []byte, collection string, docs [][]byte, wc *writeconcern.WriteConcern) ([]byte, int, error) {
	size := 64 + len(collection)
	n := 0
	for _, d := range docs {
		add := len(d) + 8 // type, index key up to 6 digits, NUL
		if n > 0 && size+add > maxCommandBytes {
			break
		}
		size += add
		n++
	}
	if cap(dst)-len(dst) < size+64 {
		dst = append(make([]byte, 0, len(dst)+size+64), dst...)
	}
	idx, cmd := bsoncore.AppendDocumentStart(dst)
	cmd = bsoncore.AppendStringElement(cmd, "insert", collection)
	aidx, cmd := bsoncore.AppendArrayElementStart(cmd, "documents")
	for i, d := range docs[:n] {
		cmd = append(cmd, byte(bsontype.EmbeddedDocument))
		cmd = strconv.AppendInt(cmd, int64(i), 10)
		cmd = append(cmd, 0)
		cmd = append(cmd, d...)
	}
	cmd, err := bsoncore.AppendArrayEnd(cmd, aidx)
	if err != nil {
		return nil, 0, err
	}
	cmd = bsoncore.AppendBooleanElement(cmd, "ordered", false)
	if wc != nil {
		if wcDoc, err := writeConcernDoc(wc); err != nil {
			return nil, 0, err
		} else if wcDoc != nil {
			cmd = bsoncore.AppendDocumentElement(cmd, "writeConcern", wcDoc)
		}
	}
	cmd, err = bsoncore.AppendDocumentEnd(cmd, idx)
	return cmd, n, err
}

// ErrUnacknowledged is returned for a connection whose URI asks for
// unacknowledged writes (w=0): an entry is acknowledged in Redis only after
// MongoDB acknowledged its write.
var ErrUnacknowledged = errors.New("unacknowledged write concern (w=0) cannot be used")

// writeConcernDoc is the writeConcern document InsertMany would send for
// the database's write concern (from the connection URI), encoded by the
// driver; nil when there is none (the server's default applies).
func writeConcernDoc(wc *writeconcern.WriteConcern) (bsoncore.Document, error) {
	if !wc.Acknowledged() {
		return nil, ErrUnacknowledged
	}
	_, doc, err := wc.MarshalBSONValue()
	if errors.Is(err, writeconcern.ErrEmptyWriteConcern) {
		return nil, nil
	}
	return doc, err
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
