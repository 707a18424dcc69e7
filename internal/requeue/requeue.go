// Package requeue puts dead letters back onto their topic streams as new
// Chronow entries and marks each dead-letter document as requeued.
package requeue

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/bsontype"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/message"
)

// Fields a requeue writes on the dead-letter document.
const (
	FieldRequeuedAt = "requeuedAt" // Date of the requeue
	FieldRequeuedAs = "requeuedAs" // the new topic entry's id
	FieldRequeuedTo = "requeuedTo" // the topic stream key
)

// ErrUnmarked is returned when an entry was added but its dead letter could
// not be marked (a later run would requeue it again).
var ErrUnmarked = errors.New("requeued but not marked")

// Filter selects dead letters. Documents already marked requeued are never
// selected, nor the persister's own dead letters of topic entries it could
// not store (_system.source.kind "topic"): those were never delivered to a
// consumer and failed; they are not Chronow's dead letters.
type Filter struct {
	// Namespace and Topic match exactly when not empty.
	Namespace, Topic string
	// Reason matches when it is a substring of the document's reason.
	Reason string
	// Since and Until bound failedAt: Since <= failedAt < Until (zero: open).
	Since, Until time.Time
	// Limit caps how many are requeued (0: all).
	Limit int
}

// Query returns the MongoDB filter for f.
func (f Filter) Query() bson.D {
	q := bson.D{
		{Key: FieldRequeuedAt, Value: bson.D{{Key: "$exists", Value: false}}},
		{Key: "_system.source.kind", Value: bson.D{{Key: "$ne", Value: string(keyspace.KindTopic)}}},
	}
	if f.Topic != "" {
		q = append(q, bson.E{Key: "topic", Value: f.Topic})
	}
	if f.Namespace != "" {
		q = append(q, bson.E{Key: "namespace", Value: f.Namespace})
	}
	if f.Reason != "" {
		q = append(q, bson.E{Key: "reason", Value: bson.D{{Key: "$regex", Value: regexp.QuoteMeta(f.Reason)}}})
	}
	var at bson.D
	if !f.Since.IsZero() {
		at = append(at, bson.E{Key: "$gte", Value: f.Since})
	}
	if !f.Until.IsZero() {
		at = append(at, bson.E{Key: "$lt", Value: f.Until})
	}
	if len(at) > 0 {
		q = append(q, bson.E{Key: "failedAt", Value: at})
	}
	return q
}

// Config says where entries go.
type Config struct {
	// Layout is where Chronow's keys are (REDIS_KEY_PREFIX and its forms);
	// Tenant the tenant.
	Layout keyspace.Layout
	Tenant string
	// MaxLen trims the topic stream like Chronow (MAXLEN ~ MaxLen); 0 or
	// less: no trimming.
	MaxLen int64
	// Now returns the time written as publishedAt and requeuedAt (default
	// time.Now).
	Now func() time.Time
}

// Item is one dead letter and what happened to it.
type Item struct {
	// DocID is the dead-letter document's _id (as text).
	DocID     string    `json:"id"`
	Namespace string    `json:"namespace"`
	Topic     string    `json:"topic"`
	Reason    string    `json:"reason"`
	FailedAt  time.Time `json:"failedAt"`
	// Stream is the topic stream the entry goes (went) to.
	Stream string `json:"stream"`
	// PayloadBytes is the size of the payload text.
	PayloadBytes int `json:"payloadBytes"`
	// Status is requeued, would-requeue (dry run) or skipped.
	Status string `json:"status"`
	// NewID is the id of the new topic entry.
	NewID  string `json:"requeuedAs,omitempty"`
	Detail string `json:"detail,omitempty"`
}

// Item statuses.
const (
	StatusRequeued     = "requeued"
	StatusWouldRequeue = "would-requeue"
	StatusSkipped      = "skipped"
)

// Report is the outcome of a requeue.
type Report struct {
	Tenant   string `json:"tenant"`
	Database string `json:"database"`
	DryRun   bool   `json:"dryRun"`
	Items    []Item `json:"items"`
	Requeued int    `json:"requeued"`
	Skipped  int    `json:"skipped"`
	Error    string `json:"error,omitempty"`
}

// Requeuer moves dead letters back onto their topic streams.
type Requeuer struct {
	rdb redis.UniversalClient
	db  *mongo.Database
	cfg Config
}

