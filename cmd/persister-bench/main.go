// Command persister-bench measures the persister in one run: the sink's raw
// bulk-insert rate, the drain rate of the real daemon over a backlog, the
// XADD-to-visible latency under steady load, the daemon's CPU and memory,
// the drain with 1 and 1000 streams, with 2 replicas and with 2 tenants and
// many small fields, and the adaptive write limit around a stopped server. By default it
// starts its own fresh redis-server and FerretDB (`make redis ferretdb`).
//
//	go run ./cmd/persister-bench [--entries 200000] [--memory-entries 1000000] [--markdown FILE]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/chronow/persister/internal/bench"
	"github.com/chronow/persister/internal/cli"
)

func main() { cli.Main(run) }

type envFlags map[string]string

func (e envFlags) String() string { return fmt.Sprint(map[string]string(e)) }

func (e envFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return errors.New("want KEY=VALUE")
	}
	e[k] = v
	return nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cfg bench.Config
	var stages, markdown string
	daemonEnv := envFlags{}
	fs := flag.NewFlagSet("persister-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&cfg.Entries, "entries", 200000, "backlog entries of the main drain (and of the cluster drains)")
	fs.IntVar(&cfg.MemoryEntries, "memory-entries", 1000000, "backlog entries of the memory drain (peak RSS)")
	fs.IntVar(&cfg.ScaleEntries, "scale-entries", 50000, "backlog entries of the streams and replicas drains")
	fs.IntVar(&cfg.SweepEntries, "sweep-entries", 20000, "documents of each run of the sink sweep (1, 2, 4 and 8 writes in flight, twice each, per layout)")
	fs.IntVar(&cfg.PayloadBytes, "payload-bytes", 1024, "bytes of each entry's JSON payload")
	fs.IntVar(&cfg.Batch, "batch", 500, "documents per bulk insert (baseline, and PERSISTER_BATCH_SIZE of the daemons)")
	fs.IntVar(&cfg.Inflight, "inflight", 2, "bulk inserts in flight per tenant (PERSISTER_INFLIGHT_BATCHES of the daemons)")
	fs.IntVar(&cfg.Writers, "writers", 4, "most bulk inserts in flight per connection and per database (PERSISTER_MAX_CONCURRENT_WRITES of the daemons; the sink baseline tries 1, 2, 4 and 8)")
	fs.Float64Var(&cfg.LatencyRate, "latency-rate", 0, "steady producer rate in entries/s (0: half the measured drain rate)")
	fs.DurationVar(&cfg.LatencyDuration, "latency-duration", 0, "steady producer duration (default 30s)")
	fs.DurationVar(&cfg.LatencyWarmup, "latency-warmup", 0, "steady producer warm-up at the same rate before the measured load, reported apart (default 30s)")
	fs.Float64Var(&cfg.ProbeRate, "probe-rate", 0, "entries per second also looked up by _id until found during the steady load (0: off; for a real MongoDB, where _id lookups use the index)")
	fs.StringVar(&stages, "stages", strings.Join(bench.DefaultStages, ","),
		"comma-separated stages to run, of "+strings.Join(bench.AllStages, ",")+"; add "+bench.StageCluster+" for the Redis Cluster rows (1/2/3 replicas, about 5 more minutes)")
	fs.StringVar(&cfg.RedisURL, "redis-url", "", "use this Redis instead of starting one (keys "+bench.KeyPrefix+"* are deleted)")
	fs.StringVar(&cfg.MongoURI, "mongo-uri", "", "use this MongoDB instead of starting FerretDB (databases "+bench.DBPrefix+"* are dropped)")
	fs.StringVar(&cfg.PersisterBin, "persister-bin", "", "daemon binary (default: go build ./cmd/persister)")
	fs.StringVar(&cfg.WorkDir, "work-dir", "", "directory for configs, logs and server data (default: a temp dir, removed)")
	fs.StringVar(&cfg.ProfileDir, "profile", "", "save CPU and heap profiles of each drain's (first) daemon in this directory (one sub-directory per drain but the main one)")
	fs.IntVar(&cfg.ProfileSeconds, "profile-seconds", 20, "length of the CPU profile taken with --profile")
	fs.StringVar(&markdown, "markdown", "", "also write the report as markdown to this file")
	fs.Var(daemonEnv, "daemon-env", "KEY=VALUE added to the daemons' environment (repeatable)")
	if code, ok := cli.Parse(fs, args, stderr); !ok {
		return code
	}
	for s := range strings.SplitSeq(stages, ",") {
		if s = strings.TrimSpace(s); s != "" {
			cfg.Stages = append(cfg.Stages, s)
		}
	}
	cfg.DaemonEnv = daemonEnv
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "persister-bench: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	rep, err := bench.Run(ctx, cfg, log)
	if err != nil {
		fmt.Fprintf(stderr, "persister-bench: %v\n", err)
		return 1
	}
	if err := rep.Markdown(stdout); err != nil {
		fmt.Fprintf(stderr, "persister-bench: %v\n", err)
		return 1
	}
	if markdown != "" {
		f, err := os.Create(markdown)
		if err == nil {
			err = errors.Join(rep.Markdown(f), f.Close())
		}
		if err != nil {
			fmt.Fprintf(stderr, "persister-bench: write %s: %v\n", markdown, err)
			return 1
		}
	}
	return 0
}
