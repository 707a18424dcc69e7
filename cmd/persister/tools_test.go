package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/publisher"
	"github.com/chronow/persister/internal/replay"
	"github.com/chronow/persister/internal/requeue"
	"github.com/chronow/persister/internal/testenv"
)

// toolsEnv points the tools at servers (none need to run for bad flags)
// with tenants acme and globex.
func toolsEnv(t *testing.T, redisURL, mongoURI string, retention map[string]int) {
	t.Helper()
	tds := []map[string]any{
		{"tenantId": "acme", "dbConnRef": "mongo-primary", "dbName": "cm_acme", "retentionDays": retention},
		{"tenantId": "globex", "dbConnRef": "mongo-primary", "dbName": "cm_globex"},
	}
	doc := map[string]any{
		"dbConnections": map[string]any{"mongo-primary": map[string]string{"mongoUri": mongoURI}},
		"databases":     map[string]any{"messaging": map[string]any{"tenantDatabases": tds}},
	}
	data, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "chronos.json")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("REDIS_URL", redisURL)
	t.Setenv("CHRONOS_CONFIG", p)
	t.Setenv("PERSISTER_CONSUMER", "tools-test")
	t.Setenv("PERSISTER_LOG_FORMAT", "text")
}

func runTool(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// Bad flags are refused before any server is contacted, with exit code 2
// and a message naming the flag.
func TestToolsBadFlags(t *testing.T) {
	toolsEnv(t, "redis://127.0.0.1:1/0", "mongodb://127.0.0.1:1", nil)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"replay", "--tenant", "nope"}, `--tenant "nope": not a configured tenant (configured: "acme", "globex")`},
		{[]string{"replay", "--from", "200-0", "--to", "100-0"}, "--from 200-0 is after --to 100-0"},
		{[]string{"replay", "--from", "2026-11-25T20:00:00Z", "--to", "2026-11-25T19:00:00Z"}, "--from 2026-11-25T20:00:00Z is after --to"},
		{[]string{"replay", "--from", "abc"}, `--from "abc": not a stream id`},
		{[]string{"replay", "--to", "12-x"}, `--to "12-x": not a stream id`},
		{[]string{"replay", "--from", "2026-13-01T00:00:00Z"}, `--from "2026-13-01T00:00:00Z"`},
		{[]string{"replay", "--kind", "sm"}, `--kind "sm": want topic or dlq`},
		{[]string{"replay", "--kind", "topic,bogus"}, `--kind "bogus"`},
		{[]string{"replay", "--format", "xml"}, `--format "xml": want text or json`},
		{[]string{"replay", "--rate", "-1"}, "--rate -1: must be >= 0"},
		{[]string{"replay", "--page", "0"}, "--page 0"},
		{[]string{"replay", "--namespace", "a:b"}, `--namespace "a:b"`},
		{[]string{"replay", "extra"}, `unexpected argument "extra"`},
		{[]string{"replay", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"replay", "--verify", "--tenant", "nope"}, `--tenant "nope"`},
		{[]string{"migrate", "--tenant", "nope"}, `--tenant "nope": not a configured tenant`},
		{[]string{"migrate", "--format", "yaml"}, `--format "yaml"`},
		{[]string{"migrate", "now"}, `unexpected argument "now"`},
		{[]string{"dlq"}, "missing subcommand"},
		{[]string{"dlq", "list"}, `unknown subcommand "list"`},
		{[]string{"dlq", "requeue"}, "--tenant is required: 2 tenants are configured"},
		{[]string{"dlq", "requeue", "--tenant", "nope"}, `--tenant "nope": not a configured tenant`},
		{[]string{"dlq", "requeue", "--tenant", "acme", "--since", "yesterday"}, `--since "yesterday": not an RFC 3339 time`},
		{[]string{"dlq", "requeue", "--tenant", "acme", "--until", "2026-11-25"}, `--until "2026-11-25": not an RFC 3339 time`},
		{[]string{"dlq", "requeue", "--tenant", "acme", "--since", "2026-11-25T00:00:00Z", "--until", "2026-11-24T00:00:00Z"}, "--since 2026-11-25T00:00:00Z is not before --until"},
		{[]string{"dlq", "requeue", "--tenant", "acme", "--limit", "-3"}, "--limit -3"},
		{[]string{"dlq", "requeue", "--tenant", "acme", "--maxlen", "-1"}, "--maxlen -1"},
	}
	for _, tt := range tests {
		code, _, stderr := runTool(tt.args...)
		if code != 2 {
			t.Errorf("%v: exit code %d, want 2 (stderr %q)", tt.args, code, stderr)
		}
		if !strings.Contains(stderr, tt.want) {
			t.Errorf("%v: stderr %q lacks %q", tt.args, stderr, tt.want)
		}
	}
	for _, args := range [][]string{{"replay", "-h"}, {"migrate", "--help"}, {"dlq", "requeue", "-h"}, {"dlq", "help"}} {
		if code, _, stderr := runTool(args...); code != 0 || !strings.Contains(stderr, "usage: persister") {
			t.Errorf("%v: exit code %d, stderr %q; want 0 and the usage", args, code, stderr)
		}
	}
}