// New returns a Requeuer for one tenant's database.
func New(rdb redis.UniversalClient, db *mongo.Database, cfg Config) *Requeuer {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Requeuer{rdb: rdb, db: db, cfg: cfg}
}

// Run selects the dead letters f matches, oldest failure first, and (unless
// dryRun) adds each to its topic stream as a new Chronow entry, then marks
// the document with requeuedAt, requeuedAs and requeuedTo. A document is
// marked only after its entry was added; one already marked is never
// selected again. A crash between the two leaves it unmarked, so it would
// be requeued again by the next run (at least once, never silently lost).
func (q *Requeuer) Run(ctx context.Context, f Filter, dryRun bool) (*Report, error) {
	rep := &Report{Tenant: q.cfg.Tenant, Database: q.db.Name(), DryRun: dryRun, Items: []Item{}}
	// Ids first, then one document at a time: payloads may be large, and
	// each is re-read (still unmarked?) right before it is requeued.
	opts := options.Find().SetSort(bson.D{{Key: "failedAt", Value: 1}, {Key: "_id", Value: 1}}).
		SetProjection(bson.D{{Key: "_id", Value: 1}})
	if f.Limit > 0 {
		opts.SetLimit(int64(f.Limit))
	}
	coll := q.db.Collection(config.CollDeadLetters)
	cur, err := coll.Find(ctx, f.Query(), opts)
	if err != nil {
		return rep, fmt.Errorf("find dead letters in %s: %w", q.db.Name(), err)
	}
	var ids []bson.RawValue
	for cur.Next(ctx) {
		if v, err := cur.Current.LookupErr("_id"); err == nil {
			ids = append(ids, v)
		}
	}
	err = cur.Err()
	_ = cur.Close(ctx)
	if err != nil {
		rep.Error = err.Error()
		return rep, fmt.Errorf("read dead letters in %s: %w", q.db.Name(), err)
	}
	for _, idVal := range ids {
		one := bson.D{{Key: "_id", Value: idVal}, {Key: FieldRequeuedAt, Value: bson.D{{Key: "$exists", Value: false}}}}
		doc, err := coll.FindOne(ctx, one).Raw()
		if errors.Is(err, mongo.ErrNoDocuments) {
			continue // marked by another run meanwhile
		}
		if err != nil {
			rep.Error = err.Error()
			return rep, fmt.Errorf("read dead letter %s in %s: %w", idVal, q.db.Name(), err)
		}
		it, values, err := q.prepare(ctx, doc)
		if err != nil {
			it.Status, it.Detail = StatusSkipped, err.Error()
			rep.Skipped++
			rep.Items = append(rep.Items, it)
			continue
		}
		if dryRun {
			it.Status = StatusWouldRequeue
			rep.Items = append(rep.Items, it)
			continue
		}
		if err := q.requeue(ctx, &it, values, idVal); err != nil {
			rep.Items = append(rep.Items, it)
			rep.Error = err.Error()
			return rep, err
		}
		rep.Requeued++
		rep.Items = append(rep.Items, it)
	}
	return rep, nil
}

// prepare reads one dead-letter document and builds the topic entry.
func (q *Requeuer) prepare(ctx context.Context, doc bson.Raw) (Item, []any, error) {
	var it Item
	idVal, err := doc.LookupErr("_id")
	if err != nil {
		return it, nil, errors.New("document has no _id")
	}
	if s, ok := idVal.StringValueOK(); ok {
		it.DocID = s
	} else {
		it.DocID = idVal.String()
	}
	it.Topic = str(doc, "topic")
	it.Namespace = str(doc, "namespace")
	if it.Namespace == "" {
		it.Namespace = config.DefaultTenant // Chronow's default namespace is "default" too
	}
	it.Reason = str(doc, "reason")
	if v, err := doc.LookupErr("failedAt"); err == nil && v.Type == bsontype.DateTime {
		it.FailedAt = time.UnixMilli(v.DateTime()).UTC()
	}
	if it.Topic == "" {
		return it, nil, errors.New("document has no topic")
	}
	if it.Stream, it.Detail, err = q.topicStream(ctx, it.Namespace, it.Topic); err != nil {
		return it, nil, err
	}
	payload, err := payloadText(doc)
	if err != nil {
		return it, nil, err
	}
	headers := "{}"
	if s, ok := rawText(doc, "headers"); ok {
		headers = s // the persister changed something to store them (escaped names, say)
	} else if v, err := doc.LookupErr("headers"); err == nil && v.Type == bsontype.EmbeddedDocument {
		if headers, err = jsonText(v); err != nil {
			return it, nil, fmt.Errorf("headers: %w", err)
		}
	}
	it.PayloadBytes = len(payload)
	return it, Values(payload, headers, q.cfg.Now()), nil
}

