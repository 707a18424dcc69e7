package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/dlq"
	"github.com/chronow/persister/internal/entry"
	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/redisconn"
	"github.com/chronow/persister/internal/replay"
	"github.com/chronow/persister/internal/sink"
	"github.com/chronow/persister/internal/topics"
	"github.com/chronow/persister/metrics"
)

const replayUsage = `usage: persister replay [flags]

Rebuilds the cold tier from what Redis still holds: reads the selected streams
with XRANGE (never through the consumer group) and inserts every entry the way
the daemon does. Entries already stored are counted as present and left alone,
so a replay can be repeated and may run beside the daemon.
With --verify it writes nothing and compares Redis with MongoDB instead.
Configuration (Redis, tenants) comes from the same environment as the daemon.

flags:
`

func runReplay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, replayUsage)
		fs.PrintDefaults()
	}
	var (
		tenant    = fs.String("tenant", "", "only this tenant (default: every configured tenant)")
		namespace = fs.String("namespace", "", "only this namespace")
		topic     = fs.String("topic", "", "only this topic (the stream name after the kind)")
		kinds     = fs.String("kind", "", "stream kinds, comma-separated: topic, dlq (default: every kind this build stores)")
		from      = fs.String("from", "", "first entry: a stream id (ms-seq or ms) or an RFC 3339 time (default: the oldest)")
		to        = fs.String("to", "", "last entry, inclusive: a stream id or an RFC 3339 time (default: the newest)")
		rate      = fs.Float64("rate", 0, "at most this many entries per second (0: no limit)")
		page      = fs.Int("page", 500, "entries per XRANGE page")
		verify    = fs.Bool("verify", false, "compare Redis and MongoDB for the range; write nothing")
		format    = fs.String("format", "text", "report format: text or json")
		limit     = fs.Int("limit", 20, "ids listed per stream in the text report (0: all)")
		quiet     = fs.Bool("quiet", false, "no progress on stderr")
	)
	if err := parseToolFlags(fs, args); err != nil {
		return err
	}
	f, err := replayFilter(*tenant, *namespace, *topic, *kinds, *from, *to)
	if err != nil {
		return err
	}
	switch {
	case *rate < 0:
		return usagef("--rate %v: must be >= 0", *rate)
	case *page <= 0 || *page > 100000:
		return usagef("--page %d: must be between 1 and 100000", *page)
	case *limit < 0:
		return usagef("--limit %d: must be >= 0", *limit)
	}
	if err := checkFormat(*format); err != nil {
		return err
	}

	cfg, err := config.Load(ctx)
	if err != nil {
		return err
	}
	if err := checkTenant(cfg, f.Tenant); err != nil {
		return err
	}
	decoders := entry.Decoders()
	for _, k := range f.Kinds {
		if _, ok := decoders[k]; !ok {
			return usagef("--kind %s: this build does not store %s streams", k, k)
		}
	}
	rdb, err := redisconn.New(cfg.Redis, 4)
	if err != nil {
		return err
	}
	defer rdb.Close()
	w, err := sink.New(ctx, cfg.Chronos, sink.Options{AppName: "chronow-persister-replay"})
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		w.Close(cctx)
	}()
	tenants := make([]string, 0, len(cfg.Chronos.Tenants()))
	for _, t := range cfg.Chronos.Tenants() {
		tenants = append(tenants, t.TenantID)
	}
	rc := replay.Config{
		Layout: cfg.Layout(), Tenants: tenants, Decoders: decoders,
		PageSize: *page, Rate: *rate, WriteTimeout: cfg.Persister.WriteTimeout,
	}
	if !*quiet {
		rc.Progress, rc.TTY = stderr, isTerminal(stderr)
	}
	if !*verify {
		// The daemon's own parts for what the usual path cannot store, and
		// the topics documents: the rebuild matches what it would write.
		log := newLogger(stderr, cfg.Persister)
		m := metrics.New(prometheus.NewRegistry(), version)
		rc.Rescuer = dlq.NewRescuer(dlq.Config{Layout: cfg.Layout(), WriteTimeout: cfg.Persister.WriteTimeout},
			w, nil, m, log.With("part", "rescue"))
		rc.Topics = topics.New(topics.Config{Layout: cfg.Layout(), WriteTimeout: cfg.Persister.WriteTimeout},
			rdb, w, log.With("part", "topics"))
	}
	r := replay.New(rdb, w, rc)

	if *verify {
		rep, err := r.Verify(ctx, f)
		if werr := writeReport(stdout, *format, *limit, rep); werr != nil && err == nil {
			err = werr
		}
		if err != nil {
			return err
		}
		if !rep.Complete() {
			return fmt.Errorf("verify: %d entries Redis holds have no document in MongoDB", rep.Totals.MissingInMongo)
		}
		return nil
	}
	rep, err := r.Replay(ctx, f)
	if werr := writeReport(stdout, *format, *limit, rep); werr != nil && err == nil {
		err = werr
	}
	if err != nil {
		return err
	}
	if rep.Totals.Refused > 0 {
		return fmt.Errorf("replay: %d entries refused (listed in the report)", rep.Totals.Refused)
	}
	return nil
}

// textReport is a report that prints itself.
type textReport interface {
	WriteText(w io.Writer, limit int) error
}

func writeReport(w io.Writer, format string, limit int, rep textReport) error {
	if format == "json" {
		return writeJSON(w, rep)
	}
	return rep.WriteText(w, limit)
}

// replayFilter checks the selection flags and builds the filter.
func replayFilter(tenant, namespace, topic, kinds, from, to string) (replay.Filter, error) {
	f := replay.Filter{Tenant: tenant, Namespace: namespace, Topic: topic}
	for _, part := range strings.Split(kinds, ",") {
		switch k := keyspace.Kind(strings.TrimSpace(part)); k {
		case "":
		case keyspace.KindTopic, keyspace.KindDLQ:
			f.Kinds = append(f.Kinds, k)
		default:
			return f, usagef("--kind %q: want topic or dlq (or both, comma-separated)", part)
		}
	}
	for name, v := range map[string]string{"--tenant": tenant, "--namespace": namespace} {
		if strings.ContainsAny(v, ":*?[]\\") {
			return f, usagef("%s %q: must not contain ':' or glob characters", name, v)
		}
	}
	lo, err := replay.ParseBound(from, false)
	if err != nil {
		return f, usagef("--from %v", err)
	}
	hi, err := replay.ParseBound(to, true)
	if err != nil {
		return f, usagef("--to %v", err)
	}
	if hi.Less(lo) {
		return f, usagef("--from %s is after --to %s (from %s, to %s)", from, to, lo, hi)
	}
	f.Range = replay.Range{From: lo, To: hi}
	return f, nil
}
