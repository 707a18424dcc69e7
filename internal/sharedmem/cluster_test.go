package sharedmem

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chronow/persister/internal/testenv"
)

// TestCluster: on a 3-master cluster, notifications are subscribed on
// every master and reconcile scans every master.
func TestCluster(t *testing.T) {
	ctx := context.Background()
	cl := testenv.StartCluster(t, 3)
	cc := cl.Client(t)
	e := newEnvWith(t, cc, 0)
	r := e.start(e.config())
	e.waitLive()

	names := make([]string, 24) // spread over the slots of all masters
	masters := map[int]bool{}
	for i := range names {
		names[i] = fmt.Sprintf("k%d", i)
		slot, err := cc.ClusterKeySlot(ctx, smKey("tenant-a", "app", names[i])).Result()
		if err != nil {
			t.Fatal(err)
		}
		masters[cl.Master(int(slot))] = true
	}
	if len(masters) != 3 {
		t.Fatalf("keys cover masters %v, want all 3", masters)
	}
	for _, n := range names {
		e.set(smKey("tenant-a", "app", n), fmt.Sprintf(`"live-%s"`, n), time.Hour)
		e.set(smKey("tenant-b", "default", n), fmt.Sprintf(`"live-%s"`, n), time.Hour)
	}
	for _, n := range names {
		e.waitVal("tenant-a", "app", n, "live-"+n)
		e.waitVal("tenant-b", "default", n, "live-"+n)
	}
	if got := e.metric("persister_sm_found_by_reconcile_total"); got != 0 {
		t.Errorf("found by reconcile %v, want 0: every master's notifications should arrive", got)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}

	for _, n := range names {
		e.set(smKey("tenant-a", "app", n), fmt.Sprintf(`"down-%s"`, n), time.Hour)
	}
	e.start(e.config())
	for _, n := range names {
		e.waitVal("tenant-a", "app", n, "down-"+n)
	}
	if got := e.metric("persister_sm_found_by_reconcile_total"); got != float64(len(names)) {
		t.Errorf("found by reconcile %v, want %d", got, len(names))
	}
	if got := e.metric("persister_sm_reconcile_keys_scanned_total"); got < float64(2*len(names)) {
		t.Errorf("keys scanned %v, want >= %d", got, 2*len(names))
	}
}