// topicStream returns the topic stream a dead letter goes back to. With a
// pinned prefix form, that form's key. In FormAuto, the form the app's keys
// have in Redis (the doubled prefix when the app passes redis.keyPrefix to
// Chronow): the form of the topic stream, else of the topic's dead-letter
// stream; when both forms exist the requeuer cannot tell which the app
// reads and says so. When neither exists, the single form, with a note.
func (q *Requeuer) topicStream(ctx context.Context, namespace, topic string) (stream, note string, err error) {
	l := q.cfg.Layout
	if l.Form != keyspace.FormAuto || l.Prefix == "" {
		return l.Key(q.cfg.Tenant, namespace, keyspace.KindTopic, topic).String(), "", nil
	}
	key := func(prefix string, kind keyspace.Kind) string {
		return keyspace.Key{Prefix: prefix, Tenant: q.cfg.Tenant, Namespace: namespace, Kind: kind, Name: topic}.String()
	}
	single, doubled := key(l.Prefix, keyspace.KindTopic), key(l.Prefix+l.Prefix, keyspace.KindTopic)
	for _, kind := range []keyspace.Kind{keyspace.KindTopic, keyspace.KindDLQ} {
		s, d := key(l.Prefix, kind), key(l.Prefix+l.Prefix, kind)
		// Two commands: the keys may live in different cluster slots.
		n1, err := q.rdb.Exists(ctx, s).Result()
		if err != nil {
			return single, "", fmt.Errorf("look for %q: %w", s, err)
		}
		n2, err := q.rdb.Exists(ctx, d).Result()
		if err != nil {
			return single, "", fmt.Errorf("look for %q: %w", d, err)
		}
		switch {
		case n1 > 0 && n2 > 0:
			return single, "", fmt.Errorf("both %q and %q exist: set PERSISTER_KEY_PREFIX_FORM=single or doubled to choose", s, d)
		case n2 > 0:
			return doubled, "", nil
		case n1 > 0:
			return single, "", nil
		}
	}
	return single, fmt.Sprintf("no stream of the topic in Redis under either prefix form: the single form is used (PERSISTER_KEY_PREFIX_FORM=doubled for an app that passes redis.keyPrefix, like %q)", doubled), nil
}

// rawText returns the exact text the persister kept of a field it had to
// change to store (_system.raw.<field>: a string, or binary data when the
// text was not UTF-8).
func rawText(doc bson.Raw, field string) (string, bool) {
	v, err := doc.LookupErr("_system", "raw", field)
	if err != nil {
		return "", false
	}
	if s, ok := v.StringValueOK(); ok {
		return s, true
	}
	if _, b, ok := v.BinaryOK(); ok {
		return string(b), true
	}
	return "", false
}

// payloadText is the payload as Chronow published it: the raw text when the
// persister kept it (it had to change something to store the payload),
// else the stored value as JSON.
func payloadText(doc bson.Raw) (string, error) {
	for _, name := range []string{"payload", "document"} {
		if _, err := doc.LookupErr("_system", "offloaded", name); err == nil {
			return "", errors.New("the payload was too large for a document and is in the raw_entries bucket: not requeued (requeue it by hand)")
		}
	}
	if v, err := doc.LookupErr("_system", "defects"); err == nil {
		if arr, ok := v.ArrayOK(); ok {
			if vals, err := arr.Values(); err == nil {
				for _, d := range vals {
					if s, _ := d.StringValueOK(); s == string(message.DefectPayloadMissing) {
						return "", errors.New("the dead-letter entry had no payload")
					}
				}
			}
		}
	}
	if s, ok := rawText(doc, "payload"); ok {
		return s, nil
	}
	v, err := doc.LookupErr("payload")
	if err != nil {
		return "", errors.New("document has no payload")
	}
	s, err := jsonText(v)
	if err != nil {
		return "", fmt.Errorf("payload: %w", err)
	}
	return s, nil
}

