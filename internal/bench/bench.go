// Package bench measures the persister against the physical limit of its
// sink, in one run: the raw bulk-insert rate of the Mongo-compatible server,
// the drain rate of the real daemon binary over a backlog, XADD-to-visible
// latency under steady load, the daemon's CPU and memory, and how the drain
// scales with streams and replicas. cmd/persister-bench is its command.
package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/chronow/persister/internal/testenv"
)

// Stages of a run, in order.
const (
	// StageBaseline measures the sink alone at SweepWriters writes in
	// flight for every layout of Variants; the best is the limit.
	StageBaseline = "baseline"
	StageDrain    = "drain"
	StageLatency  = "latency"
	// StageShapes drains the other layouts of Variants (2 tenants, many
	// small fields).
	StageShapes = "shapes"
	// StageMemory drains a MemoryEntries backlog (1M by default) for the
	// peak RSS target.
	StageMemory = "memory"
	// StageStreams drains with 1 stream and with 1000 streams.
	StageStreams = "streams"
	// StageReplicas drains with 1 and with 2 replicas.
	StageReplicas = "replicas"
	// StageTrace drains while the Mongo-compatible server is stopped
	// (SIGSTOP) for a few seconds, and records the adaptive write limit.
	StageTrace = "trace"
	// StageScale is the old name of streams + replicas.
	StageScale = "scale"
)

// AllStages lists every stage.
var AllStages = []string{StageBaseline, StageDrain, StageLatency, StageShapes, StageMemory, StageStreams, StageReplicas, StageTrace, StageCluster}

// DefaultStages are the stages of a plain run (the cluster stage is opt-in).
var DefaultStages = []string{StageBaseline, StageDrain, StageLatency, StageShapes, StageMemory, StageStreams, StageReplicas, StageTrace}

// SweepWriters are the writes in flight the sink baseline tries.
var SweepWriters = []int{1, 2, 4, 8}

// The layouts of the drains.
var (
	// Mixed is the main drain: tenants, namespaces and topics.
	Mixed = Layout{Name: "mixed", Tenants: 4, Namespaces: 2, Topics: 5}
	// TwoTenants is the main drain's streams over 2 tenants.
	TwoTenants = Layout{Name: "2-tenants", Tenants: 2, Namespaces: 2, Topics: 5}
	// OneStream is a single topic of a single tenant.
	OneStream = Layout{Name: "1-stream", Tenants: 1, Namespaces: 1, Topics: 1}
	// ThousandStreams is 50 tenants × 20 topics.
	ThousandStreams = Layout{Name: "1000-streams", Tenants: 50, Namespaces: 1, Topics: 20}
	// Variants are the layouts and payload shapes the sink is swept for
	// and drained with: 4 and 2 tenants, few large and many small fields.
	// The first is the main drain's.
	Variants = []Layout{Mixed, TwoTenants, Mixed.WithShape(ShapeSmall), TwoTenants.WithShape(ShapeSmall)}
)

