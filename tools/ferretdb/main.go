// Command ferretdb runs an in-process FerretDB (embeddable package
// github.com/FerretDB/FerretDB/ferretdb) with the SQLite backend.
//
// It exists only for development and tests of the persister: it gives a
// Mongo-compatible server without Docker, PostgreSQL or a real mongod.
// FerretDB's own cmd/ferretdb, built from the module proxy, panics because
// its generated build/version/version.txt is missing; the embeddable package
// does not need it.
//
// Usage:
//
//	ferretdb [-listen-addr 127.0.0.1:27017] [-state-dir ./.run/ferretdb] [-log-level info]
//	         [-tls-listen-addr 127.0.0.1:27018 -tls-cert-file server.crt -tls-key-file server.key [-tls-ca-file ca.crt]]
//
// With -tls-listen-addr FerretDB also listens for TLS connections; with
// -tls-ca-file it requires a client certificate signed by that CA (mutual
// TLS). -listen-addr "" turns the plain listener off (TLS only).
//
// Authentication: the embeddable package of FerretDB v1.24 does not expose
// its experimental SCRAM support (EnableNewAuth), so this server offers only
// the PLAIN mechanism, and the SQLite backend checks no credentials (PLAIN
// credentials are meant for a PostgreSQL backend). SCRAM-SHA-1/256 are
// refused ("Unsupported authentication mechanism").
//
// When the server accepts connections it prints one line to stderr:
//
//	ferretdb: ready: listening on 127.0.0.1:27017 uri=mongodb://127.0.0.1:27017/ state-dir=...
//
// SIGINT or SIGTERM shut it down cleanly (listener closed, connections
// drained, SQLite closed). A second signal, or a shutdown that takes longer
// than -shutdown-timeout, exits immediately with status 1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "ferretdb: error: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	listenAddr := flag.String("listen-addr", "127.0.0.1:27017", "TCP address to listen on (host:port)")
	stateDir := flag.String("state-dir", "./.run/ferretdb", "directory for the SQLite databases (created if missing)")
	logLevel := flag.String("log-level", "info", "log level: debug, info, warn or error")
	tlsListenAddr := flag.String("tls-listen-addr", "", "TLS address to listen on (host:port); empty: no TLS listener")
	tlsCertFile := flag.String("tls-cert-file", "", "PEM server certificate of the TLS listener")
	tlsKeyFile := flag.String("tls-key-file", "", "PEM private key of -tls-cert-file")
	tlsCAFile := flag.String("tls-ca-file", "", "PEM CA certificate: clients must present a certificate it signed")
	shutdownTimeout := flag.Duration("shutdown-timeout", 10*time.Second, "maximum time for a clean shutdown")
	flag.Parse()

	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", flag.Args())
	}

	if *listenAddr == "" && *tlsListenAddr == "" {
		return errors.New("-listen-addr and -tls-listen-addr are both empty: nothing to listen on")
	}

	if *tlsListenAddr != "" && (*tlsCertFile == "" || *tlsKeyFile == "") {
		return errors.New("-tls-listen-addr needs -tls-cert-file and -tls-key-file")
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("invalid -log-level %q: %w", *logLevel, err)
	}

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	dir, err := filepath.Abs(*stateDir)
	if err != nil {
		return fmt.Errorf("invalid -state-dir %q: %w", *stateDir, err)
	}

	if err = os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating state dir: %w", err)
	}

	// FerretDB requires a "file:" URI of an existing directory ending with "/".
	sqliteURL := (&url.URL{Scheme: "file", Path: strings.TrimSuffix(filepath.ToSlash(dir), "/") + "/"}).String()

	f, err := ferretdb.New(&ferretdb.Config{
		Listener: ferretdb.ListenerConfig{
			TCP:         *listenAddr,
			TLS:         *tlsListenAddr,
			TLSCertFile: *tlsCertFile,
			TLSKeyFile:  *tlsKeyFile,
			TLSCAFile:   *tlsCAFile,
		},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: sqliteURL,
	})
	if err != nil {
		return fmt.Errorf("starting FerretDB on %s: %w", *listenAddr, err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	done := make(chan error, 1)

	go func() { done <- f.Run(ctx) }()

	// The listener is already bound by ferretdb.New, so the server accepts
	// connections from now on; MongoDBURI reports the actual address (useful
	// with port 0).
	uri := f.MongoDBURI()
	addr, _, _ := strings.Cut(strings.TrimPrefix(uri, "mongodb://"), "/")
	fmt.Fprintf(os.Stderr, "ferretdb: ready: listening on %s uri=%s state-dir=%s pid=%d\n", addr, uri, dir, os.Getpid())

	select {
	case err = <-done:
		if err == nil {
			err = errors.New("FerretDB stopped unexpectedly")
		}

		return err
	case <-ctx.Done():
	}

	stop() // a second signal now terminates the process with the default action

	fmt.Fprintf(os.Stderr, "ferretdb: shutting down\n")

	select {
	case err = <-done:
		if err != nil {
			return fmt.Errorf("shutdown: %w", err)
		}
	case <-time.After(*shutdownTimeout):
		return fmt.Errorf("shutdown did not finish within %s", *shutdownTimeout)
	}

	fmt.Fprintf(os.Stderr, "ferretdb: stopped\n")

	return nil
}
