// Package redisconn builds the Redis client from Chronow's settings, for the
// daemon and the command-line tools alike.
package redisconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/chronow/persister/internal/config"
)

// New builds the Redis client from Chronow's settings: a cluster client
// when REDIS_CLUSTER_NODES is set, else a client for REDIS_URL. poolSize
// must cover every blocking reader plus room for acks and claims.
func New(c config.Redis, poolSize int) (redis.UniversalClient, error) {
	var tlsCfg *tls.Config
	if c.TLS || c.CACert != "" || c.TLSCert != "" {
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if c.TLSCert != "" {
		// Mutual TLS: presented when the server asks (tls-auth-clients).
		cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("%w: REDIS_TLS_CERT, REDIS_TLS_KEY: %w", config.ErrInvalid, err)
		}
		tlsCfg.Certificates = []tls.Certificate{cert}
	}
	if c.CACert != "" {
		pem, err := os.ReadFile(c.CACert)
		if err != nil {
			return nil, fmt.Errorf("%w: REDIS_CA_CERT: %w", config.ErrInvalid, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: REDIS_CA_CERT: %s holds no PEM certificate", config.ErrInvalid, c.CACert)
		}
		tlsCfg.RootCAs = pool
	}
	nodes, err := c.Nodes()
	if err != nil {
		return nil, fmt.Errorf("%w: REDIS_CLUSTER_NODES: %w", config.ErrInvalid, err)
	}
	if len(nodes) > 0 {
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs:                 nodes,
			Username:              c.Username,
			Password:              c.Password,
			TLSConfig:             tlsCfg,
			PoolSize:              poolSize,
			ReadBufferSize:        connBuffer,
			WriteBufferSize:       connBuffer,
			ReadTimeout:           5 * time.Second,
			WriteTimeout:          5 * time.Second,
			ContextTimeoutEnabled: true,
			// CLIENT MAINT_NOTIFICATIONS is for Redis Enterprise; off, so
			// the ACL need not grant it (internal/acl).
			MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
			// No CLIENT SETINFO: Redis 7.0 has none, 7.2 would need it
			// granted (internal/acl).
			DisableIdentity: true,
		}), nil
	}
	opts, err := redis.ParseURL(c.URL)
	if err != nil {
		return nil, fmt.Errorf("%w: REDIS_URL %s: does not parse", config.ErrInvalid, config.RedactURI(c.URL))
	}
	if c.Username != "" {
		opts.Username = c.Username
	}
	if c.Password != "" {
		opts.Password = c.Password
	}
	if c.DB >= 0 {
		opts.DB = c.DB
	}
	if tlsCfg != nil {
		// A rediss:// URL's config carries the server name from the URL;
		// keep it, with our CA and client certificate.
		if opts.TLSConfig != nil {
			tlsCfg.ServerName = opts.TLSConfig.ServerName
		}
		opts.TLSConfig = tlsCfg
	}
	opts.PoolSize = poolSize
	opts.ReadBufferSize, opts.WriteBufferSize = connBuffer, connBuffer
	opts.PipelineReadBufferSize, opts.PipelineWriteBufferSize = pipelineBuffer, pipelineBuffer
	opts.ReadTimeout = 5 * time.Second
	opts.WriteTimeout = 5 * time.Second
	opts.ContextTimeoutEnabled = true
	opts.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	opts.DisableIdentity = true
	return redis.NewClient(opts), nil
}

// Buffer sizes of the Redis connections. The pool has a connection per
// tenant reader (blocked in XREADGROUP): go-redis' 32 KiB read and write
// buffers on each were megabytes with many tenants. Replies larger than a
// buffer are read through it; commands here are small.
const (
	connBuffer     = 8 << 10
	pipelineBuffer = 32 << 10
)

// ForEachMaster calls fn on every master of a Redis Cluster, in parallel,
// or once on rdb itself when it is not a cluster client: for commands such
// as SCAN that each master answers for its own keys.
func ForEachMaster(ctx context.Context, rdb redis.UniversalClient, fn func(ctx context.Context, c redis.Cmdable) error) error {
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return fn(ctx, c) })
	}
	return fn(ctx, rdb)
}
