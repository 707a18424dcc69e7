// Package e2e is test support for end-to-end tests: it configures and runs
// the persister (in-process or as the real binary) against real servers,
// keeps a ledger of what was published, and checks what was stored.
package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sethvargo/go-envconfig"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/daemon"
	"github.com/chronow/persister/internal/sink"
	"github.com/chronow/persister/internal/testenv"
)

// StartServers starts a Redis and a MongoDB (FerretDB) for one test and
// returns them with a client of each; all are closed on cleanup.
func StartServers(t testing.TB) (*testenv.Redis, *testenv.Mongo, *redis.Client, *mongo.Client) {
	t.Helper()
	rs := testenv.StartRedis(t)
	ms := testenv.StartMongo(t)
	return rs, ms, rs.Client(t), ms.Client(t)
}

// DBName returns the database name the helpers give a tenant.
func DBName(tenant string) string {
	r := strings.NewReplacer("-", "_", ".", "_", "/", "_", "$", "_", " ", "_")
	return "cm_" + r.Replace(tenant)
}

// WriteChronos writes a chronos-db config routing each tenant to DBName(tenant)
// on one connection and returns its path.
func WriteChronos(t testing.TB, mongoURI string, tenants ...string) string {
	t.Helper()
	c := Chronos{Conns: map[string]string{"mongo-primary": mongoURI}}
	for _, id := range tenants {
		c.Tenants = append(c.Tenants, ChronosTenant{ID: id, Conn: "mongo-primary", DB: DBName(id)})
	}
	p := filepath.Join(t.TempDir(), "chronos.json")
	if err := c.Write(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// Env returns a daemon environment for the given servers and tenants, with
// short intervals for tests; extra overrides it.
func Env(t testing.TB, redisURL, mongoURI string, tenants []string, extra map[string]string) map[string]string {
	t.Helper()
	env := map[string]string{
		"REDIS_URL":                    redisURL,
		"CHRONOS_CONFIG":               WriteChronos(t, mongoURI, tenants...),
		"PERSISTER_CONSUMER":           "test-" + strings.ReplaceAll(t.Name(), "/", "-"),
		"PERSISTER_HTTP_ADDR":          "127.0.0.1:0",
		"PERSISTER_DISCOVERY_INTERVAL": "200ms",
		"PERSISTER_READ_BLOCK":         "200ms",
		"PERSISTER_RETRY_MAX_BACKOFF":  "1s",
		"PERSISTER_WRITE_TIMEOUT":      "5s",
		"PERSISTER_SHUTDOWN_GRACE":     "10s",
		"PERSISTER_LOG_FORMAT":         "text",
	}
	maps.Copy(env, extra)
	return env
}

// Config loads a config from env exactly as the daemon would.
func Config(t testing.TB, env map[string]string) *config.Config {
	t.Helper()
	cfg, err := config.LoadFrom(context.Background(), envconfig.MapLookuper(env))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

// Running is an in-process daemon.
type Running struct {
	D      *daemon.Daemon
	cancel context.CancelFunc
	done   chan error
}

// Start runs a daemon in-process until Stop (or the test's end).
func Start(t testing.TB, env map[string]string) *Running {
	t.Helper()
	cfg := Config(t, env)
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	d, err := daemon.New(context.Background(), cfg, log, "test")
	if err != nil {
		t.Fatalf("daemon.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Running{D: d, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- d.Run(ctx) }()
	t.Cleanup(func() { _ = r.Stop() })
	return r
}

// Stop cancels the daemon (like SIGTERM) and waits for Run to return.
func (r *Running) Stop() error {
	if r.cancel == nil {
		return nil
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		return err
	case <-time.After(60 * time.Second):
		return fmt.Errorf("daemon did not stop within 60s")
	}
}

// testWriter sends logs to t.Log until the test ends.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	defer func() { _ = recover() }() // logging after the test ended
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Eventually polls cond until it returns true or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for time.Now().Before(deadline) {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s; last state: %s", timeout, what, last)
}

// Writer opens a sink.Writer on the MongoDB of tenants (an Env and Config
// of redisURL and mongoURI), closed on cleanup.
func Writer(ctx context.Context, t testing.TB, redisURL, mongoURI string, tenants ...string) *sink.Writer {
	t.Helper()
	cfg := Config(t, Env(t, redisURL, mongoURI, tenants, nil))
	w, err := sink.New(ctx, cfg.Chronos, sink.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close(ctx) })
	return w
}
