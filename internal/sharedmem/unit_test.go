package sharedmem

import (
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/metrics"
)

func TestMissingFlags(t *testing.T) {
	tests := []struct{ current, required, want string }{
		{"", "K$", "K$"},
		{"", "K$g", "K$g"},
		{"AKE", "K$g", ""},
		{"$K", "K$", ""},
		{"Ex", "K$g", "K$g"},
		{"KEA", "K$", ""},
		{"Kg", "K$g", "$"},
		{"Kx$", "K$g", "g"},
	}
	for _, tt := range tests {
		if got := missingFlags(tt.current, tt.required); got != tt.want {
			t.Errorf("missingFlags(%q, %q) = %q, want %q", tt.current, tt.required, got, tt.want)
		}
	}
}

func TestEventClass(t *testing.T) {
	tests := map[string]string{
		"set": EventWrite, "setrange": EventWrite, "append": EventWrite, "incrby": EventWrite, "rename_to": EventWrite,
		"del": EventDelete, "rename_from": EventDelete, "move_from": EventDelete,
		"expired": EventIgnored, "expire": EventIgnored, "evicted": EventIgnored, "persist": EventIgnored,
	}
	for ev, want := range tests {
		if got := eventClass(ev); got != want {
			t.Errorf("eventClass(%q) = %q, want %q", ev, got, want)
		}
	}
}

func TestChannelPatternEscapesPrefix(t *testing.T) {
	if got, want := channelPattern(3, keyspace.Layout{Prefix: "a*b:", Form: keyspace.FormAuto}), `__keyspace@3__:a\*b:*:*:sm:*`; got != want {
		t.Errorf("channelPattern = %q, want %q", got, want)
	}
	if got, want := channelPattern(0, keyspace.Layout{Prefix: "cw:", Form: keyspace.FormDoubled}), `__keyspace@0__:cw:cw:*:*:sm:*`; got != want {
		t.Errorf("channelPattern = %q, want %q", got, want)
	}
}

func TestParseCapture(t *testing.T) {
	c, err := parseCapture([]any{"1700000000", "123456", "value", "abc", `{"a":1}`})
	if err != nil {
		t.Fatal(err)
	}
	if c.version != 1700000000123456 || c.status != statusValue || c.hash != "abc" || string(c.value) != `{"a":1}` {
		t.Errorf("got %+v", c)
	}
	for _, bad := range []any{nil, []any{"1", "2"}, []any{"x", "2", "missing"}, []any{"1", "2", "what"}, []any{"1", "2", "value", "h"}} {
		if _, err := parseCapture(bad); err == nil {
			t.Errorf("parseCapture(%v): no error", bad)
		}
	}
}

func TestHashMatchesRedisSha1hex(t *testing.T) {
	// redis-cli EVAL "return redis.sha1hex(ARGV[1])" 0 '{"a":1}'
	if got, want := Hash([]byte(`{"a":1}`)), "9f89c740ceb46d7418c924a78ac57941d5e96520"; got != want {
		t.Errorf("Hash = %s, want %s", got, want)
	}
}

