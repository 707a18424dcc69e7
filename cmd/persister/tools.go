package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/chronow/persister/internal/config"
)

// Helpers shared by the tool commands (migrate, replay, dlq).

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
