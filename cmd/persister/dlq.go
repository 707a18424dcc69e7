package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/chronow/persister/internal/publisher"
	"github.com/chronow/persister/internal/requeue"
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

// requeueOptions are the dlq requeue command's flags, checked.
type requeueOptions struct {
	filter requeue.Filter
	tenant string
	maxLen int64
	dryRun bool
	format string
}

func runDLQ(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "requeue" {
		return dlqSubcommand(args, stderr)
	}
	o, err := parseRequeueFlags(args[1:], stderr)
	if err != nil {
		return err
	}
	cfg, err := loadToolConfig(ctx, o.tenant)
	if err != nil {
		return err
	}
	if o.tenant == "" {
		if ts := cfg.Chronos.Tenants(); len(ts) == 1 {
			o.tenant = ts[0].TenantID
		} else {
			return usagef("--tenant is required: %d tenants are configured", len(ts))
		}
	}
	rdb, w, closeStores, err := openStores(ctx, cfg, 2, "chronow-persister-requeue")
	if err != nil {
		return err
	}
	defer closeStores()
	db, err := w.Database(o.tenant)
	if err != nil {
		return err
	}
	q := requeue.New(rdb, db, requeue.Config{Layout: cfg.Layout(), Tenant: o.tenant, MaxLen: o.maxLen})
	rep, err := q.Run(ctx, o.filter, o.dryRun)
	var werr error
	if o.format == "json" {
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

// dlqSubcommand answers a dlq command line without the requeue subcommand:
// usage for help, a usage error otherwise.
func dlqSubcommand(args []string, stderr io.Writer) error {
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

// parseRequeueFlags parses and checks the dlq requeue command's flags.
func parseRequeueFlags(args []string, stderr io.Writer) (requeueOptions, error) {
	fs := newToolFlags("dlq requeue", dlqUsage, stderr)
	var (
		o     requeueOptions
		since = fs.String("since", "", "only dead letters with failedAt at or after this RFC 3339 time")
		until = fs.String("until", "", "only dead letters with failedAt before this RFC 3339 time")
	)
	fs.StringVar(&o.tenant, "tenant", "", "the tenant (required when more than one is configured)")
	fs.StringVar(&o.filter.Namespace, "namespace", "", "only dead letters of this namespace")
	fs.StringVar(&o.filter.Topic, "topic", "", "only dead letters of this topic")
	fs.StringVar(&o.filter.Reason, "reason", "", "only dead letters whose reason contains this text")
	fs.IntVar(&o.filter.Limit, "limit", 0, "requeue at most this many (0: all)")
	fs.Int64Var(&o.maxLen, "maxlen", publisher.DefaultMaxLen, "trim the topic stream like Chronow: MAXLEN ~ this (Chronow's REDIS_MAX_STREAM_LEN; 0: no trimming)")
	fs.BoolVar(&o.dryRun, "dry-run", false, "only list what would be requeued")
	fs.StringVar(&o.format, "format", "text", "report format: text or json")
	if err := parseToolFlags(fs, args); err != nil {
		return o, err
	}
	var err error
	if o.filter.Since, err = parseTimeFlag("--since", *since); err != nil {
		return o, err
	}
	if o.filter.Until, err = parseTimeFlag("--until", *until); err != nil {
		return o, err
	}
	switch {
	case !o.filter.Since.IsZero() && !o.filter.Until.IsZero() && !o.filter.Since.Before(o.filter.Until):
		return o, usagef("--since %s is not before --until %s", *since, *until)
	case o.filter.Limit < 0:
		return o, usagef("--limit %d: must be >= 0", o.filter.Limit)
	case o.maxLen < 0:
		return o, usagef("--maxlen %d: must be >= 0", o.maxLen)
	}
	return o, checkFormat(o.format)
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
