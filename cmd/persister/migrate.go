package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/chronow/persister/internal/migrate"
)

const migrateUsage = `usage: persister migrate [flags]

Creates each configured tenant's collections (messages, dead_letters, topics,
shared_memory) and every index, idempotently, and reports what it created and
what already existed. A tenant's retentionDays become TTL indexes (see
docs/tools.md); a server without TTL support is reported, and the command
fails, unless --skip-retention. With --shard, pointed at a mongos, it also
shards the collections on the keys of docs/scaling.md. Configuration comes
from the same environment as the daemon.

flags:
`

func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newToolFlags("migrate", migrateUsage, stderr)
	var (
		tenant        = fs.String("tenant", "", "only this tenant (default: every configured tenant)")
		dryRun        = fs.Bool("dry-run", false, "only report what would be created; write nothing")
		skipRetention = fs.Bool("skip-retention", false, "leave TTL (retention) indexes alone")
		format        = fs.String("format", "text", "report format: text or json")
		shard         = fs.Bool("shard", false, "also shard the collections (the server must be a mongos; see docs/scaling.md)")
	)
	if err := parseToolFlags(fs, args); err != nil {
		return err
	}
	if err := checkFormat(*format); err != nil {
		return err
	}
	cfg, err := loadToolConfig(ctx, *tenant)
	if err != nil {
		return err
	}
	w, closeSink, err := openSink(ctx, cfg, "chronow-persister-migrate")
	if err != nil {
		return err
	}
	defer closeSink()

	var (
		reps []migrate.TenantReport
		errs []error
	)
	for _, t := range cfg.Chronos.Tenants() {
		if *tenant != "" && t.TenantID != *tenant {
			continue
		}
		db, err := w.Database(t.TenantID)
		if err != nil {
			return err
		}
		if *shard {
			if err := migrate.CheckMongos(ctx, migrate.DatabaseRunner(db.Client())); err != nil {
				return fmt.Errorf("--shard: tenant %s (connection %s): %w", t.TenantID, t.DBConnRef, err)
			}
		}
		rep, err := migrate.Tenant(ctx, db, t, migrate.Options{DryRun: *dryRun, SkipRetention: *skipRetention})
		if err == nil && *shard {
			rep.Sharding, err = migrate.Shard(ctx, migrate.DatabaseRunner(db.Client()), t.DBName, *dryRun)
			if err != nil {
				rep.Error = err.Error()
			}
		}
		reps = append(reps, rep)
		if err != nil {
			errs = append(errs, fmt.Errorf("tenant %s: %w", t.TenantID, err))
		}
		if ctx.Err() != nil {
			break
		}
	}
	if *format == "json" {
		err = writeJSON(stdout, reps)
	} else {
		err = migrate.WriteText(stdout, reps)
	}
	if err != nil {
		return err
	}
	if err := errors.Join(errs...); err != nil {
		if errors.Is(err, migrate.ErrTTLUnsupported) {
			return fmt.Errorf("%w (collections and other indexes are done; run with --skip-retention to accept that, or use a server with TTL indexes)", err)
		}
		return err
	}
	return nil
}
