package sink

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo/writeconcern"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"

	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/testenv"
)

func rawDoc(t *testing.T, v any) []byte {
	t.Helper()
	b, err := bson.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestInsertCommandShape(t *testing.T) {
	docs := [][]byte{rawDoc(t, bson.D{{Key: "_id", Value: "a"}}), rawDoc(t, bson.D{{Key: "_id", Value: "b"}, {Key: "n", Value: 2}})}
	cmd, n, err := InsertCommand(nil, "messages", docs, writeconcern.Majority())
	if err != nil || n != 2 {
		t.Fatalf("got n %d, err %v", n, err)
	}
	if err := bsoncore.Document(cmd).Validate(); err != nil {
		t.Fatalf("invalid command: %v", err)
	}
	elems, _ := bsoncore.Document(cmd).Elements()
	var keys []string
	for _, e := range elems {
		keys = append(keys, e.Key())
	}
	if got := strings.Join(keys, ","); got != "insert,documents,ordered,writeConcern" {
		t.Errorf("command keys %s, want insert,documents,ordered,writeConcern (insert first: it names the command)", got)
	}
	c := bsoncore.Document(cmd)
	if v := c.Lookup("insert").StringValue(); v != "messages" {
		t.Errorf("insert = %q", v)
	}
	if v := c.Lookup("ordered").Boolean(); v {
		t.Error("ordered = true, want false")
	}
	if w := c.Lookup("writeConcern", "w").StringValue(); w != "majority" {
		t.Errorf("writeConcern.w = %q, want majority", w)
	}
	vals, _ := c.Lookup("documents").Array().Values()
	if len(vals) != 2 {
		t.Fatalf("%d documents, want 2", len(vals))
	}
	for i, v := range vals {
		if !bytes.Equal(v.Document(), docs[i]) {
			t.Errorf("document %d changed: %v, want %v", i, v.Document(), bsoncore.Document(docs[i]))
		}
	}
	// No write concern: no writeConcern field (the server's default).
	cmd, _, _ = InsertCommand(nil, "messages", docs, nil)
	if _, err := bsoncore.Document(cmd).LookupErr("writeConcern"); err == nil {
		t.Error("writeConcern sent without one configured")
	}
	if _, _, err := InsertCommand(nil, "messages", docs, writeconcern.Unacknowledged()); !errors.Is(err, ErrUnacknowledged) {
		t.Errorf("w=0: got %v, want ErrUnacknowledged", err)
	}
}

func TestInsertCommandSplitsAt16MiB(t *testing.T) {
	big := make([]byte, 6<<20)
	doc := rawDoc(t, bson.D{{Key: "_id", Value: "x"}, {Key: "b", Value: big}})
	docs := [][]byte{doc, doc, doc, doc, doc}
	var counts []int
	for from := 0; from < len(docs); {
		cmd, n, err := InsertCommand(nil, "m", docs[from:], nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(cmd) > maxCommandBytes {
			t.Errorf("command of %d bytes, want at most %d", len(cmd), maxCommandBytes)
		}
		counts = append(counts, n)
		from += n
	}
	if got := joinInts(counts); got != "2,2,1" {
		t.Errorf("documents per command %s, want 2,2,1", got)
	}
	// One document near the BSON limit still goes alone.
	huge := rawDoc(t, bson.D{{Key: "_id", Value: "h"}, {Key: "b", Value: make([]byte, 16<<20-16<<10-64)}})
	if _, n, err := InsertCommand(nil, "m", [][]byte{huge, doc}, nil); err != nil || n != 1 {
		t.Errorf("huge document: got n %d, err %v; want it alone", n, err)
	}
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

// TestInsertOutcomePerDocument runs Insert against the real server: new
// documents are inserted, existing ones come back as duplicates, a document
// the server refuses is permanent, and the rest of the batch still lands.
func TestInsertOutcomePerDocument(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ms := testenv.StartMongo(t)
	ch := config.DefaultChronos(ms.URI)
	w, err := New(ctx, ch, Options{MaxConcurrentWrites: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(ctx)
	tenant := config.DefaultTenant
	first := [][]byte{rawDoc(t, bson.D{{Key: "_id", Value: "a"}}), rawDoc(t, bson.D{{Key: "_id", Value: "b"}})}
	res, err := w.Insert(ctx, tenant, config.CollMessages, first)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Class != ClassNone {
			t.Errorf("first insert, doc %d: class %s (%v), want none", i, r.Class, r.Err)
		}
	}
	second := [][]byte{
		rawDoc(t, bson.D{{Key: "_id", Value: "a"}}),                          // duplicate
		rawDoc(t, bson.D{{Key: "_id", Value: "c"}}),                          // new
		rawDoc(t, bson.D{{Key: "_id", Value: "d"}, {Key: "$bad", Value: 1}}), // refused
		rawDoc(t, bson.D{{Key: "_id", Value: "e"}}),                          // new, after the refused one
	}
	res, err = w.Insert(ctx, tenant, config.CollMessages, second)
	if err != nil {
		t.Fatal(err)
	}
	want := []Class{ClassDuplicate, ClassNone, ClassPermanent, ClassNone}
	for i, r := range res {
		if r.Class != want[i] {
			t.Errorf("second insert, doc %d: class %s (%v), want %s", i, r.Class, r.Err, want[i])
		}
	}
	db, _ := w.Database(tenant)
	n, err := db.Collection(config.CollMessages).CountDocuments(ctx, bson.D{})
	if err != nil || n != 4 {
		t.Errorf("stored %d documents (%v), want 4 (a b c e)", n, err)
	}
}