// Config is one benchmark run.
type Config struct {
	// Entries is the backlog of the main drain (and of the cluster drains).
	Entries int
	// MemoryEntries is the backlog of the memory stage.
	MemoryEntries int
	// ScaleEntries is the backlog of the streams and replicas stages
	// (rates: they need less than the main drain).
	ScaleEntries int
	// SweepEntries is the documents of each run of the sink sweep
	// (default 20000; each number of writes in flight runs SweepRepeats
	// times).
	SweepEntries int
	// PayloadBytes is the size of each entry's JSON payload.
	PayloadBytes int
	// Batch, Inflight and Writers are the daemons' PERSISTER_BATCH_SIZE,
	// PERSISTER_INFLIGHT_BATCHES and PERSISTER_MAX_CONCURRENT_WRITES; the
	// baseline writes batches of Batch.
	Batch, Inflight, Writers int
	// TraceStopAfter is when, after the trace drain's start, the server is
	// stopped, and TraceStopFor for how long (defaults 5s and 4s).
	TraceStopAfter, TraceStopFor time.Duration
	// LatencyRate is the steady producer rate; 0 means half the drain rate.
	LatencyRate float64
	// LatencyDuration is how long the steady producer runs.
	LatencyDuration time.Duration
	// LatencyWarmup is how long the steady producer runs at the same rate
	// before the measured LatencyDuration (default 30s; measured, reported
	// apart, not in the target): right after the 200k-entry drain FerretDB
	// writes several times more slowly per document for about 20 s, which
	// is the server recovering from the drain, not a steady load.
	LatencyWarmup time.Duration
	// ProbeRate is how many entries per second are also looked up by _id
	// until found; 0 (the default) turns probes off. Use it against a real
	// MongoDB: FerretDB's SQLite backend answers a find by _id with a full
	// scan (about a second per miss on 5k documents), which measures the
	// probe, not the daemon.
	ProbeRate float64
	// Stages to run (AllStages when empty).
	Stages []string
	// RedisURL and MongoURI point at existing servers; empty starts fresh
	// ones (redis-server, bin/ferretdb) in WorkDir.
	RedisURL, MongoURI string
	// PersisterBin is the daemon binary; empty builds ./cmd/persister.
	PersisterBin string
	// WorkDir holds configs, logs and server data; empty means a temp dir.
	WorkDir string
	// ProfileDir, when set, enables the daemon's pprof endpoints and saves
	// a CPU profile and a heap profile of the main drain there.
	ProfileDir string
	// ProfileSeconds is the length of the CPU profile (default 20s).
	ProfileSeconds int
	// DaemonEnv is added to the daemons' environment.
	DaemonEnv map[string]string
}

// positiveOr sets *v to d unless *v is positive.
func positiveOr[T int | time.Duration](v *T, d T) {
	if *v <= 0 {
		*v = d
	}
}

func (c *Config) defaults() {
	positiveOr(&c.Entries, 200000)
	positiveOr(&c.MemoryEntries, 1000000)
	positiveOr(&c.ScaleEntries, 50000)
	positiveOr(&c.SweepEntries, 20000)
	positiveOr(&c.PayloadBytes, 1024)
	positiveOr(&c.Batch, 500)
	positiveOr(&c.Inflight, 2)
	positiveOr(&c.Writers, 4)
	positiveOr(&c.LatencyDuration, 30*time.Second)
	positiveOr(&c.LatencyWarmup, 30*time.Second)
	positiveOr(&c.ProfileSeconds, 20)
	positiveOr(&c.TraceStopAfter, 5*time.Second)
	positiveOr(&c.TraceStopFor, 4*time.Second)
	if len(c.Stages) == 0 {
		c.Stages = DefaultStages
	}
	if i := slices.Index(c.Stages, StageScale); i >= 0 {
		c.Stages = slices.Concat(c.Stages[:i], []string{StageStreams, StageReplicas}, c.Stages[i+1:])
	}
}

// Validate checks the stage names and the combination.
func (c Config) Validate() error {
	for _, s := range c.Stages {
		if !slices.Contains(AllStages, s) && s != StageScale {
			return fmt.Errorf("unknown stage %q (want some of %v)", s, AllStages)
		}
	}
	if slices.Contains(c.Stages, StageLatency) && !slices.Contains(c.Stages, StageDrain) && c.LatencyRate <= 0 {
		return errors.New("the latency stage without the drain stage needs an explicit latency rate")
	}
	if (c.RedisURL == "") != (c.MongoURI == "") {
		return errors.New("give both --redis-url and --mongo-uri, or neither")
	}
	return nil
}

// runner is one run's state, shared by its stages.
type runner struct {
	cfg Config
	env *Env
	rep *Report
	log *slog.Logger
	// running are the daemons the drain stage leaves for the latency one.
	running []*Daemon
}

