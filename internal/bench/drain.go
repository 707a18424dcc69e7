package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/sink"
)

// Group is the consumer group the daemon uses by default.
const Group = "persister"

// Env is what every stage needs: the servers, the daemon binary, a work dir.
type Env struct {
	RDB          redis.UniversalClient
	Mongo        *mongo.Client
	RedisURL     string
	MongoURI     string
	Bin          string
	Dir          string
	PayloadBytes int
	// DaemonEnv is added to every daemon's environment.
	DaemonEnv map[string]string
	Log       *slog.Logger
	// ServerPids are the processes of the servers the benchmark started
	// (name → pid), whose CPU the steady stage reports; empty for given
	// servers.
	ServerPids map[string]int
}

// serverCPU reads the CPU time of each started server.
func (e *Env) serverCPU() map[string]time.Duration {
	out := map[string]time.Duration{}
	for name, pid := range e.ServerPids {
		if u, err := ReadUsage(pid); err == nil {
			out[name] = u.CPU
		}
	}
	return out
}

// ClientCPU names the benchmark process itself in processCPU.
const ClientCPU = "client (the benchmark)"

// processCPU is serverCPU plus the benchmark's own CPU time.
func (e *Env) processCPU() map[string]time.Duration {
	out := e.serverCPU()
	if u, err := ReadUsage(os.Getpid()); err == nil {
		out[ClientCPU] = u.CPU
	}
	return out
}

// DrainResult is one drain of a backlog.
type DrainResult struct {
	Name     string
	Layout   Layout
	Entries  int
	Replicas int
	// LoadRate is how fast the backlog was XADDed (entries/s).
	LoadRate float64
	// Elapsed runs from the daemons' start to the moment every entry was
	// seen acknowledged (pending 0, lag 0 on every stream).
	Elapsed time.Duration
	// FirstAck runs from the start to the first acknowledged entry.
	FirstAck time.Duration
	// CPU is the daemons' user+system time at the end of the drain.
	CPU time.Duration
	// PeakRSS is the largest VmHWM among the daemons.
	PeakRSS int64
	// ServerCPU is the CPU time of each started server during the drain.
	ServerCPU map[string]time.Duration
}

// Rate is entries stored per second.
func (r DrainResult) Rate() float64 { return float64(r.Entries) / r.Elapsed.Seconds() }

// CPUPerEntry is the daemons' CPU time per entry.
func (r DrainResult) CPUPerEntry() time.Duration {
	return r.CPU / time.Duration(max(r.Entries, 1))
}

// Reset deletes every benchmark key and database.
func (e *Env) Reset(ctx context.Context) error {
	var keys []string
	iter := e.RDB.Scan(ctx, 0, KeyPrefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return fmt.Errorf("scan benchmark keys: %w", err)
	}
	for len(keys) > 0 {
		n := min(len(keys), 500)
		if err := e.RDB.Unlink(ctx, keys[:n]...).Err(); err != nil {
			return fmt.Errorf("unlink benchmark keys: %w", err)
		}
		keys = keys[n:]
	}
	names, err := e.Mongo.ListDatabaseNames(ctx, bson.D{})
	if err != nil {
		return fmt.Errorf("list databases: %w", err)
	}
	for _, n := range names {
		if strings.HasPrefix(n, DBPrefix) {
			if err := e.Mongo.Database(n).Drop(ctx); err != nil {
				return fmt.Errorf("drop %s: %w", n, err)
			}
		}
	}
	return nil
}

// Prepare resets, creates the layout's schema (as `persister migrate` does
// at deployment, so it is not part of the timed drain) and loads n entries.
func (e *Env) Prepare(ctx context.Context, l Layout, n int) (float64, error) {
	if err := e.Reset(ctx); err != nil {
		return 0, err
	}
	for _, t := range l.TenantIDs() {
		if _, err := sink.EnsureSchema(ctx, e.Mongo.Database(DBName(t)), false); err != nil {
			return 0, err
		}
	}
	if n == 0 {
		return 0, nil
	}
	return Load(ctx, e.RDB, l, n, e.PayloadBytes)
}

