package acl

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

func TestRefusalsByCommand(t *testing.T) {
	ctx := context.Background()
	var logs bytes.Buffer
	r := &Refusals{log: slog.New(slog.NewTextHandler(&logs, nil)), by: map[string]string{}}
	noperm := errors.New("NOPERM this user has no permissions to run the 'xinfo|groups' command")
	cmd := func(args ...any) redis.Cmder { return redis.NewCmd(ctx, args...) }

	r.observe(cmd("xinfo", "groups", "cw:a:b:topic:t"), noperm)
	r.observe(cmd("xinfo", "groups", "cw:a:b:topic:u"), noperm)
	r.observe(cmd("config", "get", "notify-keyspace-events"), errors.New("NOPERM ... 'config|get'"))
	r.observe(cmd("evalsha", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 1, "k"), errors.New("NOPERM ... 'xgroup|setid' command script: ..."))
	// Redis 7.0's words for a refusal inside a script.
	r.observe(cmd("evalsha", "cccccccccccccccccccccccccccccccccccccccc", 1, "k"),
		errors.New("ERR The user executing the script can't run this command or subcommand script: cccc, on @user_script:1."))
	st := r.Status()
	if !strings.Contains(st, "xinfo|groups: NOPERM") || !strings.Contains(st, "evalsha aaaaaaaaaaaa: NOPERM") ||
		!strings.Contains(st, "evalsha cccccccccccc: ERR The user executing the script") || strings.Contains(st, "config") {
		t.Errorf("Status = %q", st)
	}
	if n := strings.Count(logs.String(), "command=xinfo|groups"); n != 1 {
		t.Errorf("xinfo|groups logged %d times, want once:\n%s", n, logs.String())
	}
	// Another script succeeding does not clear the refused one; the same
	// one succeeding does.
	r.observe(cmd("evalsha", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", 1, "k"), nil)
	if !strings.Contains(r.Status(), "evalsha aaaaaaaaaaaa") {
		t.Errorf("another script cleared the refusal: %q", r.Status())
	}
	r.observe(cmd("evalsha", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 1, "k"), nil)
	r.observe(cmd("evalsha", "cccccccccccccccccccccccccccccccccccccccc", 1, "k"), nil)
	r.observe(cmd("xinfo", "groups", "cw:a:b:topic:t"), redis.Nil)
	if st := r.Status(); st != "" {
		t.Errorf("after success: Status = %q", st)
	}
	if !strings.Contains(logs.String(), "the Redis ACL now allows the command") {
		t.Errorf("recovery not logged:\n%s", logs.String())
	}
	if IsNoPerm(errors.New("WRONGPASS invalid username-password pair")) || IsNoPerm(nil) {
		t.Error("IsNoPerm true for a non-ACL error")
	}
}
