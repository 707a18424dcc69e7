package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"strings"

	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/daemon"
)

func runDaemon(ctx context.Context, args []string, _, stderr io.Writer) error {
	cfg, err := loadWithoutFlags(ctx, "run", args, stderr)
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.Persister)
	limit, why := cfg.Persister.SoftMemoryLimit(os.Getenv("GOMEMLIMIT"))
	if limit > 0 {
		debug.SetMemoryLimit(limit)
	}
	if cur := debug.SetMemoryLimit(-1); cur != math.MaxInt64 {
		log.Info("go soft memory limit", "bytes", cur, "from", why)
	} else {
		log.Info("no go soft memory limit", "from", why)
	}
	d, err := daemon.New(ctx, cfg, log, version)
	if err != nil {
		return err
	}
	return d.Run(ctx)
}

func runConfig(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := loadWithoutFlags(ctx, "config", args, stderr)
	if err != nil {
		return err
	}
	return writeJSON(stdout, cfg.Summary())
}

// loadWithoutFlags parses the arguments of a command that takes no flags
// (-h only) and loads the configuration from the environment.
func loadWithoutFlags(ctx context.Context, name string, args []string, stderr io.Writer) (*config.Config, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	return config.Load(ctx)
}

func newLogger(w io.Writer, p config.Persister) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(strings.ToUpper(p.LogLevel)))
	opts := &slog.HandlerOptions{Level: level}
	if p.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