// StartDaemons starts replicas daemons consuming the layout's tenants.
func (e *Env) StartDaemons(l Layout, name string, replicas int, extra map[string]string) ([]*Daemon, error) {
	chronos, err := WriteChronos(e.Dir, e.MongoURI, l)
	if err != nil {
		return nil, err
	}
	env := map[string]string{
		"REDIS_URL":            e.RedisURL,
		"REDIS_KEY_PREFIX":     KeyPrefix,
		"CHRONOS_CONFIG":       chronos,
		"PERSISTER_LOG_FORMAT": "text",
	}
	maps.Copy(env, e.DaemonEnv)
	maps.Copy(env, extra)
	var ds []*Daemon
	for i := range replicas {
		d, err := StartDaemon(e.Bin, e.Dir, fmt.Sprintf("%s-%d", name, i+1), env)
		if err != nil {
			StopAll(ds)
			return nil, err
		}
		ds = append(ds, d)
	}
	return ds, nil
}

// StopAll stops daemons with SIGTERM and returns the first error.
func StopAll(ds []*Daemon) error {
	var errs []error
	for _, d := range ds {
		errs = append(errs, d.Stop(30*time.Second))
	}
	return errors.Join(errs...)
}

// Drain loads a backlog of n entries spread over the layout, starts
// replicas daemons and waits until every entry is stored and acknowledged.
// With keep the daemons are returned running; otherwise they are stopped.
func (e *Env) Drain(ctx context.Context, name string, l Layout, n, replicas int, keep bool, during func(ctx context.Context, ds []*Daemon)) (DrainResult, []*Daemon, error) {
	res := DrainResult{Name: name, Layout: l, Entries: n, Replicas: replicas}
	var err error
	if res.LoadRate, err = e.Prepare(ctx, l, n); err != nil {
		return res, nil, err
	}
	e.Log.Info("backlog loaded", "stage", name, "entries", n, "streams", l.Streams(), "xadd_per_s", int(res.LoadRate))
	srv0 := e.serverCPU()
	start := time.Now()
	ds, err := e.StartDaemons(l, name, replicas, nil)
	if err != nil {
		return res, nil, err
	}
	pctx, cancelDuring := context.WithCancel(ctx)
	defer cancelDuring()
	duringDone := make(chan struct{})
	go func() {
		defer close(duringDone)
		if during != nil {
			during(pctx, ds)
		}
	}()
	stopDuring := sync.OnceFunc(func() { cancelDuring(); <-duringDone })
	defer stopDuring()
	fail := func(err error) (DrainResult, []*Daemon, error) {
		stopDuring()
		for _, d := range ds {
			d.Kill()
			e.Log.Error("daemon log tail", "daemon", d.Name, "log", d.LogTail())
		}
		return res, nil, err
	}
	if err := e.waitDrained(ctx, name, l, n, ds, start, &res); err != nil {
		return fail(err)
	}
	res.ServerCPU = map[string]time.Duration{}
	for name, c := range e.serverCPU() {
		res.ServerCPU[name] = c - srv0[name]
	}
	for _, d := range ds {
		u, err := ReadUsage(d.Pid())
		if err != nil {
			return fail(err)
		}
		res.CPU += u.CPU
		res.PeakRSS = max(res.PeakRSS, u.PeakRSS)
	}
	for _, d := range ds {
		// The daemon's metrics at the end of the drain (batch sizes, write
		// durations, the adaptive limits), kept in the work dir; read after
		// its CPU and peak RSS, which the scrape would add to.
		if err := d.Fetch(ctx, "/metrics", filepath.Join(e.Dir, d.Name+"-metrics.txt")); err != nil {
			e.Log.Warn("metrics not saved", "daemon", d.Name, "err", err)
		}
	}
	stopDuring()
	stored, err := countStored(ctx, e.Mongo, l)
	if err != nil {
		return fail(err)
	}
	if stored != int64(n) {
		return fail(fmt.Errorf("%s: %d documents stored, want %d", name, stored, n))
	}
	e.Log.Info("drained", "stage", name, "entries", n, "seconds", res.Elapsed.Seconds(), "per_s", int(res.Rate()),
		"cpu_us_per_entry", res.CPUPerEntry().Microseconds(), "peak_rss_mb", res.PeakRSS>>20)
	if keep {
		return res, ds, nil
	}
	return res, nil, StopAll(ds)
}

