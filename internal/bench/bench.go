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
	StageBaseline = "baseline"
	StageDrain    = "drain"
	StageLatency  = "latency"
	// StageMemory drains a MemoryEntries backlog (1M by default) for the
	// peak RSS target.
	StageMemory = "memory"
	// StageStreams drains with 1 stream and with 1000 streams.
	StageStreams = "streams"
	// StageReplicas drains with 1 and with 2 replicas.
	StageReplicas = "replicas"
	// StageScale is the old name of streams + replicas.
	StageScale = "scale"
)

// AllStages lists every stage.
var AllStages = []string{StageBaseline, StageDrain, StageLatency, StageMemory, StageStreams, StageReplicas, StageCluster}

// DefaultStages are the stages of a plain run (the cluster stage is opt-in).
var DefaultStages = []string{StageBaseline, StageDrain, StageLatency, StageMemory, StageStreams, StageReplicas}

// The layouts of the drains.
var (
	// Mixed is the main drain: tenants, namespaces and topics.
	Mixed = Layout{Name: "mixed", Tenants: 4, Namespaces: 2, Topics: 5}
	// OneStream is a single topic of a single tenant.
	OneStream = Layout{Name: "1-stream", Tenants: 1, Namespaces: 1, Topics: 1}
	// ThousandStreams is 50 tenants × 20 topics.
	ThousandStreams = Layout{Name: "1000-streams", Tenants: 50, Namespaces: 1, Topics: 20}
)

