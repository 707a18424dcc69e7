// Package acl holds the least-privilege Redis ACL of the persister (the
// lines README "Security" shows, generated here so they cannot drift) and a
// client hook that reports a command the ACL refuses (NOPERM) by its name,
// as a permission problem rather than an outage.
package acl

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/keyspace"
)

// Commands is every command the daemon and its tools send, with why. The
// ACL test (acl_integration_test.go) runs the daemon, replay, dlq requeue
// and migrate as a user granted exactly these and fails on any refusal.
var Commands = []struct{ Name, Why string }{
	{"ping", "readiness (/readyz); health check of the keyspace subscription"},
	{"select", "REDIS_DB other than 0"},
	{"cluster|slots", "Redis Cluster: the slot map"},
	{"command", "Redis Cluster: go-redis reads the command table (COMMAND) to route commands"},
	{"scan", "discovery of streams, topic configs and shared-memory keys (lists names only)"},
	{"hget", "topic subscription config (topics collection)"},
	{"xreadgroup", "reading entries through the persister's group"},
	{"xack", "acknowledging stored entries"},
	{"xgroup|create", "creating the persister's group on a stream"},
	{"xgroup|delconsumer", "removing idle persister consumers with nothing pending (Lua)"},
	{"xgroup|setid", "lag measurement: counting entries trimmed unread (Lua, own group only)"},
	{"xclaim", "taking over entries left pending by a dead persister (claim script, Lua)"},
	{"xpending", "delivery counts (dead letters), pending counts (lag), entries to claim (claim script)"},
	{"xrange", "lag measurement, replay, whether a pending entry was trimmed (claim script)"},
	{"xinfo|stream", "lag measurement, replay"},
	{"xinfo|groups", "lag measurement (Lua)"},
	{"xinfo|consumers", "idle consumer cleanup; which replica decides entries trimmed while pending (claim script)"},
	{"type", "lag measurement: the key is still a stream (Lua)"},
	{"time", "server clock for lag ages and shared-memory versions (Lua)"},
	{"get", "shared-memory values (Lua)"},
	{"eval", "shared-memory capture script"},
	{"evalsha", "lag, claim and consumer-cleanup scripts"},
	{"script|load", "loading the lag script"},
	{"psubscribe", "shared memory live: keyspace notifications"},
	{"punsubscribe", "shared memory live: leaving the subscription"},
	{"config|get", "shared memory: reading notify-keyspace-events (optional: NoConfig line)"},
	{"config|set", "shared memory: adding the missing notify-keyspace-events flags (optional: NoConfig line)"},
	{"exists", "persister dlq requeue: which prefix form the topic's stream has"},
	{"xadd", "persister dlq requeue only: the daemon never adds entries"},
}

// Optional commands: refused, the daemon works on (it says what the
// operator must set instead).
var optional = map[string]bool{"config|get": true, "config|set": true}

// Params chooses the user, password placeholder, prefix and database of a
// line.
type Params struct {
	User     string
	Password string
	Prefix   string
	// Form is PERSISTER_KEY_PREFIX_FORM: with doubled, the carrier
	// subscribes to the doubled prefix's channels.
	Form keyspace.Form
	DB   int
	// NoConfig leaves out CONFIG GET/SET: the operator sets
	// notify-keyspace-events on the server (the daemon logs the flags).
	NoConfig bool
}

// Default is what README shows: user persister, Chronow's prefix cw:, db 0.
var Default = Params{User: "persister", Password: "PASSWORD", Prefix: "cw:", Form: keyspace.FormAuto, DB: 0}

// Line returns the one-line ACL SETUSER for p: reset, the password, keys
// under the prefix only, the keyspace channel pattern exactly as the
// shared-memory carrier subscribes to it, and the commands above.
func Line(p Params) string {
	parts := []string{"ACL", "SETUSER", p.User, "reset", "on", ">" + p.Password,
		"~" + keyspace.EscapeGlob(p.Prefix) + "*",
		"&" + ChannelPattern(p.DB, keyspace.Layout{Prefix: p.Prefix, Form: p.Form}),
	}
	for _, c := range Commands {
		if p.NoConfig && optional[c.Name] {
			continue
		}
		parts = append(parts, "+"+c.Name)
	}
	return strings.Join(parts, " ")
}