// waitDrained polls Redis until every entry of the layout's streams is
// acknowledged, setting res.FirstAck and res.Elapsed; it fails when a
// daemon exits or ctx ends.
func (e *Env) waitDrained(ctx context.Context, name string, l Layout, n int, ds []*Daemon, start time.Time, res *DrainResult) error {
	w := newAckWatcher(e.RDB, l.StreamKeys())
	last := time.Now()
	for {
		acked, done, err := w.poll(ctx)
		if err != nil {
			return err
		}
		if acked > 0 && res.FirstAck == 0 {
			res.FirstAck = time.Since(start)
		}
		if done {
			res.Elapsed = time.Since(start)
			return nil
		}
		for _, d := range ds {
			if exited, err := d.Exited(); exited {
				return fmt.Errorf("%s exited during the drain: %v", d.Name, err)
			}
		}
		if time.Since(last) > 10*time.Second {
			last = time.Now()
			e.Log.Info("draining", "stage", name, "acked", acked, "of", n, "elapsed", time.Since(start).Round(time.Second).String())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// countStored counts the messages documents of the layout's databases with
// collStats (FerretDB answers it from SQLite's own count in a fraction of a
// second; a counting query scans every document, about a minute per 200k
// here), falling back to CountDocuments where collStats is refused.
func countStored(ctx context.Context, mc *mongo.Client, l Layout) (int64, error) {
	var total int64
	for _, t := range l.TenantIDs() {
		db := mc.Database(DBName(t))
		var st struct {
			Count int64 `bson:"count"`
		}
		if err := db.RunCommand(ctx, bson.D{{Key: "collStats", Value: config.CollMessages}}).Decode(&st); err == nil {
			total += st.Count
			continue
		}
		n, err := db.Collection(config.CollMessages).CountDocuments(ctx, bson.D{})
		if err != nil {
			return 0, fmt.Errorf("count %s: %w", DBName(t), err)
		}
		total += n
	}
	return total, nil
}

// ackWatcher follows the persister group on a set of streams through
// XINFO GROUPS: acknowledged = entries read by the group minus pending.
type ackWatcher struct {
	rdb   redis.UniversalClient
	keys  []string
	acked map[string]int64
	done  map[string]bool
}

func newAckWatcher(rdb redis.UniversalClient, keys []string) *ackWatcher {
	return &ackWatcher{rdb: rdb, keys: keys, acked: map[string]int64{}, done: map[string]bool{}}
}

// poll returns the entries acknowledged so far and whether every stream is
// fully acknowledged (pending 0 and lag 0). Finished streams are not asked
// again.
func (w *ackWatcher) poll(ctx context.Context) (int64, bool, error) {
	var open []string
	for _, k := range w.keys {
		if !w.done[k] {
			open = append(open, k)
		}
	}
	cmds := make([]*redis.XInfoGroupsCmd, len(open))
	_, err := w.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range open {
			cmds[i] = p.XInfoGroups(ctx, k)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, false, fmt.Errorf("xinfo groups: %w", err)
	}
	for i, k := range open {
		groups, err := cmds[i].Result()
		if err != nil {
			return 0, false, fmt.Errorf("xinfo groups %s: %w", k, err)
		}
		for _, g := range groups {
			if g.Name != Group {
				continue
			}
			w.acked[k] = g.EntriesRead - g.Pending
			if g.Pending == 0 && g.Lag == 0 && g.EntriesRead > 0 {
				w.done[k] = true
			}
		}
	}
	var total int64
	for _, n := range w.acked {
		total += n
	}
	return total, len(w.done) == len(w.keys), nil
}
