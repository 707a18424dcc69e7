package testenv

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strconv"
)

// ClusterServer is a Redis Cluster started outside a test (by the benchmark
// command). The caller owns it and must call Stop.
type ClusterServer struct {
	Nodes []*Server

	busPorts []int
	release  []func() // bus port reservations
}

// LaunchCluster starts masters cluster-enabled redis-server processes, each
// with its data and log under dir/node-<i>, and forms them into a cluster
// as StartCluster does. extra arguments are passed to every node.
func LaunchCluster(ctx context.Context, dir string, masters int, extra ...string) (*ClusterServer, error) {
	cs := &ClusterServer{}
	args := append(append([]string{}, clusterArgs...), extra...)

	for i := range masters {
		bus, release, err := reservePort()
		if err != nil {
			_ = cs.Stop()
			return nil, err
		}

		cs.release = append(cs.release, release)
		cs.busPorts = append(cs.busPorts, bus)

		s, err := LaunchRedis(filepath.Join(dir, "node-"+strconv.Itoa(i)), slices.Concat(args, []string{"--cluster-port", strconv.Itoa(bus)})...)
		if err != nil {
			_ = cs.Stop()
			return nil, err
		}

		cs.Nodes = append(cs.Nodes, s)
	}

	ctx, cancel := context.WithTimeout(ctx, ReadyTimeout)
	defer cancel()

	if err := formCluster(ctx, cs.Addrs(), cs.busPorts, nil); err != nil {
		_ = cs.Stop()
		return nil, err
	}

	return cs, nil
}

// Addrs returns the masters' host:port addresses.
func (cs *ClusterServer) Addrs() []string {
	return nodeAddrs(cs.Nodes, func(n *Server) string { return n.Addr })
}

// NodesJSON returns the addresses as Chronow's REDIS_CLUSTER_NODES value.
func (cs *ClusterServer) NodesJSON() string {
	return nodesJSON(cs.Addrs())
}

// Stop kills every node.
func (cs *ClusterServer) Stop() error {
	var errs []error
	for _, n := range cs.Nodes {
		errs = append(errs, n.Stop())
	}

	for _, r := range cs.release {
		r()
	}

	cs.release = nil

	return errors.Join(errs...)
}
