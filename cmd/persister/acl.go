package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/acl"
	"github.com/chronow/persister/internal/config"
)

// runACL prints the least-privilege ACL SETUSER line for the configured
// key prefix, database and user (README, Security), with the password as
// the placeholder PASSWORD.
func runACL(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("acl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	noConfig := fs.Bool("no-config", false, "without CONFIG GET/SET: the operator sets notify-keyspace-events on the server")
	if err := parseToolFlags(fs, args); err != nil {
		return err
	}
	cfg, err := config.Load(ctx)
	if err != nil {
		return err
	}
	p := acl.Default
	p.Prefix = cfg.Redis.KeyPrefix
	p.Form = cfg.Layout().Form
	p.NoConfig = *noConfig
	if cfg.Redis.Username != "" {
		p.User = cfg.Redis.Username
	}
	switch {
	case cfg.Redis.ClusterNodes != "":
		p.DB = 0
	case cfg.Redis.DB >= 0:
		p.DB = cfg.Redis.DB
	default:
		if o, err := redis.ParseURL(cfg.Redis.URL); err == nil {
			p.DB = o.DB
			if cfg.Redis.Username == "" && o.Username != "" {
				p.User = o.Username
			}
		}
	}
	_, err = fmt.Fprintln(stdout, acl.Line(p))
	return err
}
