package sharedmem_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/chronow/persister/internal/e2e"
	"github.com/chronow/persister/internal/promtext"
)

func storedVal(t *testing.T, mc *mongo.Client, tenant, ns, name string) (any, bool) {
	t.Helper()
	var d struct {
		Val any `bson:"val"`
	}
	err := mc.Database(e2e.DBName(tenant)).Collection("shared_memory").
		FindOne(context.Background(), bson.D{{Key: "key", Value: name}, {Key: "namespace", Value: ns}, {Key: "tenantId", Value: tenant}}).Decode(&d)
	if err == mongo.ErrNoDocuments {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return d.Val, true
}

// TestDaemonCarriesSharedMemory runs the whole daemon in-process: a value
// set before it starts arrives through reconcile, one set while it runs
// through notifications, and one still in the coalescing window when it is
// stopped is flushed on the way out.
func TestDaemonCarriesSharedMemory(t *testing.T) {
	ctx := context.Background()
	rs, ms, rdb, mc := e2e.StartServers(t)
	tenants := []string{"tenant-a", "tenant-b"}

	if err := rdb.Set(ctx, "cw:tenant-a:app:sm:before", `{"v":"before"}`, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	run := e2e.Start(t, e2e.Env(t, rs.URL, ms.URI, tenants, map[string]string{
		// Long enough that only the flush at stop writes the last value.
		"PERSISTER_SM_FLUSH_INTERVAL":     "20s",
		"PERSISTER_SM_RECONCILE_INTERVAL": "1h",
	}))
	reg := run.D.Registry()
	e2e.Eventually(t, 60*time.Second, "value set before start stored", func() (bool, string) {
		v, ok := storedVal(t, mc, "tenant-a", "app", "before")
		return ok && fmt.Sprint(v) == "[{v before}]", fmt.Sprint(v)
	})
	e2e.Eventually(t, 20*time.Second, "live capture up", func() (bool, string) {
		v := promtext.GatherSum(t, reg, "persister_sm_live_capture")
		return v == 1, fmt.Sprint(v)
	})
	if err := rdb.Set(ctx, "cw:tenant-b:default:sm:during", `"during"`, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	e2e.Eventually(t, 20*time.Second, "notification received", func() (bool, string) {
		v := promtext.GatherSum(t, reg, "persister_sm_notifications_total")
		return v >= 1, fmt.Sprint(v)
	})
	e2e.Eventually(t, 20*time.Second, "value pending", func() (bool, string) {
		v := promtext.GatherSum(t, reg, "persister_sm_pending_values")
		return v == 1, fmt.Sprint(v)
	})
	if _, ok := storedVal(t, mc, "tenant-b", "default", "during"); ok {
		t.Fatal("stored before the flush window ended; the test proves nothing")
	}
	if err := run.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if v, ok := storedVal(t, mc, "tenant-b", "default", "during"); !ok || v != "during" {
		t.Fatalf("after stop: val %v stored %v, want the pending value flushed at stop", v, ok)
	}
	if got := promtext.GatherSum(t, reg, "persister_sm_found_by_reconcile_total"); got != 1 {
		t.Errorf("found by reconcile %v, want 1 (the value set before start)", got)
	}
}
