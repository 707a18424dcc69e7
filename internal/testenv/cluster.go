package testenv

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// ClusterSlots is the number of hash slots of a Redis Cluster.
const ClusterSlots = 16384

// clusterArgs are the redis-server arguments of a cluster node (Redis 7.0
// or later: each node is also given its own --cluster-port). The node
// timeout is short so that a node killed by a test is noticed quickly; the
// config file (nodes.conf) lives in the node's data dir, so a restarted
// node keeps its id and rejoins.
var clusterArgs = []string{
	"--cluster-enabled", "yes",
	"--cluster-config-file", "nodes.conf",
	"--cluster-node-timeout", "3000",
	// Keep serving the slots of the live masters while one is down, as a
	// cluster without replicas would otherwise refuse every key.
	"--cluster-require-full-coverage", "no",
}

// Cluster is a Redis Cluster of masters without replicas on loopback,
// started for one test. Master i owns the slots SlotRange(i).
type Cluster struct {
	Nodes []*Redis
	// BusPorts are the nodes' cluster bus ports.
	BusPorts []int
}

// StartCluster starts masters redis-server processes in cluster mode,
// assigns each an equal range of the 16384 slots, joins them, and waits
// until every node reports cluster_state:ok and knows every other node.
// The servers are killed on cleanup. Options are those of StartRedis.
func StartCluster(t testing.TB, masters int, opts ...RedisOption) *Cluster {
	t.Helper()

	if masters < 1 {
		t.Fatalf("testenv: StartCluster: %d masters", masters)
	}

	if v, err := redisVersion(redisServer.must(t)); err != nil || v < 7 {
		t.Fatalf("testenv: StartCluster needs redis-server 7.0 or later (--cluster-port, CLUSTER MEET with a bus port); found major version %d (%v)", v, err)
	}

	c := &Cluster{}

	for range masters {
		// The cluster bus port is reserved too: the default, port+10000,
		// may fall in the ephemeral range and be taken.
		bus := FreePort(t)
		c.BusPorts = append(c.BusPorts, bus)
		busArg := WithRedisArgs("--cluster-port", strconv.Itoa(bus))
		c.Nodes = append(c.Nodes, StartRedis(t, append([]RedisOption{WithRedisArgs(clusterArgs...), busArg}, opts...)...))
	}

	ctx, cancel := context.WithTimeout(context.Background(), ReadyTimeout)
	defer cancel()

	if err := formCluster(ctx, c.Addrs(), c.BusPorts, c.Nodes[0].TLSConfig()); err != nil {
		var tails []string
		for _, n := range c.Nodes {
			tails = append(tails, fmt.Sprintf("--- %s:\n%s", n.Addr, n.p.logTail()))
		}
		t.Fatalf("testenv: StartCluster: %v\n%s", err, strings.Join(tails, "\n"))
	}

	return c
}

// redisVersion returns the major version of a redis-server binary, from
// `redis-server --version` ("Redis server v=7.0.15 ...").
func redisVersion(bin string) (int, error) {
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return 0, err
	}

	_, v, ok := strings.Cut(string(out), "v=")
	if !ok {
		return 0, fmt.Errorf("no version in %q", out)
	}

	major, _, _ := strings.Cut(v, ".")

	return strconv.Atoi(major)
}

// Addrs returns the masters' host:port addresses.
func (c *Cluster) Addrs() []string {
	return nodeAddrs(c.Nodes, func(n *Redis) string { return n.Addr })
}

// NodesJSON returns the addresses as Chronow's REDIS_CLUSTER_NODES value.
func (c *Cluster) NodesJSON() string {
	return nodesJSON(c.Addrs())
}

// nodeAddrs returns addr of each node, in order.
func nodeAddrs[N any](nodes []N, addr func(N) string) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = addr(n)
	}

	return out
}

// nodesJSON returns addrs as Chronow's REDIS_CLUSTER_NODES value (a JSON
// array of host:port strings).
func nodesJSON(addrs []string) string {
	b, _ := json.Marshal(addrs)
	return string(b)
}