// Config is one benchmark run.
type Config struct {
	// Entries is the backlog of the main drain (and of the cluster drains).
	Entries int
	// MemoryEntries is the backlog of the memory stage.
	MemoryEntries int
	// ScaleEntries is the backlog of the sink baseline and of the streams
	// and replicas stages (rates: they need less than the main drain).
	ScaleEntries int
	// PayloadBytes is the size of each entry's JSON payload.
	PayloadBytes int
	// Batch, Inflight and Writers are the daemons' PERSISTER_BATCH_SIZE,
	// PERSISTER_INFLIGHT_BATCHES and PERSISTER_MAX_CONCURRENT_WRITES; the
	// baseline writes batches of Batch with Writers in flight.
	Batch, Inflight, Writers int
	// LatencyRate is the steady producer rate; 0 means half the drain rate.
	LatencyRate float64
	// LatencyDuration is how long the steady producer runs.
	LatencyDuration time.Duration
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

func (c *Config) defaults() {
	if c.Entries <= 0 {
		c.Entries = 200000
	}
	if c.MemoryEntries <= 0 {
		c.MemoryEntries = 1000000
	}
	if c.ScaleEntries <= 0 {
		c.ScaleEntries = 50000
	}
	if c.PayloadBytes <= 0 {
		c.PayloadBytes = 1024
	}
	if c.Batch <= 0 {
		c.Batch = 500
	}
	if c.Inflight <= 0 {
		c.Inflight = 2
	}
	if c.Writers <= 0 {
		c.Writers = 4
	}
	if c.LatencyDuration <= 0 {
		c.LatencyDuration = 30 * time.Second
	}
	if c.ProfileSeconds <= 0 {
		c.ProfileSeconds = 20
	}
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

// Run runs the benchmark and returns its report. Progress goes to log.
func Run(ctx context.Context, cfg Config, log *slog.Logger) (*Report, error) {
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	began := time.Now()
	dir := cfg.WorkDir
	if dir == "" {
		d, err := os.MkdirTemp("", "persister-bench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	rep := &Report{Config: cfg}
	env := &Env{Dir: dir, PayloadBytes: cfg.PayloadBytes, Log: log, DaemonEnv: map[string]string{}, RedisURL: cfg.RedisURL, MongoURI: cfg.MongoURI}
	for k, v := range cfg.DaemonEnv {
		env.DaemonEnv[k] = v
	}
	env.DaemonEnv["PERSISTER_BATCH_SIZE"] = strconv.Itoa(cfg.Batch)
	env.DaemonEnv["PERSISTER_INFLIGHT_BATCHES"] = strconv.Itoa(cfg.Inflight)
	env.DaemonEnv["PERSISTER_MAX_CONCURRENT_WRITES"] = strconv.Itoa(cfg.Writers)
	if cfg.ProfileDir != "" {
		env.DaemonEnv["PERSISTER_PPROF"] = "true"
		if err := os.MkdirAll(cfg.ProfileDir, 0o755); err != nil {
			return nil, err
		}
	}

	if cfg.RedisURL == "" {
		log.Info("starting redis-server and FerretDB", "dir", dir)
		rs, err := testenv.LaunchRedis(dir)
		if err != nil {
			return nil, err
		}
		defer rs.Stop()
		fs, err := testenv.LaunchFerretDB(dir, "warn")
		if err != nil {
			return nil, err
		}
		defer fs.Stop()
		env.RedisURL, env.MongoURI = rs.URL, fs.URL
		env.ServerPids = map[string]int{"FerretDB": fs.Pid(), "redis-server": rs.Pid()}
		rep.Servers = "fresh redis-server and FerretDB (bin/ferretdb, SQLite backend) on loopback, started by the benchmark"
	} else {
		rep.Servers = "given servers: " + redactedURL(cfg.RedisURL) + ", " + redactedURL(cfg.MongoURI)
	}
	ropts, err := redis.ParseURL(env.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("redis url: %w", err)
	}
	env.RDB = redis.NewClient(ropts)
	defer env.RDB.Close()
	mc, err := mongo.Connect(ctx, options.Client().ApplyURI(env.MongoURI).SetMaxPoolSize(16))
	if err != nil {
		return nil, fmt.Errorf("mongo connect: %w", err)
	}
	defer func() { _ = mc.Disconnect(context.Background()) }()
	env.Mongo = mc
	rep.Machine = describeMachine(ctx, env)

	if cfg.PersisterBin == "" && slices.ContainsFunc(cfg.Stages, func(s string) bool { return s != StageBaseline }) {
		root, err := testenv.Root()
		if err != nil {
			return nil, err
		}
		log.Info("building the persister binary", "module", root)
		if cfg.PersisterBin, err = BuildPersister(ctx, root, dir); err != nil {
			return nil, err
		}
	}
	env.Bin = cfg.PersisterBin
	defer func() { _ = env.Reset(context.WithoutCancel(ctx)) }()

	if slices.Contains(cfg.Stages, StageBaseline) {
		if err := env.Reset(ctx); err != nil {
			return nil, err
		}
		// The limit: the drain's documents, databases and write concurrency,
		// no client work. InsertMany (the plain driver API) on a quarter
		// of the documents, for reference.
		for _, m := range []struct {
			method string
			n      int
			to     **BaselineResult
		}{{BaselineCommand, cfg.ScaleEntries, &rep.Baseline}, {BaselineInsertMany, max(cfg.ScaleEntries/10, 1), &rep.BaselineInsertMany}} {
			log.Info("sink baseline", "method", m.method, "docs", m.n, "batch", cfg.Batch, "writers", cfg.Writers)
			b, err := Baseline(ctx, mc, Mixed, m.n, cfg.PayloadBytes, cfg.Batch, cfg.Writers, m.method)
			if err != nil {
				return nil, err
			}
			*m.to = &b
			log.Info("sink baseline done", "method", m.method, "docs_per_s", int(b.Rate()), "doc_bytes", b.DocBytes)
		}
	}

	var running []*Daemon
	defer func() { StopAll(running) }()
	if slices.Contains(cfg.Stages, StageDrain) {
		keep := slices.Contains(cfg.Stages, StageLatency)
		var during func(context.Context, []*Daemon)
		if cfg.ProfileDir != "" {
			during = func(ctx context.Context, ds []*Daemon) { profile(ctx, log, ds[0], cfg.ProfileDir, cfg.ProfileSeconds) }
		}
		d, ds, err := env.Drain(ctx, "drain", Mixed, cfg.Entries, 1, keep, during)
		if err != nil {
			return nil, err
		}
		running = ds
		rep.Drain = &d
	}
	if slices.Contains(cfg.Stages, StageLatency) {
		if running == nil {
			// The streams must exist and be consumed before the clock
			// starts (discovery runs every 10s): drain a few entries each.
			if _, running, err = env.Drain(ctx, "latency-warmup", Mixed, 10*Mixed.Streams(), 1, true, nil); err != nil {
				return nil, err
			}
		}
		rate := cfg.LatencyRate
		if rate <= 0 {
			rate = rep.Drain.Rate() / 2
		}
		log.Info("steady latency", "rate", int(rate), "duration", cfg.LatencyDuration.String(), "probes_per_s", cfg.ProbeRate)
		var profDone chan struct{}
		if cfg.ProfileDir != "" {
			profDone = make(chan struct{})
			go func() {
				defer close(profDone)
				secs := strconv.Itoa(max(1, int(cfg.LatencyDuration.Seconds())-1))
				if err := running[0].Fetch(ctx, "/debug/pprof/profile?seconds="+secs, filepath.Join(cfg.ProfileDir, "latency-cpu.pprof")); err != nil {
					log.Warn("latency cpu profile", "err", err)
				}
			}()
		}
		l, err := env.Latency(ctx, Mixed, running, rate, cfg.LatencyDuration, cfg.ProbeRate, cfg.Entries)
		if profDone != nil {
			<-profDone
			if err := running[0].Fetch(ctx, "/metrics", filepath.Join(cfg.ProfileDir, "latency-metrics.txt")); err != nil {
				log.Warn("latency metrics", "err", err)
			}
		}
		if err != nil {
			return nil, err
		}
		rep.Latency = &l
		log.Info("steady latency done", "entries", l.Entries, "probes", len(l.Visible),
			"p50_ms", ms(l.Quantile(.5)), "p99_ms", ms(l.Quantile(.99)), "max_ms", ms(l.Quantile(1)))
		// The same at half that rate, for the shape of the curve.
		low, err := env.Latency(ctx, Mixed, running, rate/2, cfg.LatencyDuration/3, 0, cfg.Entries+l.Entries+1000)
		if err != nil {
			return nil, err
		}
		rep.LatencyLow = &low
		log.Info("steady latency at half the rate done", "entries", low.Entries,
			"p50_ms", ms(low.Quantile(.5)), "p99_ms", ms(low.Quantile(.99)), "max_ms", ms(low.Quantile(1)))
	}
	if err := StopAll(running); err != nil {
		log.Warn("daemon stop", "err", err)
	}
	running = nil

	if slices.Contains(cfg.Stages, StageReplicas) {
		// What two replicas send the sink: twice the writes in flight.
		if err := env.Reset(ctx); err != nil {
			return nil, err
		}
		log.Info("sink baseline, two replicas' writes", "docs", cfg.ScaleEntries, "writers", 2*cfg.Writers)
		b, err := Baseline(ctx, mc, Mixed, cfg.ScaleEntries, cfg.PayloadBytes, cfg.Batch, 2*cfg.Writers, BaselineCommand)
		if err != nil {
			return nil, err
		}
		rep.BaselineDouble = &b
		log.Info("sink baseline done", "writers", 2*cfg.Writers, "docs_per_s", int(b.Rate()))
	}
	for _, s := range []struct {
		stage, name string
		l           Layout
		n, replicas int
	}{
		{StageMemory, "1M-backlog", Mixed, cfg.MemoryEntries, 1},
		{StageStreams, "1-stream", OneStream, cfg.ScaleEntries, 1},
		{StageStreams, "1000-streams", ThousandStreams, cfg.ScaleEntries, 1},
		{StageReplicas, "1-replica", Mixed, cfg.ScaleEntries, 1},
		{StageReplicas, "2-replicas", Mixed, cfg.ScaleEntries, 2},
	} {
		if !slices.Contains(cfg.Stages, s.stage) {
			continue
		}
		var during func(context.Context, []*Daemon)
		if cfg.ProfileDir != "" {
			dir := filepath.Join(cfg.ProfileDir, s.name)
			during = func(ctx context.Context, ds []*Daemon) { profile(ctx, log, ds[0], dir, cfg.ProfileSeconds) }
		}
		d, _, err := env.Drain(ctx, s.name, s.l, s.n, s.replicas, false, during)
		if err != nil {
			return nil, err
		}
		rep.Scale = append(rep.Scale, d)
	}
	if slices.Contains(cfg.Stages, StageCluster) {
		ds, notes, err := env.ClusterStage(ctx, cfg.Entries)
		if err != nil {
			return nil, err
		}
		rep.Scale = append(rep.Scale, ds...)
		rep.Notes = append(rep.Notes, notes...)
	}
	rep.Wall = time.Since(began)
	return rep, nil
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
