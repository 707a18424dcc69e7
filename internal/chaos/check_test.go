package chaos

import (
	"strings"
	"testing"
)

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