// Run runs the benchmark and returns its report. Progress goes to log.
func Run(ctx context.Context, cfg Config, log *slog.Logger) (*Report, error) {
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	began := time.Now()
	r := &runner{cfg: cfg, rep: &Report{Config: cfg}, log: log}
	cleanup, err := r.setup(ctx)
	defer cleanup()
	if err != nil {
		return nil, err
	}
	defer func() { StopAll(r.running) }()
	for _, st := range []struct {
		name string
		run  func(context.Context) error
	}{
		{StageBaseline, r.baselineStage},
		{StageDrain, r.drainStage},
		{StageLatency, r.latencyStage},
		{"", r.stopRunning},
		{StageShapes, r.shapesStage},
		{StageMemory, func(ctx context.Context) error { return r.scaleDrain(ctx, "1M-backlog", Mixed, cfg.MemoryEntries, 1) }},
		{StageStreams, r.streamsStage},
		{StageReplicas, r.replicasStage},
		{StageTrace, r.traceStage},
		{StageCluster, r.clusterStage},
	} {
		if st.name != "" && !slices.Contains(cfg.Stages, st.name) {
			continue
		}
		if err := st.run(ctx); err != nil {
			return nil, err
		}
	}
	r.rep.Wall = time.Since(began)
	return r.rep, nil
}

// setup makes the work dir, starts or connects to the servers and builds
// the daemon. The returned cleanup undoes what was done, also on error.
func (r *runner) setup(ctx context.Context) (func(), error) {
	var undo []func()
	cleanup := func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	cfg := r.cfg
	dir := cfg.WorkDir
	if dir == "" {
		d, err := os.MkdirTemp("", "persister-bench-")
		if err != nil {
			return cleanup, err
		}
		undo = append(undo, func() { os.RemoveAll(d) })
		dir = d
	}
	env := &Env{Dir: dir, PayloadBytes: cfg.PayloadBytes, Log: r.log, DaemonEnv: map[string]string{}, RedisURL: cfg.RedisURL, MongoURI: cfg.MongoURI}
	r.env = env
	maps.Copy(env.DaemonEnv, cfg.DaemonEnv)
	env.DaemonEnv["PERSISTER_BATCH_SIZE"] = strconv.Itoa(cfg.Batch)
	env.DaemonEnv["PERSISTER_INFLIGHT_BATCHES"] = strconv.Itoa(cfg.Inflight)
	env.DaemonEnv["PERSISTER_MAX_CONCURRENT_WRITES"] = strconv.Itoa(cfg.Writers)
	if cfg.ProfileDir != "" {
		env.DaemonEnv["PERSISTER_PPROF"] = "true"
		if err := os.MkdirAll(cfg.ProfileDir, 0o755); err != nil {
			return cleanup, err
		}
	}
	if cfg.RedisURL == "" {
		r.log.Info("starting redis-server and FerretDB", "dir", dir)
		rs, err := testenv.LaunchRedis(dir)
		if err != nil {
			return cleanup, err
		}
		undo = append(undo, func() { _ = rs.Stop() })
		fs, err := testenv.LaunchFerretDB(dir, "warn")
		if err != nil {
			return cleanup, err
		}
		undo = append(undo, func() { _ = fs.Stop() })
		env.RedisURL, env.MongoURI = rs.URL, fs.URL
		env.ServerPids = map[string]int{ServerMongo: fs.Pid(), ServerRedis: rs.Pid()}
		r.rep.Servers = "fresh redis-server and FerretDB (bin/ferretdb, SQLite backend) on loopback, started by the benchmark"
	} else {
		r.rep.Servers = "given servers: " + redactedURL(cfg.RedisURL) + ", " + redactedURL(cfg.MongoURI)
	}
	if err := r.connect(ctx, &undo); err != nil {
		return cleanup, err
	}
	r.rep.Machine = describeMachine(ctx, env)
	if cfg.PersisterBin == "" && slices.ContainsFunc(cfg.Stages, func(s string) bool { return s != StageBaseline }) {
		root, err := testenv.Root()
		if err != nil {
			return cleanup, err
		}
		r.log.Info("building the persister binary", "module", root)
		if r.cfg.PersisterBin, err = testenv.BuildPersister(ctx, root, dir); err != nil {
			return cleanup, err
		}
	}
	env.Bin = r.cfg.PersisterBin
	undo = append(undo, func() { _ = env.Reset(context.WithoutCancel(ctx)) })
	return cleanup, nil
}

// Names of the started servers (Env.ServerPids).
const (
	ServerMongo = "FerretDB"
	ServerRedis = "redis-server"
)

