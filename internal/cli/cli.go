// Package cli holds what the repository's small commands share: running
// with a context cancelled by SIGINT or SIGTERM (Main) and parsing their
// flags (Parse, in flags.go).
package cli

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Main runs run with a context cancelled by SIGINT or SIGTERM, the process
// arguments and the standard streams, and exits with its exit code.
func Main(run func(ctx context.Context, args []string, stdout, stderr io.Writer) int) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