// Values returns a topic entry's fields exactly as Chronow writes them:
// payload, headers, hash (SHA-256 hex of the payload text), size (its byte
// length) and publishedAt (ISO-8601 UTC with milliseconds).
func Values(payload, headers string, publishedAt time.Time) []any {
	sum := sha256.Sum256([]byte(payload))
	return []any{
		"payload", payload,
		"headers", headers,
		"hash", hex.EncodeToString(sum[:]),
		"size", strconv.Itoa(len(payload)),
		"publishedAt", publishedAt.UTC().Format("2006-01-02T15:04:05.000Z"),
	}
}

// requeue adds the entry, then marks the document.
func (q *Requeuer) requeue(ctx context.Context, it *Item, values []any, idVal bson.RawValue) error {
	args := &redis.XAddArgs{Stream: it.Stream, Values: values, ID: "*"}
	if q.cfg.MaxLen > 0 {
		args.MaxLen, args.Approx = q.cfg.MaxLen, true
	}
	id, err := q.rdb.XAdd(ctx, args).Result()
	if err != nil {
		it.Status, it.Detail = StatusSkipped, "xadd failed: "+err.Error()
		return fmt.Errorf("dead letter %s: xadd %s: %w (nothing was added; run again)", it.DocID, it.Stream, err)
	}
	it.Status, it.NewID = StatusRequeued, id
	set := bson.D{{Key: "$set", Value: bson.D{
		{Key: FieldRequeuedAt, Value: q.cfg.Now().UTC()},
		{Key: FieldRequeuedAs, Value: id},
		{Key: FieldRequeuedTo, Value: it.Stream},
	}}}
	filter := bson.D{{Key: "_id", Value: idVal}, {Key: FieldRequeuedAt, Value: bson.D{{Key: "$exists", Value: false}}}}
	// The entry is in Redis now: try hard to record that.
	var res *mongo.UpdateResult
	for attempt := 0; attempt < 5; attempt++ {
		if attempt > 0 {
			select {
			case <-time.After(time.Duration(attempt) * time.Second):
			case <-ctx.Done():
			}
		}
		res, err = q.db.Collection(config.CollDeadLetters).UpdateOne(context.WithoutCancel(ctx), filter, set)
		if err == nil {
			break
		}
	}
	if err != nil {
		it.Detail = "NOT MARKED: " + err.Error()
		return fmt.Errorf("dead letter %s was added to %s as %s but could not be marked (a later run would requeue it again; set %s on it by hand): %w: %w",
			it.DocID, it.Stream, id, FieldRequeuedAt, ErrUnmarked, err)
	}
	if res.MatchedCount == 0 {
		it.Detail = "another run marked this dead letter meanwhile: it may have been requeued twice"
	}
	return nil
}

func str(doc bson.Raw, key string) string {
	v, err := doc.LookupErr(key)
	if err != nil {
		return ""
	}
	s, _ := v.StringValueOK()
	return s
}

// WriteText prints the report for an operator.
func (r *Report) WriteText(w io.Writer) error {
	title := fmt.Sprintf("tenant %s (database %s): %d requeued, %d skipped", r.Tenant, r.Database, r.Requeued, r.Skipped)
	if r.DryRun {
		title = fmt.Sprintf("tenant %s (database %s), dry run: %d would be requeued, %d skipped", r.Tenant, r.Database, len(r.Items)-r.Skipped, r.Skipped)
	}
	if _, err := fmt.Fprintln(w, title); err != nil {
		return err
	}
	for _, it := range r.Items {
		at := "-"
		if !it.FailedAt.IsZero() {
			at = it.FailedAt.Format("2006-01-02T15:04:05.000Z07:00")
		}
		line := fmt.Sprintf("  %-13s %s  failedAt %s  reason %q  %d bytes -> %s", it.Status, it.DocID, at, it.Reason, it.PayloadBytes, it.Stream)
		if it.NewID != "" {
			line += " as " + it.NewID
		}
		if it.Detail != "" {
			line += " (" + it.Detail + ")"
		}
		fmt.Fprintln(w, line)
	}
	if r.Error != "" {
		fmt.Fprintf(w, "STOPPED: %s\n", r.Error)
	}
	return nil
}
