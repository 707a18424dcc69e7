package main

import (
	"context"
	"flag"
	"fmt"
	"github.com/chronow/persister/internal/redisconn"
	"io"
	"time"

	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/publisher"
	"github.com/chronow/persister/internal/requeue"
	"github.com/chronow/persister/internal/sink"
)

const dlqUsage = `usage: persister dlq requeue [flags]

Puts dead letters of one tenant (its dead_letters collection) back onto their
topic streams as new Chronow entries (payload, headers, hash, size,
publishedAt), oldest failure first, and marks each document with requeuedAt,
requeuedAs (the new entry id) and requeuedTo (the stream). Documents already
marked are never requeued again. Configuration comes from the same
environment as the daemon.

flags:
`

func runDLQ(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "requeue" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprint(stderr, dlqUsage)
			return nil
		}
		fmt.Fprint(stderr, dlqUsage)
		if len(args) == 0 {
			return usagef("missing subcommand (want: dlq requeue)")
		}
		return usagef("unknown subcommand %q (want: dlq requeue)", args[0])
	}
	fs := flag.NewFlagSet("dlq requeue", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, dlqUsage)
		fs.PrintDefaults()
	}
	var (
		tenant    = fs.String("tenant", "", "the tenant (required when more than one is configured)")
		namespace = fs.String("namespace", "", "only dead letters of this namespace")
		topic     = fs.String("topic", "", "only dead letters of this topic")
		reason    = fs.String("reason", "", "only dead letters whose reason contains this text")
		since     = fs.String("since", "", "only dead letters with failedAt at or after this RFC 3339 time")
		until     = fs.String("until", "", "only dead letters with failedAt before this RFC 3339 time")
		limit     = fs.Int("limit", 0, "requeue at most this many (0: all)")
		maxLen    = fs.Int64("maxlen", publisher.DefaultMaxLen, "trim the topic stream like Chronow: MAXLEN ~ this (Chronow's REDIS_MAX_STREAM_LEN; 0: no trimming)")
		dryRun    = fs.Bool("dry-run", false, "only list what would be requeued")
		format    = fs.String("format", "text", "report format: text or json")
	)
	if err := parseToolFlags(fs, args[1:]); err != nil {
		return err
	}
	f := requeue.Filter{Namespace: *namespace, Topic: *topic, Reason: *reason, Limit: *limit}
	var err error
	if f.Since, err = parseTimeFlag("--since", *since); err != nil {
		return err
	}
	if f.Until, err = parseTimeFlag("--until", *until); err != nil {
		return err
	}
	switch {
	case !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until):
		return usagef("--since %s is not before --until %s", *since, *until)
	case *limit < 0:
		return usagef("--limit %d: must be >= 0", *limit)
	case *maxLen < 0:
		return usagef("--maxlen %d: must be >= 0", *maxLen)
	}
	if err := checkFormat(*format); err != nil {
		return err
	}
	cfg, err := config.Load(ctx)
	if err != nil {
		return err
	}
	if *tenant == "" {
		if ts := cfg.Chronos.Tenants(); len(ts) == 1 {
			*tenant = ts[0].TenantID
		} else {
			return usagef("--tenant is required: %d tenants are configured", len(ts))
		}
	}
	if err := checkTenant(cfg, *tenant); err != nil {
		return err
	}
	rdb, err := redisconn.New(cfg.Redis, 2)
	if err != nil {
		return err
	}
	defer rdb.Close()
	w, err := sink.New(ctx, cfg.Chronos, sink.Options{AppName: "chronow-persister-requeue"})
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		w.Close(cctx)
	}()
	db, err := w.Database(*tenant)
	if err != nil {
		return err
	}
	q := requeue.New(rdb, db, requeue.Config{Layout: cfg.Layout(), Tenant: *tenant, MaxLen: *maxLen})
	rep, err := q.Run(ctx, f, *dryRun)
	var werr error
	if *format == "json" {
		werr = writeJSON(stdout, rep)
	} else {
		werr = rep.WriteText(stdout)
	}
	if err != nil {
		return err
	}
	if werr != nil {
		return werr
	}
	if rep.Skipped > 0 {
		return fmt.Errorf("dlq requeue: %d dead letters skipped (see the report)", rep.Skipped)
	}
	return nil
}

// parseTimeFlag parses an optional RFC 3339 time flag.
func parseTimeFlag(name, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, usagef("%s %q: not an RFC 3339 time (e.g. 2026-11-25T19:00:00Z)", name, v)
	}
	return t, nil
}
