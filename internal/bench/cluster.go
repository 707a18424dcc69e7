package bench

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/testenv"
)

// StageCluster drains from a 3-master Redis Cluster with 1, 2 and 3 daemon
// replicas (issue 10).
const StageCluster = "cluster"

// ClusterMasters is the size of the benchmark's Redis Cluster.
const ClusterMasters = 3

// ClusterIdle is what a daemon and Redis cost while every stream is empty
// (in a cluster the reader polls: consumer.DefaultIdlePoll).
type ClusterIdle struct {
	Streams  int
	Duration time.Duration
	// DaemonCPU and RedisCPU are fractions of one core over Duration
	// (RedisCPU summed over the masters).
	DaemonCPU, RedisCPU float64
}

// clusterEnv starts a fresh cluster under dir and returns e rewired to it:
// a cluster client, and REDIS_CLUSTER_NODES for the daemons.
func (e *Env) clusterEnv(ctx context.Context, dir string) (*Env, *testenv.ClusterServer, error) {
	cs, err := testenv.LaunchCluster(ctx, dir, ClusterMasters)
	if err != nil {
		return nil, nil, fmt.Errorf("start redis cluster: %w", err)
	}
	ce := *e
	ce.Dir = dir
	ce.RDB = redis.NewClusterClient(&redis.ClusterOptions{Addrs: cs.Addrs()})
	ce.RedisURL = "redis://" + cs.Addrs()[0] + "/0" // unused: the nodes win
	ce.DaemonEnv = maps.Clone(e.DaemonEnv)
	ce.DaemonEnv["REDIS_CLUSTER_NODES"] = cs.NodesJSON()
	return &ce, cs, nil
}

// ClusterScale drains a backlog of n entries over the Mixed layout (40
// streams, spread over every master) from a fresh 3-master cluster with 1,
// 2 and 3 replicas, each on its own cluster so no drain inherits another's
// state.
func (e *Env) ClusterScale(ctx context.Context, n int) ([]DrainResult, error) {
	var out []DrainResult
	for _, replicas := range []int{1, 2, 3} {
		name := fmt.Sprintf("cluster-%d-replica", replicas)
		if replicas > 1 {
			name += "s"
		}
		ce, cs, err := e.clusterEnv(ctx, filepath.Join(e.Dir, name))
		if err != nil {
			return out, err
		}
		d, _, err := ce.Drain(ctx, name, Mixed, n, replicas, false, nil)
		_ = ce.RDB.Close()
		if serr := cs.Stop(); err == nil && serr != nil {
			err = serr
		}
		if err != nil {
			return out, err
		}
		out = append(out, d)
	}
	return out, nil
}

// ClusterIdleCost drains a small backlog over 1000 streams (50 tenants × 20
// topics) from a fresh cluster with one daemon, then measures the CPU the
// idle daemon and the masters use over d while nothing is published.
func (e *Env) ClusterIdleCost(ctx context.Context, d time.Duration) (ClusterIdle, error) {
	ce, cs, err := e.clusterEnv(ctx, filepath.Join(e.Dir, "cluster-idle"))
	if err != nil {
		return ClusterIdle{}, err
	}
	defer cs.Stop()
	defer ce.RDB.Close()
	pids := make([]int, len(cs.Nodes))
	for i, n := range cs.Nodes {
		pids[i] = n.Pid()
	}
	return ce.IdleCost(ctx, d, pids)
}

// IdleCost drains a small backlog over 1000 streams (50 tenants × 20
// topics) with one daemon, then measures the CPU the idle daemon and the
// Redis processes redisPids use over d while nothing is published.
func (e *Env) IdleCost(ctx context.Context, d time.Duration, redisPids []int) (ClusterIdle, error) {
	res := ClusterIdle{Streams: ThousandStreams.Streams(), Duration: d}
	_, ds, err := e.Drain(ctx, "idle", ThousandStreams, ThousandStreams.Streams()*2, 1, true, nil)
	if err != nil {
		return res, err
	}
	defer StopAll(ds)
	usage := func() (time.Duration, time.Duration, error) {
		du, err := ReadUsage(ds[0].Pid())
		if err != nil {
			return 0, 0, err
		}
		var rc time.Duration
		for _, pid := range redisPids {
			u, err := ReadUsage(pid)
			if err != nil {
				return 0, 0, err
			}
			rc += u.CPU
		}
		return du.CPU, rc, nil
	}
	d0, r0, err := usage()
	if err != nil {
		return res, err
	}
	start := time.Now()
	select {
	case <-ctx.Done():
		return res, ctx.Err()
	case <-time.After(d):
	}
	d1, r1, err := usage()
	if err != nil {
		return res, err
	}
	el := time.Since(start).Seconds()
	res.DaemonCPU = (d1 - d0).Seconds() / el
	res.RedisCPU = (r1 - r0).Seconds() / el
	return res, nil
}

