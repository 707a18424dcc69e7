package testenv

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a redis-server process started for one test.
type Redis struct {
	Addr string // 127.0.0.1:port
	URL  string // redis://127.0.0.1:port/0 (rediss:// with WithRedisTLS)
	Port int
	Dir  string // data directory (AOF/RDB files), kept across Restart
	Log  string // path of the server's stdout/stderr log

	serverProc
	tls *tls.Config // client TLS config (WithRedisTLS), else nil
}

// TLSConfig returns the client TLS config of a server started with
// WithRedisTLS (trusting its CA, presenting the client certificate), or nil.
func (r *Redis) TLSConfig() *tls.Config {
	if r.tls == nil {
		return nil
	}
	return r.tls.Clone()
}

// RedisOption configures StartRedis.
type RedisOption func(*redisConfig)

type redisConfig struct {
	appendOnly bool
	extra      []string
	pki        *PKI
	authClient bool
}

// WithRedisTLS makes the server TLS-only (--port 0, --tls-port) with the
// PKI's server certificate; with authClients it also requires a client
// certificate signed by the PKI's CA (tls-auth-clients yes). A cluster's
// bus uses TLS too (tls-cluster yes). The server's URL is rediss://.
func WithRedisTLS(p *PKI, authClients bool) RedisOption {
	return func(c *redisConfig) { c.pki, c.authClient = p, authClients }
}

// WithAppendOnly enables the AOF (appendonly yes, appendfsync always), so
// that every acknowledged write survives Kill and is reloaded by Restart.
// Override the fsync policy with WithRedisArgs("--appendfsync", "everysec").
func WithAppendOnly() RedisOption {
	return func(c *redisConfig) { c.appendOnly = true }
}

// WithRedisArgs appends command-line arguments to redis-server, e.g.
// WithRedisArgs("--maxmemory", "10mb"). They come last, so they override
// the defaults set by testenv.
func WithRedisArgs(args ...string) RedisOption {
	return func(c *redisConfig) { c.extra = append(c.extra, args...) }
}

// redisServerInPath finds redis-server in $PATH (where it is looked for
// when $PERSISTER_REDIS_SERVER_BIN is empty).
func redisServerInPath() (string, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return "", fmt.Errorf("redis-server (not in $PATH and $%s is empty)", EnvRedisServerBin)
	}
	return bin, nil
}

// StartRedis starts redis-server on a free port with its data in a temp dir
// and waits until PING answers PONG. Without options there is no
// persistence (no RDB snapshots, no AOF). The server is killed on cleanup.
func StartRedis(t testing.TB, opts ...RedisOption) *Redis {
	t.Helper()

	cfg := applyOptions(opts)
	s := newTestServer(t, redisServer, "data")

	args := []string{
		"--port", strconv.Itoa(s.port),
	}
	if cfg.pki != nil {
		auth := "no"
		if cfg.authClient {
			auth = "yes"
		}
		args = []string{
			"--port", "0",
			"--tls-port", strconv.Itoa(s.port),
			"--tls-cert-file", cfg.pki.ServerCert,
			"--tls-key-file", cfg.pki.ServerKey,
			"--tls-ca-cert-file", cfg.pki.CACert,
			"--tls-auth-clients", auth,
			"--tls-cluster", "yes",
			"--tls-replication", "yes",
		}
	}
	args = append(args,
		"--bind", "127.0.0.1",
		"--protected-mode", "no",
		"--daemonize", "no",
		"--dir", s.data,
		"--logfile", "", // log to stdout, which goes to the log file
		"--save", "", // no RDB snapshots
		"--appendonly", "no",
	)

	if cfg.appendOnly {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	}

	args = append(args, cfg.extra...)

	r := &Redis{
		Addr: s.addr,
		URL:  "redis://" + s.addr + "/0",
		Port: s.port,
		Dir:  s.data,
		Log:  filepath.Join(s.tmp, "redis.log"),
	}
	if cfg.pki != nil {
		r.URL = "rediss://" + s.addr + "/0"
		r.tls = cfg.pki.ClientTLS()
	}
	r.p = s.proc(t, "redis-server", args, r.Log)
	r.p.startAndWait(t, r.ping)

	return r
}

// ping succeeds when the server answers PONG (not -LOADING while it reads
// its AOF after a restart).
func (r *Redis) ping(timeout time.Duration) error {
	if err := dialCheck(r.Addr, timeout); err != nil {
		return err
	}

	c := redis.NewClient(&redis.Options{
		Addr:            r.Addr,
		DialTimeout:     timeout,
		ReadTimeout:     timeout,
		WriteTimeout:    timeout,
		MaxRetries:      -1,
		PoolSize:        1,
		DisableIdentity: true,
		TLSConfig:       r.TLSConfig(),
	})
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	res, err := c.Ping(ctx).Result()
	if err != nil {
		return err
	}

	if res != "PONG" {
		return errors.New("PING answered " + strconv.Quote(res))
	}

	return nil
}

// Client returns a new go-redis client for this server, closed on cleanup.
func (r *Redis) Client(t testing.TB) *redis.Client {
	t.Helper()

	c := redis.NewClient(&redis.Options{Addr: r.Addr, TLSConfig: r.TLSConfig()})
	t.Cleanup(func() {
		r.p.resumeIfPaused()
		_ = c.Close()
	})

	return c
}

// Restart starts the server again on the same port with the same data dir
// and arguments (with WithAppendOnly the data is reloaded from the AOF), and
// waits until it answers PING. A server still running is killed first.
func (r *Redis) Restart(t testing.TB) {
	t.Helper()

	r.Kill(t)
	r.p.startAndWait(t, r.ping)
}