func decodeUpdate(t *testing.T, op writeOp) bson.M {
	t.Helper()
	var m bson.M
	if err := bson.Unmarshal(op.update, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestBuildOp(t *testing.T) {
	k := keyspace.Key{Prefix: "cw:", Tenant: "t", Namespace: "ns", Kind: keyspace.KindSharedMemory, Name: "a:b"}
	at := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	v := at.UnixMicro()

	o := &Observation{Key: k, Version: v, Value: []byte(`{"n":9007199254740993,"$x":1}`)}
	o.Hash = Hash(o.Value)
	op, err := buildOp(o, 7)
	if err != nil {
		t.Fatal(err)
	}
	u := decodeUpdate(t, op)
	set := u["$set"].(bson.M)
	val := set["val"].(bson.M)
	if val["n"] != int64(9007199254740993) {
		t.Errorf("val.n = %v (%T), want int64 9007199254740993", val["n"], val["n"])
	}
	if _, ok := val["＄x"]; !ok {
		t.Errorf("val = %v, want the $ key escaped", val)
	}
	if got := set["_system.defects"]; len(got.(bson.A)) != 1 || got.(bson.A)[0] != DefectKeysEscaped {
		t.Errorf("defects = %v", got)
	}
	if set["_system.raw"].(bson.M)["val"] != string(o.Value) {
		t.Errorf("raw = %v", set["_system.raw"])
	}
	if set["_system.version"] != v || set["_system.hash"] != o.Hash || set["_system.retentionDays"] != int32(7) {
		t.Errorf("set = %v", set)
	}
	wantExpire := at.Add(7 * 24 * time.Hour).Truncate(time.Millisecond)
	if got := set["_system.expireAt"].(primitive.DateTime).Time().UTC(); !got.Equal(wantExpire) {
		t.Errorf("expireAt = %v, want %v", got, wantExpire)
	}
	if got := u["$setOnInsert"].(bson.M)["_system.createdAt"].(primitive.DateTime).Time(); !got.Equal(at.Truncate(time.Millisecond)) {
		t.Errorf("createdAt = %v", got)
	}
	unset := u["$unset"].(bson.M)
	for _, f := range []string{"_system.tombstone", "_system.deletedAt"} {
		if _, ok := unset[f]; !ok {
			t.Errorf("$unset lacks %s: %v", f, unset)
		}
	}
	for f := range unset {
		if _, ok := set[f]; ok {
			t.Errorf("%s both set and unset", f)
		}
	}

	// Not JSON, no retention.
	o = &Observation{Key: k, Version: v, Value: []byte(`hello {`)}
	o.Hash = Hash(o.Value)
	op, err = buildOp(o, 0)
	if err != nil {
		t.Fatal(err)
	}
	set = decodeUpdate(t, op)["$set"].(bson.M)
	if set["val"] != "hello {" || set["_system.defects"].(bson.A)[0] != DefectNotJSON {
		t.Errorf("not-JSON value: set = %v", set)
	}
	if _, ok := set["_system.expireAt"]; ok {
		t.Errorf("expireAt without retention")
	}

	// A lone surrogate, as JSON.stringify writes a string cut inside an
	// emoji: stored replaced, flagged, the exact text kept.
	o = &Observation{Key: k, Version: v, Value: []byte(`{"name":"cut \ud83c"}`)}
	o.Hash = Hash(o.Value)
	op, err = buildOp(o, 0)
	if err != nil {
		t.Fatal(err)
	}
	set = decodeUpdate(t, op)["$set"].(bson.M)
	if set["val"].(bson.M)["name"] != "cut \uFFFD" || set["_system.defects"].(bson.A)[0] != DefectUnicode ||
		set["_system.raw"].(bson.M)["val"] != string(o.Value) {
		t.Errorf("lone surrogate: set = %v", set)
	}

	// Refused by the server: val null, the exact text, the error.
	o = &Observation{Key: k, Version: v, Value: []byte(`[1,[2,[3]]]`), refusal: "(BadValue) nested arrays"}
	o.Hash = Hash(o.Value)
	op, err = buildOp(o, 0)
	if err != nil {
		t.Fatal(err)
	}
	u = decodeUpdate(t, op)
	set = u["$set"].(bson.M)
	if v, ok := set["val"]; !ok || v != nil {
		t.Errorf("rescue: val = %v, %v; want null", v, ok)
	}
	if set["_system.defects"].(bson.A)[0] != DefectRefused || set["_system.raw"].(bson.M)["val"] != `[1,[2,[3]]]` ||
		set["_system.error"] != "(BadValue) nested arrays" || set["_system.hash"] != o.Hash {
		t.Errorf("rescue: set = %v", set)
	}
	if _, ok := u["$unset"].(bson.M)["_system.error"]; ok {
		t.Errorf("rescue unsets _system.error")
	}

	// Tombstone.
	op, err = buildOp(&Observation{Key: k, Version: v, Deleted: true}, 0)
	if err != nil {
		t.Fatal(err)
	}
	u = decodeUpdate(t, op)
	set = u["$set"].(bson.M)
	if set["_system.tombstone"] != true || set["_system.deletedAt"] == nil {
		t.Errorf("tombstone: set = %v", set)
	}
	if _, ok := set["val"]; ok {
		t.Errorf("tombstone replaces val")
	}
	if _, ok := u["$unset"].(bson.M)["_system.hash"]; !ok {
		t.Errorf("tombstone keeps the hash")
	}
}

func TestHashCacheLookupNeverUndoesNewerWrite(t *testing.T) {
	c := newHashCache(10)
	mark := c.mark()
	c.set("k", "new", 20)                                                 // a write confirmed while the lookup ran
	c.applyLookup("k", true, storedState{hash: "old", version: 10}, mark) // the lookup's older read
	if e := c.get("k"); e.hash != "new" || e.version != 20 {
		t.Errorf("got %+v, want the write's entry", e)
	}
	c.drop("k")
	c.applyLookup("k", true, storedState{hash: "old", version: 10}, mark)
	if e := c.get("k"); e.hash != "" {
		t.Errorf("after drop, an earlier lookup set %+v", e)
	}
	mark = c.mark()
	c.applyLookup("k", true, storedState{hash: "h", version: 30}, mark)
	if e := c.get("k"); e.hash != "h" {
		t.Errorf("fresh lookup: got %+v", e)
	}
	for i := range 20 {
		c.set(string(rune('a'+i)), "x", 1)
	}
	if c.len() > 10 {
		t.Errorf("cache holds %d entries, max 10", c.len())
	}
}

func TestWriterAddKeepsNewestAndCountsBytes(t *testing.T) {
	m := metrics.New(prometheus.NewRegistry(), "test")
	w := newWriter(nil, newHashCache(10), m, slog.New(slog.DiscardHandler), Config{MaxPending: 2, FlushInterval: time.Second})
	k := keyspace.Key{Prefix: "cw:", Tenant: "t", Namespace: "ns", Kind: keyspace.KindSharedMemory, Name: "a"}
	k2 := k
	k2.Name = "b"
	obs := func(k keyspace.Key, v string, version int64) Observation {
		return Observation{Key: k, Version: version, Value: []byte(v), Hash: Hash([]byte(v)), Source: SourceLive}
	}
	w.add([]Observation{obs(k, "333", 3), obs(k, "1", 1), obs(k, "4444", 4), obs(k, "22", 2)})
	if p := w.pending[k.String()]; p == nil || string(p.Value) != "4444" {
		t.Fatalf("pending %v, want the newest (4444)", p)
	}
	if w.pendingBytes != 4 || w.full() {
		t.Errorf("pendingBytes %d full %v, want 4 and not full", w.pendingBytes, w.full())
	}
	w.add([]Observation{obs(k2, "55555", 5)})
	if w.pendingBytes != 9 || !w.full() {
		t.Errorf("pendingBytes %d full %v, want 9 and full (2 keys)", w.pendingBytes, w.full())
	}
	// The key is back to the stored value: the older pending one goes.
	w.cache.set(k.String(), Hash([]byte("x")), 0)
	w.add([]Observation{{Key: k, Version: 9, Hash: Hash([]byte("x")), Unchanged: true}})
	if _, ok := w.pending[k.String()]; ok || w.pendingBytes != 5 {
		t.Errorf("after unchanged: pending %v bytes %d, want a removed and 5 bytes", w.pending[k.String()], w.pendingBytes)
	}
}