// ChannelPattern is the keyspace notification pattern the shared-memory
// carrier subscribes to in database db (internal/sharedmem). Keys are
// permitted by the prefix alone (~cw:* covers cw:cw:... too); PSUBSCRIBE
// needs this exact pattern.
func ChannelPattern(db int, layout keyspace.Layout) string {
	return "__keyspace@" + strconv.Itoa(db) + "__:" + layout.Pattern(keyspace.KindSharedMemory)
}

// IsNoPerm reports whether err is an ACL refusal (NOPERM), also inside a
// script's error (Redis 7.0 words a refusal inside a script "ERR The user
// executing the script can't run this command or subcommand").
func IsNoPerm(err error) bool {
	if err == nil {
		return false
	}
	msg := err.Error()
	return redis.HasErrorPrefix(err, "NOPERM") || strings.Contains(msg, "NOPERM") ||
		strings.Contains(msg, "can't run this command or subcommand")
}

// Refusals records the commands the ACL refused, by name, until they
// succeed again. Its hook logs each refused command once, at error level,
// as a permission problem (not "Redis is down").
type Refusals struct {
	log *slog.Logger
	mu  sync.Mutex
	by  map[string]string // command -> error
}

// Watch adds the hook to rdb.
func Watch(rdb redis.UniversalClient, log *slog.Logger) *Refusals {
	r := &Refusals{log: log, by: map[string]string{}}
	rdb.AddHook(hook{r})
	return r
}

// Status returns "" when nothing required is refused, else the refused
// commands and Redis' words for each (for /readyz).
func (r *Refusals) Status() string {
	if r == nil {
		return ""
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.by) == 0 {
		return ""
	}
	var parts []string
	for _, n := range slices.Sorted(maps.Keys(r.by)) {
		parts = append(parts, n+": "+r.by[n])
	}
	return "refused by the Redis ACL (grant these commands, see README Security): " + strings.Join(parts, "; ")
}

func (r *Refusals) observe(cmd redis.Cmder, err error) {
	name := commandName(cmd)
	if err == nil {
		err = cmd.Err()
	}
	if optional[name] {
		return
	}
	if IsNoPerm(err) {
		r.mu.Lock()
		_, seen := r.by[name]
		r.by[name] = err.Error()
		r.mu.Unlock()
		if !seen {
			r.log.Error("the Redis ACL refuses a command the persister sends: not an outage, a missing permission; "+
				"grant it to the user (README, Security: ACL SETUSER line)", "command", name, "err", err.Error())
		}
		return
	}
	if err == nil || err == redis.Nil {
		r.mu.Lock()
		_, was := r.by[name]
		delete(r.by, name)
		r.mu.Unlock()
		if was {
			r.log.Info("the Redis ACL now allows the command", "command", name)
		}
	}
}

// commandName is the ACL name of cmd: container commands with their
// subcommand (xinfo|stream); a script call with its script (the refusal of
// one script says nothing of another's).
func commandName(cmd redis.Cmder) string {
	name := strings.ToLower(cmd.Name())
	switch name {
	case "evalsha", "eval":
		if args := cmd.Args(); len(args) > 1 {
			sum := sha1.Sum([]byte(fmt.Sprint(args[1])))
			if name == "evalsha" {
				return name + " " + truncate(fmt.Sprint(args[1]), 12)
			}
			return name + " " + hex.EncodeToString(sum[:])[:12]
		}
	case "xinfo", "xgroup", "config", "client", "script", "cluster":
		if args := cmd.Args(); len(args) > 1 {
			return name + "|" + strings.ToLower(fmt.Sprint(args[1]))
		}
	}
	return name
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

type hook struct{ r *Refusals }

func (h hook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h hook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.r.observe(cmd, err) // the client sets cmd's error after the hooks
		return err
	}
}

func (h hook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, c := range cmds {
			h.r.observe(c, nil)
		}
		return err
	}
}
