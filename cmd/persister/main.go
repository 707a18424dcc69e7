// Command persister stores Chronow's Redis streams in MongoDB (write-behind)
// and carries the tools to set up and rebuild the cold tier.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/chronow/persister/internal/config"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"run", "run the daemon (configuration from the environment)", runDaemon},
		{"config", "validate the configuration and print it with secrets redacted", runConfig},
		{"migrate", "create every tenant's collections, indexes and retention (TTL) indexes", runMigrate},
		{"replay", "rebuild the cold tier from what Redis still holds (--verify: compare only)", runReplay},
		{"dlq", "dlq requeue: put dead letters back onto their topic streams", runDLQ},
		{"acl", "print the least-privilege Redis ACL SETUSER line for this configuration (--no-config: without CONFIG)", runACL},
		{"version", "print the version", func(_ context.Context, _ []string, stdout, _ io.Writer) error {
			_, err := fmt.Fprintln(stdout, version)
			return err
		}},
	}
}

// errUsage marks bad command-line input (exit code 2).
var errUsage = errors.New("usage")

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		done := make(chan struct{})
		watched := make(chan struct{})
		// A second signal exits at once. The watcher ends with the command.
		go func() {
			defer close(watched)
			select {
			case <-ctx.Done():
			case <-done:
				return
			}
			stop()
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
			defer signal.Stop(sig)
			select {
			case <-sig:
				fmt.Fprintln(stderr, "persister: second signal, exiting now")
				os.Exit(1)
			case <-done:
			}
		}()
		defer func() {
			close(done)
			<-watched
			stop()
		}()
		err := c.run(ctx, args[1:], stdout, stderr)
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, config.ErrInvalid), errors.Is(err, errUsage):
			fmt.Fprintf(stderr, "persister %s: %v\n", c.name, err)
			return 2
		default:
			fmt.Fprintf(stderr, "persister %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "persister: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: persister <command> [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nConfiguration is read from the environment; see README.md.")
}
