package testenv_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chronow/persister/internal/testenv"
)

// TestStartCluster checks that the three masters form one cluster that
// routes keys of every slot range, and that a killed node rejoins after
// Restart with its slots.
func TestStartCluster(t *testing.T) {
	c := testenv.StartCluster(t, 3)
	cc := c.Client(t)
	ctx := context.Background()

	byNode := map[int]int{}
	for i := range 60 {
		key := fmt.Sprintf("k%d", i)
		if err := cc.Set(ctx, key, i, 0).Err(); err != nil {
			t.Fatalf("set %s: %v", key, err)
		}
		slot, err := cc.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		byNode[c.Master(int(slot))]++
	}
	if len(byNode) != 3 {
		t.Fatalf("keys landed on masters %v, want all 3", byNode)
	}
	for i, n := range c.Nodes {
		size, err := n.Client(t).DBSize(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		if int(size) != byNode[i] {
			t.Errorf("master %d holds %d keys, want %d (Master() disagrees with the cluster)", i, size, byNode[i])
		}
	}

	c.Nodes[1].Restart(t)
	deadline := time.Now().Add(testenv.ReadyTimeout)
	for {
		info, err := c.Nodes[1].Client(t).ClusterInfo(ctx).Result()
		if err == nil && strings.Contains(info, "cluster_state:ok") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restarted node not back in the cluster: %q %v", info, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
