package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/redisconn"
	"github.com/chronow/persister/internal/sink"
)

// Helpers shared by the tool commands (migrate, replay, dlq).

// newToolFlags returns a flag set for a tool command whose -h prints usage
// and then the flags' defaults on stderr.
func newToolFlags(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	return fs
}

// loadToolConfig loads the daemon's configuration from the environment and
// refuses a --tenant value that is not configured.
func loadToolConfig(ctx context.Context, tenant string) (*config.Config, error) {
	cfg, err := config.Load(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkTenant(cfg, tenant); err != nil {
		return nil, err
	}
	return cfg, nil
}

// openSink connects to the tenants' MongoDB deployments as appName; the
// returned func closes the connections (within 5s, even after ctx ends).
func openSink(ctx context.Context, cfg *config.Config, appName string) (*sink.Writer, func(), error) {
	w, err := sink.New(ctx, cfg.Chronos, sink.Options{AppName: appName})
	if err != nil {
		return nil, nil, err
	}
	return w, func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		w.Close(cctx)
	}, nil
}

// openStores connects to Redis (with poolSize connections) and to the
// tenants' MongoDB deployments as appName; the returned func closes both.
func openStores(ctx context.Context, cfg *config.Config, poolSize int, appName string) (redis.UniversalClient, *sink.Writer, func(), error) {
	rdb, err := redisconn.New(cfg.Redis, poolSize)
	if err != nil {
		return nil, nil, nil, err
	}
	w, closeSink, err := openSink(ctx, cfg, appName)
	if err != nil {
		_ = rdb.Close()
		return nil, nil, nil, err
	}
	return rdb, w, func() {
		closeSink()
		_ = rdb.Close()
	}, nil
}

// usagef returns a bad-flag error (exit code 2).
func usagef(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, a...))
}

// parseToolFlags parses args and refuses positional arguments.
func parseToolFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q (flags only; see -h)", fs.Arg(0))
	}
	return nil
}

// checkTenant refuses a --tenant value that is not configured.
func checkTenant(cfg *config.Config, tenant string) error {
	if tenant == "" {
		return nil
	}
	if _, ok := cfg.Chronos.Tenant(tenant); ok {
		return nil
	}
	ids := make([]string, 0, len(cfg.Chronos.Tenants()))
	for _, t := range cfg.Chronos.Tenants() {
		ids = append(ids, fmt.Sprintf("%q", t.TenantID))
	}
	sort.Strings(ids)
	return usagef("--tenant %q: not a configured tenant (configured: %s)", tenant, strings.Join(ids, ", "))
}

// checkFormat refuses a --format value other than text or json.
func checkFormat(format string) error {
	if format != "text" && format != "json" {
		return usagef("--format %q: want text or json", format)
	}
	return nil
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}
