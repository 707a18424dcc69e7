package rescue

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/chronow/persister/internal/batch"
	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/message"
	"github.com/chronow/persister/internal/sink"
	"github.com/chronow/persister/metrics"
)

// fakeStore records inserts; fail decides the class of each document.
type fakeStore struct {
	mu   sync.Mutex
	docs map[string][][]byte // collection → docs
	fail func(coll string, doc []byte) sink.Class
	err  error // command-level error
}

func (f *fakeStore) Insert(_ context.Context, _, coll string, docs [][]byte) ([]sink.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	res := make([]sink.Result, len(docs))
	for i, d := range docs {
		if f.fail != nil {
			if c := f.fail(coll, d); c != sink.ClassNone {
				res[i] = sink.Result{Class: c, Err: errors.New("refused: " + c.String())}
				continue
			}
		}
		if f.docs == nil {
			f.docs = map[string][][]byte{}
		}
		f.docs[coll] = append(f.docs[coll], d)
	}
	return res, nil
}

func (f *fakeStore) Database(string) (*mongo.Database, error) {
	return nil, errors.New("no database in the fake")
}

// notes records what the Rescuer notes (the daemon's is dlq.Memo).
type notes struct {
	mu   sync.Mutex
	last map[string]string
}

func (n *notes) Note(stream, id string, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.last == nil {
		n.last = map[string]string{}
	}
	n.last[stream+" "+id] = err.Error()
}

func (n *notes) Last(stream, id string) (string, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	s, ok := n.last[stream+" "+id]
	return s, ok
}

func newTestRescuer(s Store) (*Rescuer, *metrics.Metrics, *notes) {
	m := metrics.New(prometheus.NewRegistry(), "test")
	memo := &notes{}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	return NewRescuer(Config{Layout: keyspace.Layout{Prefix: "cw:"}, WriteTimeout: time.Second, Attempts: 2}, s, memo, m, log), m, memo
}

func TestRescueEntryTooLarge(t *testing.T) {
	for _, kind := range []keyspace.Kind{keyspace.KindTopic, keyspace.KindDLQ} {
		t.Run(string(kind), func(t *testing.T) {
			fs := &fakeStore{}
			r, m, _ := newTestRescuer(fs)
			key := keyspace.Key{Prefix: "cw:", Tenant: "acme", Namespace: "ns", Kind: kind, Name: "t"}
			payload := `"` + strings.Repeat("x", 17<<20) + `"`
			values := map[string]any{"payload": payload, "headers": `{"a":"b"}`, "size": "1", "reason": "r", "originalMsgId": "1-1"}
			it, ok := r.RescueEntry(context.Background(), key, redis.XMessage{ID: "1700000000000-3", Values: values}, message.ErrTooLarge)
			if !ok {
				t.Fatal("not rescued")
			}
			if it.Collection != Collection(kind) {
				t.Errorf("collection: got %s", it.Collection)
			}
			var d bson.M
			if err := bson.Unmarshal(it.Doc, &d); err != nil {
				t.Fatal(err)
			}
			if d["_id"] != "ns:t:1700000000000-3" || d["payload"] != nil || d["tenantId"] != "acme" {
				t.Errorf("stub: got %v", d)
			}
			if kind == keyspace.KindDLQ && (d["dlqId"] != "1700000000000-3" || d["msgId"] != "1-1" || d["reason"] != "r") {
				t.Errorf("dead-letter stub: got %v", d)
			}
			if kind == keyspace.KindTopic && (d["msgId"] != "1700000000000-3" || d["size"] != int64(len(payload))) {
				t.Errorf("messages stub: got %v", d)
			}
			sys := d["_system"].(bson.M)
			ref := sys["offloaded"].(bson.M)["payload"].(bson.M)
			if ref["length"] != int64(len(payload)) || ref["bucket"] != Bucket {
				t.Errorf("reference: got %v", ref)
			}
			if sys["raw"].(bson.M)["size"] != "1" {
				t.Errorf("raw: got %v", sys["raw"])
			}
			chunks := len(fs.docs[Bucket+".chunks"])
			if want := (len(payload) + ChunkSize - 1) / ChunkSize; chunks != want {
				t.Errorf("chunks: got %d, want %d", chunks, want)
			}
			if len(fs.docs[Bucket+".files"]) != 1 {
				t.Errorf("files documents: got %d", len(fs.docs[Bucket+".files"]))
			}
			if got := value(m, "persister_entries_malformed_total", "acme", string(DefectPayloadTooLarge)); got != 1 {
				t.Errorf("malformed{payload_too_large}: got %v", got)
			}
		})
	}
}