// connect makes the benchmark's own Redis and MongoDB clients.
func (r *runner) connect(ctx context.Context, undo *[]func()) error {
	ropts, err := redis.ParseURL(r.env.RedisURL)
	if err != nil {
		return fmt.Errorf("redis url: %w", err)
	}
	r.env.RDB = redis.NewClient(ropts)
	*undo = append(*undo, func() { r.env.RDB.Close() })
	mc, err := mongo.Connect(ctx, options.Client().ApplyURI(r.env.MongoURI).SetMaxPoolSize(16))
	if err != nil {
		return fmt.Errorf("mongo connect: %w", err)
	}
	*undo = append(*undo, func() { _ = mc.Disconnect(context.Background()) })
	r.env.Mongo = mc
	return nil
}

// baselineStage sweeps the sink's writes in flight for every variant, then
// runs the two best of each sweep again at the size of the layout's drain
// (when it is larger and that drain is a stage): the best of those is the
// sink's limit each drain is compared with. InsertMany is measured at the
// main layout's best writes in flight for reference.
func (r *runner) baselineStage(ctx context.Context) error {
	for i, l := range Variants {
		if err := r.env.Reset(ctx); err != nil {
			return err
		}
		n := r.cfg.SweepEntries
		r.log.Info("sink sweep", "layout", l.Name, "docs", n, "batch", r.cfg.Batch, "writers", SweepWriters, "repeats", SweepRepeats)
		sw, err := SinkSweep(ctx, r.env.Mongo, l, n, r.cfg.PayloadBytes, r.cfg.Batch, SweepWriters, SweepRepeats, r.env.processCPU)
		if err != nil {
			return err
		}
		for _, b := range sw.Results {
			r.log.Info("sink sweep done", "layout", l.Name, "writers", b.Writers, "docs_per_s", int(b.Rate()), "doc_bytes", b.DocBytes)
		}
		stage := StageShapes
		if i == 0 {
			stage = StageDrain
		}
		if full := r.drainSize(l); full > n && slices.Contains(r.cfg.Stages, stage) {
			top := sw.Top(2)
			r.log.Info("sink at the drain's size", "layout", l.Name, "docs", full, "writers", top)
			at, err := SinkSweep(ctx, r.env.Mongo, l, full, r.cfg.PayloadBytes, r.cfg.Batch, top, 1, r.env.processCPU)
			if err != nil {
				return err
			}
			sw.Full = at.Results
			for _, b := range sw.Full {
				r.log.Info("sink at the drain's size done", "layout", l.Name, "writers", b.Writers, "docs_per_s", int(b.Rate()))
			}
		}
		r.rep.Sweeps = append(r.rep.Sweeps, sw)
	}
	best := r.rep.Sweeps[0].Best()
	r.rep.Baseline = &best
	b, err := Baseline(ctx, r.env.Mongo, Mixed, max(r.cfg.SweepEntries/4, 1), r.cfg.PayloadBytes, r.cfg.Batch, r.rep.Sweeps[0].SweepBest().Writers, BaselineInsertMany)
	if err != nil {
		return err
	}
	r.rep.BaselineInsertMany = &b
	return nil
}

// drainSize is how many entries the drain of layout l stores: the main
// backlog for the main layout, half of it for the other variants.
func (r *runner) drainSize(l Layout) int {
	if l.Name == Mixed.Name {
		return r.cfg.Entries
	}
	return max(r.cfg.Entries/2, 1)
}

// drainStage drains the main backlog, leaving the daemon running for the
// latency stage when it runs.
func (r *runner) drainStage(ctx context.Context) error {
	keep := slices.Contains(r.cfg.Stages, StageLatency)
	d, ds, err := r.env.Drain(ctx, "drain", Mixed, r.cfg.Entries, 1, keep, r.profiler(""))
	if err != nil {
		return err
	}
	r.running = ds
	r.rep.Drain = &d
	return nil
}

// profiler returns the during-drain hook that saves profiles in sub (of
// the profile dir), or nil without --profile.
func (r *runner) profiler(sub string) func(context.Context, []*Daemon) {
	if r.cfg.ProfileDir == "" {
		return nil
	}
	dir := filepath.Join(r.cfg.ProfileDir, sub)
	return func(ctx context.Context, ds []*Daemon) { profile(ctx, r.log, ds[0], dir, r.cfg.ProfileSeconds) }
}

