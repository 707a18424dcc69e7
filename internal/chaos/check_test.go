package chaos

import (
	"strings"
	"testing"
)

func TestParseCounters(t *testing.T) {
	body := `# HELP persister_entries_stored_total Entries stored and acknowledged.
# TYPE persister_entries_stored_total counter
persister_entries_stored_total{collection="messages",outcome="inserted",tenant="acme"} 10
persister_entries_stored_total{collection="messages",outcome="inserted",tenant="globex"} 5
persister_entries_stored_total{collection="messages",outcome="duplicate",tenant="acme"} 3
persister_entries_stored_total{collection="dead_letters",outcome="inserted",tenant="acme"} 2
persister_entries_stored_total{collection="dead_letters",outcome="duplicate",tenant="acme"} 1
persister_entries_lost_total{cause="trimmed_before_stored",tenant="acme"} 4
persister_entries_lost_total{cause="something_else",tenant="acme"} 100
persister_entries_dead_lettered_total{reason="poison",tenant="acme"} 1
persister_entries_claimed_total{tenant="acme"} 7
persister_write_errors_total{class="unknown_outcome",tenant="acme"} 2
persister_write_errors_total{class="retryable",tenant="acme"} 50
`
	c, err := parseCounters(body)
	if err != nil {
		t.Fatal(err)
	}
	want := counters{Inserted: 15, DLInserted: 2, Duplicate: 4, DeadLettered: 1, Lost: 4, Claimed: 7, Unknown: 2}
	if c != want {
		t.Errorf("parsed %+v, want %+v", c, want)
	}
}

func TestFieldsDiffer(t *testing.T) {
	r := &record{Kind: "topic", Stream: "cw:acme:payments:topic:orders", ID: "5-0", Tenant: "acme", NS: "payments", Topic: "orders",
		Seq: 9, Payload: `{"seq":9}`, Headers: map[string]string{"traceId": "chaos-9"}}
	d := storedDoc{ID: r.DocID(), TenantID: "acme", Namespace: "payments", Topic: "orders", MsgID: "5-0", Hash: sha256hex(r.Payload)}
	d.Payload.Seq, d.Headers.TraceID = 9, "chaos-9"
	if why := fieldsDiffer(r, d); why != "" {
		t.Fatalf("a faithful document differs: %s", why)
	}
	d.Payload.Seq, d.TenantID = 8, "globex"
	why := fieldsDiffer(r, d)
	if !strings.Contains(why, "payload.seq 8, want 9") || !strings.Contains(why, "tenantId globex, want acme") {
		t.Errorf("differences not named: %q", why)
	}
}
