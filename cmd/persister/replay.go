package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/entry"
	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/replay"
	"github.com/chronow/persister/internal/rescue"
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

// replayOptions are the replay command's flags, checked.
type replayOptions struct {
	filter replay.Filter
	rate   float64
	page   int
	verify bool
	format string
	limit  int
	quiet  bool
}

func runReplay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseReplayFlags(args, stderr)
	if err != nil {
		return err
	}
	cfg, err := loadToolConfig(ctx, o.filter.Tenant)
	if err != nil {
		return err
	}
	decoders, err := replayDecoders(o.filter.Kinds)
	if err != nil {
		return err
	}
	rdb, w, closeStores, err := openStores(ctx, cfg, 4, "chronow-persister-replay")
	if err != nil {
		return err
	}
	defer closeStores()
	r := replay.New(rdb, w, replayConfig(cfg, o, decoders, rdb, w, stderr))
	if o.verify {
		return verifyReport(ctx, r, o, stdout)
	}
	return replayReport(ctx, r, o, stdout)
}

// parseReplayFlags parses and checks the replay command's flags.
func parseReplayFlags(args []string, stderr io.Writer) (replayOptions, error) {
	fs := newToolFlags("replay", replayUsage, stderr)
	var (
		o         replayOptions
		tenant    = fs.String("tenant", "", "only this tenant (default: every configured tenant)")
		namespace = fs.String("namespace", "", "only this namespace")
		topic     = fs.String("topic", "", "only this topic (the stream name after the kind)")
		kinds     = fs.String("kind", "", "stream kinds, comma-separated: topic, dlq (default: every kind this build stores)")
		from      = fs.String("from", "", "first entry: a stream id (ms-seq or ms) or an RFC 3339 time (default: the oldest)")
		to        = fs.String("to", "", "last entry, inclusive: a stream id or an RFC 3339 time (default: the newest)")
	)
	fs.Float64Var(&o.rate, "rate", 0, "at most this many entries per second (0: no limit)")
	fs.IntVar(&o.page, "page", 500, "entries per XRANGE page")
	fs.BoolVar(&o.verify, "verify", false, "compare Redis and MongoDB for the range; write nothing")
	fs.StringVar(&o.format, "format", "text", "report format: text or json")
	fs.IntVar(&o.limit, "limit", 20, "ids listed per stream in the text report (0: all)")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress on stderr")
	if err := parseToolFlags(fs, args); err != nil {
		return o, err
	}
	var err error
	o.filter, err = replayFilter(*tenant, *namespace, *topic, *kinds, *from, *to)
	if err != nil {
		return o, err
	}
	switch {
	case o.rate < 0:
		return o, usagef("--rate %v: must be >= 0", o.rate)
	case o.page <= 0 || o.page > 100000:
		return o, usagef("--page %d: must be between 1 and 100000", o.page)
	case o.limit < 0:
		return o, usagef("--limit %d: must be >= 0", o.limit)
	}
	return o, checkFormat(o.format)
}

// replayDecoders returns this build's decoders, refusing a selected kind it
// does not store.
func replayDecoders(kinds []keyspace.Kind) (map[keyspace.Kind]entry.Decoder, error) {
	decoders := entry.Decoders()
	for _, k := range kinds {
		if _, ok := decoders[k]; !ok {
			return nil, usagef("--kind %s: this build does not store %s streams", k, k)
		}
	}
	return decoders, nil
}

// replayConfig builds the replayer's configuration; a replay that writes
// gets the daemon's own parts for what the usual path cannot store, and the
// topics documents: the rebuild matches what the daemon would write.
func replayConfig(cfg *config.Config, o replayOptions, decoders map[keyspace.Kind]entry.Decoder,
	rdb redis.UniversalClient, w *sink.Writer, stderr io.Writer) replay.Config {
	tenants := make([]string, 0, len(cfg.Chronos.Tenants()))
	for _, t := range cfg.Chronos.Tenants() {
		tenants = append(tenants, t.TenantID)
	}
	rc := replay.Config{
		Layout: cfg.Layout(), Tenants: tenants, Decoders: decoders,
		PageSize: o.page, Rate: o.rate, WriteTimeout: cfg.Persister.WriteTimeout,
	}
	if !o.quiet {
		rc.Progress, rc.TTY = stderr, isTerminal(stderr)
	}
	if !o.verify {
		log := newLogger(stderr, cfg.Persister)
		m := metrics.New(prometheus.NewRegistry(), version)
		rc.Rescuer = rescue.NewRescuer(rescue.Config{Layout: cfg.Layout(), WriteTimeout: cfg.Persister.WriteTimeout},
			w, nil, m, log.With("part", "rescue"))
		rc.Topics = topics.New(topics.Config{Layout: cfg.Layout(), WriteTimeout: cfg.Persister.WriteTimeout},
			rdb, w, log.With("part", "topics"))
	}
	return rc
}

// verifyReport compares Redis with MongoDB, writes the report and fails when
// an entry Redis holds has no document.
func verifyReport(ctx context.Context, r *replay.Replayer, o replayOptions, stdout io.Writer) error {
	rep, err := r.Verify(ctx, o.filter)
	return reportOutcome(stdout, o, rep, err, func() error {
		if !rep.Complete() {
			return fmt.Errorf("verify: %d entries Redis holds have no document in MongoDB", rep.Totals.MissingInMongo)
		}
		return nil
	})
}

// replayReport replays, writes the report and fails when an entry was refused.
func replayReport(ctx context.Context, r *replay.Replayer, o replayOptions, stdout io.Writer) error {
	rep, err := r.Replay(ctx, o.filter)
	return reportOutcome(stdout, o, rep, err, func() error {
		if rep.Totals.Refused > 0 {
			return fmt.Errorf("replay: %d entries refused (listed in the report)", rep.Totals.Refused)
		}
		return nil
	})
}

// reportOutcome writes the report of a run that ended with err and returns
// err, else the error of writing the report, else what failed says of it.
func reportOutcome(stdout io.Writer, o replayOptions, rep textReport, err error, failed func() error) error {
	if werr := writeReport(stdout, o.format, o.limit, rep); werr != nil && err == nil {
		err = werr
	}
	if err != nil {
		return err
	}
	return failed()
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