func TestRescueRefused(t *testing.T) {
	fs := &fakeStore{}
	r, m, _ := newTestRescuer(fs)
	key := keyspace.Key{Prefix: "cw:", Tenant: "acme", Namespace: "ns", Kind: keyspace.KindTopic, Name: "t"}
	var b message.Builder
	doc, err := b.Topic(key, "1700000000000-0", map[string]any{"payload": `{"a":1}`, "bad\xff": "x"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	orig := batch.Item{Stream: key.String(), ID: "1700000000000-0", Kind: "topic", Collection: config.CollMessages, Doc: doc.Raw}
	stub, ok := r.Rescue(context.Background(), orig, errors.New("invalid key"))
	if !ok {
		t.Fatal("not rescued")
	}
	if stub.Collection != config.CollMessages || stub.Stream != orig.Stream || stub.ID != orig.ID {
		t.Errorf("stub item: got %+v", stub)
	}
	var d bson.M
	if err := bson.Unmarshal(stub.Doc, &d); err != nil {
		t.Fatal(err)
	}
	if d["_id"] != doc.ID || d["msgId"] != "1700000000000-0" || d["topic"] != "t" || d["payload"] != nil {
		t.Errorf("stub: got %v", d)
	}
	sys := d["_system"].(bson.M)
	if sys["error"] != "invalid key" || sys["defects"].(bson.A)[0] != string(DefectRefused) {
		t.Errorf("stub _system: got %v", sys)
	}
	if files := fs.docs[Bucket+".files"]; len(files) != 1 {
		t.Fatalf("files: got %d", len(files))
	}
	if got := value(m, "persister_entries_malformed_total", "acme", string(DefectRefused)); got != 1 {
		t.Errorf("malformed{refused_by_server}: got %v", got)
	}

	// The stub is refused too: a minimal dead letter keeps the reference.
	stub.Attempts = 1
	dl, ok := r.Rescue(context.Background(), stub, errors.New("stub refused"))
	if !ok {
		t.Fatal("stub not rescued")
	}
	if dl.Collection != config.CollDeadLetters {
		t.Errorf("collection: got %s", dl.Collection)
	}
	var x bson.M
	if err := bson.Unmarshal(dl.Doc, &x); err != nil {
		t.Fatal(err)
	}
	if x["_id"] != RefusedID(key, orig.ID) || x["tenantId"] != "acme" || !strings.Contains(x["reason"].(string), "stub refused") {
		t.Errorf("dead letter: got %v", x)
	}
	ref := x["_system"].(bson.M)["offloaded"].(bson.M)["document"].(bson.M)
	if ref["fileId"] != fileID(config.CollMessages, doc.ID, "document") || ref["length"] != int64(len(doc.Raw)) {
		t.Errorf("reference: got %v", ref)
	}
	if got := value(m, "persister_entries_dead_lettered_total", "acme", string(DefectRefused)); got != 1 {
		t.Errorf("dead_lettered{refused_by_server}: got %v", got)
	}
}

func TestRescueFailsLeavesPending(t *testing.T) {
	for name, fs := range map[string]*fakeStore{
		"server down": {err: errors.New("connection refused")},
		"refused":     {fail: func(string, []byte) sink.Class { return sink.ClassPermanent }},
	} {
		t.Run(name, func(t *testing.T) {
			r, _, memo := newTestRescuer(fs)
			key := keyspace.Key{Prefix: "cw:", Tenant: "acme", Namespace: "ns", Kind: keyspace.KindTopic, Name: "t"}
			values := map[string]any{"payload": strings.Repeat("x", 5<<20)}
			if _, ok := r.RescueEntry(context.Background(), key, redis.XMessage{ID: "1-1", Values: values}, message.ErrTooLarge); ok {
				t.Fatal("rescued, want ok=false")
			}
			last, ok := memo.Last(key.String(), "1-1")
			if !ok || !strings.Contains(last, "BSON limit") {
				t.Errorf("notes: got %q %v", last, ok)
			}
		})
	}
}

// value reads a counter through the registry's Gather, as a scrape would.
func value(m *metrics.Metrics, family, tenant, label string) float64 {
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.Malformed, m.DeadLettered)
	mfs, err := reg.Gather()
	if err != nil {
		return -1
	}
	for _, mf := range mfs {
		if mf.GetName() != family {
			continue
		}
		for _, met := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range met.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["tenant"] == tenant && (labels["defect"] == label || labels["reason"] == label) {
				return met.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func TestChooseOffload(t *testing.T) {
	big := strings.Repeat("p", stubBudget+1)
	tests := []struct {
		name   string
		values map[string]any
		want   []string
	}{
		{"small", map[string]any{"payload": `{"a":1}`, "headers": `{}`}, nil},
		{"payload", map[string]any{"payload": big, "headers": `{}`}, []string{"payload"}},
		{"two", map[string]any{"payload": big, "headers": big + "h"}, []string{"headers", "payload"}},
		{"many medium", map[string]any{"a": big[:stubBudget/2-10], "b": big[:stubBudget/2-10], "c": big[:stubBudget/2-10]}, []string{"a"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := chooseOffload(tc.values)
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}