func (r *runner) stopRunning(context.Context) error {
	if err := StopAll(r.running); err != nil {
		r.log.Warn("daemon stop", "err", err)
	}
	r.running = nil
	return nil
}

// shapesStage drains the variants other than the main drain's layout,
// half the main backlog each (at 50,000 entries, 8–14 s here, the start
// weighed on the rate: 0.88–0.89 × the sink instead of 0.95 for 200,000).
func (r *runner) shapesStage(ctx context.Context) error {
	for _, l := range Variants[1:] {
		if err := r.scaleDrain(ctx, l.Name, l, r.drainSize(l), 1); err != nil {
			return err
		}
	}
	return nil
}

func (r *runner) streamsStage(ctx context.Context) error {
	if err := r.scaleDrain(ctx, "1-stream", OneStream, r.cfg.ScaleEntries, 1); err != nil {
		return err
	}
	return r.scaleDrain(ctx, "1000-streams", ThousandStreams, r.cfg.ScaleEntries, 1)
}

func (r *runner) replicasStage(ctx context.Context) error {
	if err := r.scaleDrain(ctx, "1-replica", Mixed, r.cfg.ScaleEntries, 1); err != nil {
		return err
	}
	return r.scaleDrain(ctx, "2-replicas", Mixed, r.cfg.ScaleEntries, 2)
}

// scaleDrain drains n entries of the layout with replicas daemons and adds
// the result to the report's drain table.
func (r *runner) scaleDrain(ctx context.Context, name string, l Layout, n, replicas int) error {
	d, _, err := r.env.Drain(ctx, name, l, n, replicas, false, r.profiler(name))
	if err != nil {
		return err
	}
	r.rep.Scale = append(r.rep.Scale, d)
	return nil
}

func (r *runner) clusterStage(ctx context.Context) error {
	ds, notes, err := r.env.ClusterStage(ctx, r.cfg.Entries)
	if err != nil {
		return err
	}
	r.rep.Scale = append(r.rep.Scale, ds...)
	r.rep.Notes = append(r.rep.Notes, notes...)
	return nil
}

// profile saves a CPU profile of the middle of the drain and a heap profile.
func profile(ctx context.Context, log *slog.Logger, d *Daemon, dir string, seconds int) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		log.Warn("profile dir", "err", err)
		return
	}
	select {
	case <-time.After(2 * time.Second):
	case <-ctx.Done():
		return
	}
	if err := d.Fetch(ctx, "/debug/pprof/profile?seconds="+strconv.Itoa(seconds), filepath.Join(dir, "cpu.pprof")); err != nil {
		log.Warn("cpu profile", "err", err)
	}
	if err := d.Fetch(ctx, "/debug/pprof/heap", filepath.Join(dir, "heap.pprof")); err != nil {
		log.Warn("heap profile", "err", err)
	}
	if err := d.Fetch(ctx, "/debug/pprof/allocs", filepath.Join(dir, "allocs.pprof")); err != nil {
		log.Warn("allocs profile", "err", err)
	}
	if err := d.Fetch(ctx, "/metrics", filepath.Join(dir, "metrics.txt")); err != nil {
		log.Warn("metrics", "err", err)
	}
	log.Info("profiles saved", "dir", dir)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// serverVersions asks Redis and the Mongo-compatible server for versions.
func serverVersions(ctx context.Context, e *Env) (redisV, mongoV string) {
	if info, err := e.RDB.InfoMap(ctx, "server").Result(); err == nil {
		redisV = info["Server"]["redis_version"]
	}
	var bi struct {
		Version        string `bson:"version"`
		FerretDBVerion string `bson:"ferretdbVersion"`
	}
	if err := e.Mongo.Database("admin").RunCommand(ctx, bson.D{{Key: "buildInfo", Value: 1}}).Decode(&bi); err == nil {
		mongoV = bi.Version
		if bi.FerretDBVerion != "" {
			mongoV = "FerretDB " + bi.FerretDBVerion + " (wire version " + bi.Version + ")"
		}
	}
	return redisV, mongoV
}