// ClusterStage runs ClusterScale, ClusterIdleCost for 10 s and
// ClusterLatency at half the 1-replica drain rate for 20 s. The drains go
// to the report's drain table, the rest to notes.
func (e *Env) ClusterStage(ctx context.Context, n int) ([]DrainResult, []string, error) {
	ds, err := e.ClusterScale(ctx, n)
	if err != nil {
		return ds, nil, err
	}
	var notes []string
	if len(ds) == 3 {
		notes = append(notes, fmt.Sprintf("Redis Cluster (%d masters on loopback, one fresh cluster per drain): %s entries over %s drained at %s / %s / %s entries/s with 1 / 2 / 3 replicas (%.2f× / %.2f× the 1-replica rate).",
			ClusterMasters, num(float64(n)), Mixed, num(ds[0].Rate()), num(ds[1].Rate()), num(ds[2].Rate()), ds[1].Rate()/ds[0].Rate(), ds[2].Rate()/ds[0].Rate()))
	}
	idle, err := e.ClusterIdleCost(ctx, 10*time.Second)
	if err != nil {
		return ds, notes, err
	}
	e.Log.Info("cluster idle cost", "streams", idle.Streams, "seconds", idle.Duration.Seconds(),
		"daemon_cpu_pct", fmt.Sprintf("%.1f", 100*idle.DaemonCPU), "redis_cpu_pct_all_masters", fmt.Sprintf("%.1f", 100*idle.RedisCPU))
	notes = append(notes, fmt.Sprintf("Redis Cluster, idle: one daemon polling %d empty streams uses %.1f%% of a core; the %d masters together %.1f%% (PERSISTER_CLUSTER_IDLE_POLL default).",
		idle.Streams, 100*idle.DaemonCPU, ClusterMasters, 100*idle.RedisCPU))
	// Half the 1-replica drain rate, as the standalone latency stage does.
	l, err := e.ClusterLatency(ctx, ds[0].Rate()/2, 20*time.Second)
	if err != nil {
		return ds, notes, err
	}
	e.Log.Info("cluster steady latency", "rate", int(l.Achieved), "seconds", l.Duration.Seconds(), "entries", len(l.Acked),
		"p50_ms", ms(l.Quantile(.5)), "p90_ms", ms(l.Quantile(.9)), "p99_ms", ms(l.Quantile(.99)), "max_ms", ms(l.Quantile(1)))
	notes = append(notes, fmt.Sprintf("Redis Cluster, steady load %s entries/s for %s over %s, 1 replica: XADD → acknowledged p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms.",
		num(l.Achieved), l.Duration, Mixed, ms(l.Quantile(.5)), ms(l.Quantile(.9)), ms(l.Quantile(.99)), ms(l.Quantile(1))))
	return ds, notes, nil
}

// ClusterLatency runs one daemon on a fresh cluster, first draining a
// small backlog (so every stream exists and is read), then measures XADD
// reply → acknowledged (after the insert) at rate entries/s over the Mixed
// layout for d: the cost of polling instead of blocking reads.
func (e *Env) ClusterLatency(ctx context.Context, rate float64, d time.Duration) (LatencyResult, error) {
	ce, cs, err := e.clusterEnv(ctx, filepath.Join(e.Dir, "cluster-latency"))
	if err != nil {
		return LatencyResult{}, err
	}
	defer cs.Stop()
	defer ce.RDB.Close()
	warm := Mixed.Streams() * 10
	_, ds, err := ce.Drain(ctx, "cluster-latency", Mixed, warm, 1, true, nil)
	if err != nil {
		return LatencyResult{}, err
	}
	defer StopAll(ds)
	return ce.Latency(ctx, Mixed, ds, rate, d, 0, warm)
}
