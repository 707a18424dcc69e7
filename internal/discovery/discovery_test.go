package discovery

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/testenv"
)

func TestClassify(t *testing.T) {
	auto := keyspace.Layout{Prefix: "cw:", Form: keyspace.FormAuto}
	single := keyspace.Layout{Prefix: "cw:", Form: keyspace.FormSingle}
	doubled := keyspace.Layout{Prefix: "cw:", Form: keyspace.FormDoubled}
	tests := []struct {
		layout keyspace.Layout
		key    string
		kind   keyspace.Kind
		want   string // reason, "" for not Chronow-shaped
	}{
		{auto, "app:acme:default:topic:orders", keyspace.KindTopic, ReasonOtherPrefix},
		{auto, "acme:default:dlq:orders", keyspace.KindDLQ, ReasonOtherPrefix},
		{auto, "x:y:sm:flags:a", keyspace.KindSharedMemory, ReasonOtherPrefix},
		{single, "cw:cw:acme:default:topic:orders", keyspace.KindTopic, ReasonPrefixForm},
		{doubled, "cw:acme:default:topic:orders", keyspace.KindTopic, ReasonPrefixForm},
		{auto, "topic:orders", keyspace.KindTopic, ""},
		{auto, "a::topic:orders", keyspace.KindTopic, ""},
		{auto, "a:b:topic:", keyspace.KindTopic, ""},
		{auto, "queue:jobs", keyspace.KindTopic, ""},
	}
	for _, tt := range tests {
		got, ok := Classify(tt.layout, tt.key, tt.kind)
		if (tt.want == "") != !ok || got.Reason != tt.want {
			t.Errorf("Classify(%+v, %q) = %+v, %v; want reason %q", tt.layout, tt.key, got, ok, tt.want)
		}
		if ok && got.Hint == "" {
			t.Errorf("Classify(%q): no hint", tt.key)
		}
	}
}

// TestScanSortsEveryForm runs a pass on a real redis-server holding the
// keys Chronow writes with and without redis.keyPrefix, keys of an
// unconfigured tenant, under another prefix, an ambiguous one, and things
// that are not Chronow's.
func TestScanSortsEveryForm(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.StartRedis(t).Client(t)
	add := func(key string) {
		t.Helper()
		if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: []string{"payload", "1"}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{
		"cw:acme:default:topic:payments",    // no redis.keyPrefix: prefix once
		"cw:cw:acme:default:topic:orders",   // redis.keyPrefix: prefix twice
		"cw:cw:acme:billing:dlq:invoices",   // a dead-letter stream, doubled
		"cw:cw:default:topic:audit",         // tenant "cw"... not configured
		"cw:globex:default:topic:orders",    // unconfigured tenant
		"app:acme:default:topic:orders",     // another prefix
		"cw:cw:acme:topic:topic:orders",     // ambiguous: tenant cw (single) or acme (doubled), both configured
		"cw:acme:default:topic:pay:sub:s:x", // a stream named like a config hash: topic name "pay:sub:s:x"
		"jobs:queue",                        // not Chronow's
		"cw:acme:ns2:topic:both",            // both forms of one topic: a conflict,
		"cw:cw:acme:ns2:topic:both",         // the doubled one is consumed
		"cw:cw:acme:ns3:topic:quick",        // Chronow's quick start: entries under the doubled prefix,
	} {
		add(k)
	}
	// ...and the empty stream its unprefixed XGROUP CREATE MKSTREAM leaves
	// under the single prefix: not consumed, not reported (nothing in it).
	if err := rdb.XGroupCreateMkStream(ctx, "cw:acme:ns3:topic:quick", "sub:s1", "$").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, "cw:acme:default:topic:not-a-stream", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	layout := keyspace.Layout{Prefix: "cw:", Form: keyspace.FormAuto, Tenants: map[string]bool{"acme": true, "default": true, "cw": true}}
	res, err := New(rdb, layout, []keyspace.Kind{keyspace.KindTopic, keyspace.KindDLQ}).Scan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, k := range res.ByTenant["acme"] {
		got = append(got, k.String())
	}
	want := []string{"cw:acme:default:topic:pay:sub:s:x", "cw:acme:default:topic:payments", "cw:cw:acme:billing:dlq:invoices", "cw:cw:acme:default:topic:orders", "cw:cw:acme:ns2:topic:both", "cw:cw:acme:ns3:topic:quick"}
	if len(got) != len(want) {
		t.Fatalf("acme streams = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("acme streams = %v, want %v", got, want)
			break
		}
	}
	if cw := res.ByTenant["cw"]; len(cw) != 1 || cw[0].String() != "cw:cw:default:topic:audit" || cw[0].Prefix != "cw:" {
		t.Errorf("tenant cw streams = %+v, want cw:cw:default:topic:audit under the single prefix", cw)
	}
	if len(res.Unconfigured) != 1 || res.Unconfigured[0].String() != "cw:globex:default:topic:orders" {
		t.Errorf("unconfigured = %v", res.Unconfigured)
	}
	reasons := map[string]string{}
	for _, ig := range res.Ignored {
		reasons[ig.Key] = ig.Reason
	}
	wantIgnored := map[string]string{
		"app:acme:default:topic:orders": ReasonOtherPrefix,
		"cw:cw:acme:topic:topic:orders": ReasonAmbiguous,
		"cw:acme:ns2:topic:both":        ReasonConflict,
	}
	if len(reasons) != len(wantIgnored) {
		t.Errorf("ignored = %v, want %v", reasons, wantIgnored)
	}
	for k, r := range wantIgnored {
		if reasons[k] != r {
			t.Errorf("ignored[%q] = %q, want %q", k, reasons[k], r)
		}
	}
}