// Client returns a new cluster client of the cluster, closed on cleanup.
func (c *Cluster) Client(t testing.TB) *redis.ClusterClient {
	t.Helper()

	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), TLSConfig: c.Nodes[0].TLSConfig()})
	t.Cleanup(func() {
		for _, n := range c.Nodes {
			n.p.resumeIfPaused()
		}
		_ = cc.Close()
	})

	return cc
}

// SlotRange returns the first and last slot master i of n was given.
func SlotRange(i, n int) (first, last int) {
	return i * ClusterSlots / n, (i+1)*ClusterSlots/n - 1
}

// Master returns the index of the master that owns slot.
func (c *Cluster) Master(slot int) int {
	for i := range c.Nodes {
		if _, last := SlotRange(i, len(c.Nodes)); slot <= last {
			return i
		}
	}

	return len(c.Nodes) - 1
}

// formCluster turns fresh cluster-enabled nodes into one cluster, as
// `redis-cli --cluster create --cluster-replicas 0` does: distinct config
// epochs, equal slot ranges, CLUSTER MEET (with each node's bus port), then
// it waits for agreement.
func formCluster(ctx context.Context, addrs []string, busPorts []int, tlsCfg *tls.Config) error {
	clients := make([]*redis.Client, len(addrs))
	for i, a := range addrs {
		clients[i] = redis.NewClient(&redis.Options{Addr: a, DisableIdentity: true, MaxRetries: -1, TLSConfig: tlsCfg})
	}

	defer func() {
		for _, c := range clients {
			_ = c.Close()
		}
	}()

	for i, c := range clients {
		if err := c.Do(ctx, "cluster", "set-config-epoch", i+1).Err(); err != nil {
			return fmt.Errorf("%s: cluster set-config-epoch: %w", addrs[i], err)
		}

		first, last := SlotRange(i, len(clients))
		if err := c.ClusterAddSlotsRange(ctx, first, last).Err(); err != nil {
			return fmt.Errorf("%s: cluster addslots %d-%d: %w", addrs[i], first, last, err)
		}
	}

	for i, a := range addrs[1:] {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			return err
		}

		bus := busPorts[i+1]
		if err := clients[0].Do(ctx, "cluster", "meet", host, port, bus).Err(); err != nil {
			return fmt.Errorf("%s: cluster meet %s (bus port %d): %w", addrs[0], a, bus, err)
		}
	}

	return waitClusterOK(ctx, clients, addrs)
}

// waitClusterOK polls CLUSTER INFO on every node until each says
// cluster_state:ok and knows every node, and its CLUSTER SLOTS cover all
// slots with one range per node.
func waitClusterOK(ctx context.Context, clients []*redis.Client, addrs []string) error {
	lastErr := errors.New("not checked")

	for {
		if lastErr = clusterAgrees(ctx, clients, addrs); lastErr == nil {
			return nil
		}

		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster not ready: %w", lastErr)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func clusterAgrees(ctx context.Context, clients []*redis.Client, addrs []string) error {
	for i, c := range clients {
		info, err := c.ClusterInfo(ctx).Result()
		if err != nil {
			return fmt.Errorf("%s: cluster info: %w", addrs[i], err)
		}

		want := []string{"cluster_state:ok", "cluster_known_nodes:" + strconv.Itoa(len(clients)), "cluster_slots_assigned:16384"}
		for _, w := range want {
			if !strings.Contains(info, w+"\r\n") && !strings.HasSuffix(strings.TrimSpace(info), w) {
				return fmt.Errorf("%s: cluster info lacks %q", addrs[i], w)
			}
		}

		slots, err := c.ClusterSlots(ctx).Result()
		if err != nil {
			return fmt.Errorf("%s: cluster slots: %w", addrs[i], err)
		}

		owners := map[string]bool{}
		for _, s := range slots {
			if len(s.Nodes) > 0 {
				owners[s.Nodes[0].Addr] = true
			}
		}

		if len(owners) != len(clients) {
			return fmt.Errorf("%s: cluster slots name %d owners, want %d", addrs[i], len(owners), len(clients))
		}
	}

	return nil
}
