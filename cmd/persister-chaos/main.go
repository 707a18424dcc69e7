// Command persister-chaos runs the randomized chaos soak (internal/chaos):
// replicas of the real persister against redis-server and FerretDB, a
// producer with a ledger, a seeded nemesis overlapping faults, then a quiet
// period and a checker. It needs redis-server and bin/ferretdb (`make redis
// ferretdb`).
//
//	go run ./cmd/persister-chaos [-seed N] [-duration 10m] [-replicas 3] [-dir DIR]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/chronow/persister/internal/chaos"
	"github.com/chronow/persister/internal/cli"
)

func main() { cli.Main(run) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cfg chaos.Config
	fs := flag.NewFlagSet("persister-chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Int64Var(&cfg.Seed, "seed", 0, "seed of the fault schedule and the workload (0: from the clock)")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Minute, "length of the fault period")
	fs.IntVar(&cfg.Replicas, "replicas", 3, "persister replicas")
	fs.IntVar(&cfg.Rate, "rate", 100, "topic entries written per second")
	fs.DurationVar(&cfg.Settle, "settle", 3*time.Minute, "longest quiet period allowed for the replicas to store everything")
	fs.StringVar(&cfg.Dir, "dir", "", "output directory: history.log, schedule.json, summary.json, logs and server data (default: a new temp dir, kept)")
	fs.StringVar(&cfg.Bin, "persister-bin", "", "persister binary (default: go build ./cmd/persister)")
	if code, ok := cli.Parse(fs, args, stderr); !ok {
		return code
	}
	if cfg.Duration <= 0 || cfg.Replicas <= 0 || cfg.Rate <= 0 {
		fmt.Fprintln(stderr, "persister-chaos: -duration, -replicas and -rate must be positive")
		return 2
	}
	if cfg.Seed == 0 {
		cfg.Seed = time.Now().UnixNano() % 1_000_000
	}
	if cfg.Dir == "" {
		d, err := os.MkdirTemp("", fmt.Sprintf("persister-chaos-%d-", cfg.Seed))
		if err != nil {
			fmt.Fprintln(stderr, "persister-chaos:", err)
			return 1
		}
		cfg.Dir = d
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	log.Info("chaos soak", "seed", cfg.Seed, "duration", cfg.Duration, "replicas", cfg.Replicas, "dir", cfg.Dir)
	res, err := chaos.Run(ctx, cfg, log)
	if err != nil {
		fmt.Fprintf(stderr, "persister-chaos: seed %d: %v\n", cfg.Seed, err)
		return 1
	}
	fmt.Fprintln(stdout, res.Line())
	fmt.Fprintf(stdout, "history, schedule and summary: %s\n", res.Dir)
	if len(res.Failures) > 0 {
		for _, f := range res.Failures {
			fmt.Fprintln(stdout, "FAIL:", f)
		}
		fmt.Fprintf(stdout, "seed %d failed; replay its schedule with:\n  %s\n", res.Seed, res.Repro())
		return 1
	}
	fmt.Fprintln(stdout, "PASS")
	return 0
}