// The runbook, through the command line: migrate, publish, replay into a
// lost database, verify, then requeue a dead letter.
func TestToolsCommandLine(t *testing.T) {
	ctx := context.Background()
	rs, ms := testenv.StartRedis(t), testenv.StartMongo(t)
	toolsEnv(t, rs.URL, ms.URI, nil)
	mc := ms.Client(t)

	// migrate --dry-run on an empty server writes nothing.
	code, out, stderr := runTool("migrate", "--dry-run")
	if code != 0 || !strings.Contains(out, "tenant acme: database cm_acme on connection mongo-primary (dry run: nothing written)") ||
		!strings.Contains(out, "collections to create: messages") {
		t.Fatalf("migrate --dry-run: exit %d\n%s\n%s", code, out, stderr)
	}
	if names, _ := mc.ListDatabaseNames(ctx, bson.D{}); len(names) != 0 && strings.Contains(strings.Join(names, ","), "cm_") {
		t.Fatalf("migrate --dry-run created databases: %v", names)
	}
	// migrate, then migrate again (existing server), in JSON.
	if code, out, stderr = runTool("migrate"); code != 0 || !strings.Contains(out, "collections created:   messages") {
		t.Fatalf("migrate: exit %d\n%s\n%s", code, out, stderr)
	}
	code, out, stderr = runTool("migrate", "--tenant", "globex", "--format", "json")
	var reps []struct {
		Tenant              string
		CreatedCollections  []string
		ExistingCollections []string
		CreatedIndexes      []string
	}
	if err := json.Unmarshal([]byte(out), &reps); code != 0 || err != nil || len(reps) != 1 || reps[0].Tenant != "globex" ||
		len(reps[0].CreatedCollections)+len(reps[0].CreatedIndexes) != 0 || len(reps[0].ExistingCollections) != 4 {
		t.Fatalf("migrate again: exit %d, %v, %+v\n%s", code, err, reps, stderr)
	}

	// Entries in Redis; acme's database is empty (as if lost).
	p := publisher.Publisher{RDB: rs.Client(t), Prefix: "cw:", MaxLen: -1}
	var msgs []publisher.Message
	for i := range 300 {
		msgs = append(msgs, publisher.Message{Tenant: "acme", Namespace: []string{"app", "billing"}[i%2], Topic: "orders", Payload: `{"i":1}`})
	}
	ids, err := p.PublishBatch(ctx, msgs)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.PublishDeadLetter(ctx, publisher.DeadLetter{Tenant: "acme", Namespace: "app", Topic: "orders", OriginalMsgID: ids[0], Payload: `{"i":1}`, Reason: "boom"}); err != nil {
		t.Fatal(err)
	}
	if err := mc.Database("cm_acme").Drop(ctx); err != nil {
		t.Fatal(err)
	}

	// verify: everything missing, exit 1.
	code, out, _ = runTool("replay", "--verify", "--tenant", "acme", "--quiet")
	if code != 1 || !strings.Contains(out, "INCOMPLETE: 301 entries") {
		t.Fatalf("verify before replay: exit %d\n%s", code, out)
	}
	// replay, JSON report.
	code, out, stderr = runTool("replay", "--tenant", "acme", "--format", "json", "--page", "100")
	var rep replay.Report
	if err := json.Unmarshal([]byte(out), &rep); code != 0 || err != nil {
		t.Fatalf("replay: exit %d, %v\n%s\n%s", code, err, out, stderr)
	}
	if rep.Totals.Read != 301 || rep.Totals.Stored != 301 || len(rep.Streams) != 3 || rep.TopicsSynced != 2 {
		t.Fatalf("replay report: %+v", rep)
	}
	if !strings.Contains(stderr, "replay: 301/~301 entries (100%)") {
		t.Errorf("replay progress on stderr: %q", stderr)
	}
	// Again: all present. Then verify: complete, exit 0.
	code, out, _ = runTool("replay", "--tenant", "acme", "--quiet", "--kind", "topic")
	if code != 0 || !strings.Contains(strings.Join(strings.Fields(out), " "), "300 0 300 0 0 total") {
		t.Fatalf("second replay: exit %d\n%s", code, out)
	}
	code, out, _ = runTool("replay", "--verify", "--quiet", "--from", ids[0], "--to", ids[299])
	if code != 0 || !strings.Contains(out, "OK: every entry Redis holds in the range has its document.") {
		t.Fatalf("verify after replay: exit %d\n%s", code, out)
	}

	// dlq requeue: dry run lists, the real run adds and marks.
	code, out, _ = runTool("dlq", "requeue", "--tenant", "acme", "--dry-run", "--reason", "boom")
	if code != 0 || !strings.Contains(out, "dry run: 1 would be requeued") {
		t.Fatalf("dlq requeue --dry-run: exit %d\n%s", code, out)
	}
	code, out, _ = runTool("dlq", "requeue", "--tenant", "acme", "--format", "json")
	var rq requeue.Report
	if err := json.Unmarshal([]byte(out), &rq); code != 0 || err != nil || rq.Requeued != 1 {
		t.Fatalf("dlq requeue: exit %d, %v\n%s", code, err, out)
	}
	if n, _ := rs.Client(t).XLen(ctx, "cw:acme:app:topic:orders").Result(); n != 151 {
		t.Errorf("topic stream after requeue: %d entries, want 151", n)
	}
	code, out, _ = runTool("dlq", "requeue", "--tenant", "acme")
	if code != 0 || !strings.Contains(out, "0 requeued") {
		t.Errorf("second requeue: exit %d\n%s", code, out)
	}
}

// Retention on a server without TTL indexes: migrate says so, exit 1;
// --skip-retention accepts it.
func TestToolsMigrateRetentionUnsupported(t *testing.T) {
	ms := testenv.StartMongo(t)
	toolsEnv(t, "redis://127.0.0.1:1/0", ms.URI, map[string]int{config.CollMessages: 30})
	code, out, stderr := runTool("migrate")
	if code != 1 || !strings.Contains(out, "messages: 30 days, TTL index retention_ttl on firstSeenAt (expireAfterSeconds 2592000): UNSUPPORTED") ||
		!strings.Contains(stderr, "the server does not support TTL indexes: retention is not enforced") || !strings.Contains(stderr, "--skip-retention") {
		t.Fatalf("migrate with retention: exit %d\n%s\n%s", code, out, stderr)
	}
	if code, out, stderr = runTool("migrate", "--skip-retention"); code != 0 || !strings.Contains(out, "SKIPPED") {
		t.Fatalf("migrate --skip-retention: exit %d\n%s\n%s", code, out, stderr)
	}
}
