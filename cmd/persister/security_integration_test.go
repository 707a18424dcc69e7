package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/chronow/persister/internal/acl"
	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/daemon"
	"github.com/chronow/persister/internal/e2e"
	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/promtext"
	"github.com/chronow/persister/internal/publisher"
	"github.com/chronow/persister/internal/requeue"
	"github.com/chronow/persister/internal/testenv"
)

// secret returns a random secret for one test.
func secret(t *testing.T, label string) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return label + "-" + hex.EncodeToString(b)
}

// aclSetUser creates the documented ACL user on a server with the line
// internal/acl generates (the line README shows, with the password).
func aclSetUser(ctx context.Context, t *testing.T, admin *redis.Client, p acl.Params) {
	t.Helper()
	var args []any
	for _, f := range strings.Fields(acl.Line(p)) {
		args = append(args, f)
	}
	if err := admin.Do(ctx, args...).Err(); err != nil {
		t.Fatalf("%s: %v", strings.Replace(acl.Line(p), p.Password, "PASSWORD", 1), err)
	}
}

// aclDenials returns the ACL LOG entries of user on a server.
func aclDenials(ctx context.Context, t *testing.T, admin *redis.Client, user string) []string {
	t.Helper()
	entries, err := admin.ACLLog(ctx, 100).Result()
	if err != nil {
		t.Fatalf("ACL LOG: %v", err)
	}
	var out []string
	for _, e := range entries {
		if e.Username == user {
			out = append(out, fmt.Sprintf("%s %s %q (context %s, count %d)", e.Reason, e.Object, lastCmd(e.ClientInfo), e.Context, e.Count))
		}
	}
	return out
}

// startDaemon runs a daemon in-process with the configuration of the
// environment, logging into buf, and waits until it serves HTTP on addr;
// stop ends it and returns Run's error.
func startDaemon(t *testing.T, buf io.Writer) (addr string, done <-chan error, stop func() error) {
	t.Helper()
	cfg, err := config.Load(context.Background())
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	log := slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	d, err := daemon.New(context.Background(), cfg, log, "test")
	if err != nil {
		t.Fatalf("daemon.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	go func() { ch <- d.Run(ctx) }()
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-ch:
			return err
		case <-time.After(60 * time.Second):
			return fmt.Errorf("daemon did not stop within 60s")
		}
	}
	t.Cleanup(func() { _ = stop() })
	e2e.Eventually(t, 30*time.Second, "HTTP address", func() (bool, string) {
		addr = d.HTTPAddr()
		return addr != "", "not listening"
	})
	return addr, ch, stop
}

// sumMetric adds the samples of a metric family in a text exposition.
func sumMetric(body, name string) float64 {
	sum, _ := promtext.Sum(body, name)
	return sum
}

func setEnv(t *testing.T, env map[string]string) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
}

// TestSecurityEndToEnd runs the daemon against a TLS-only redis-server
// (private CA, client certificate) as the documented least-privilege ACL
// user, and against FerretDB over TLS with a client certificate; then the
// tools (config, migrate, replay, dlq requeue) as the same user. Every
// entry is stored once, claims and lag and shared memory work, Redis'
// ACL LOG holds no refusal of the user, no NOPERM is logged, and no secret
// is in any log, /readyz, /metrics or `persister config`. The same daemon
// trusting another CA is not ready and says why, without exiting.
func TestSecurityEndToEnd(t *testing.T) {
	ctx := context.Background()
	pki := testenv.NewPKI(t)
	rs := testenv.StartRedis(t, testenv.WithRedisTLS(pki, true))
	admin := rs.Client(t)
	redisPW := secret(t, "redispw")
	p := acl.Default
	p.Password = redisPW
	aclSetUser(ctx, t, admin, p)

	ms := testenv.StartMongo(t, testenv.WithMongoTLS(pki))
	mc := ms.Client(t)
	// FerretDB's SQLite backend offers PLAIN only and checks nothing; the
	// credentials are here to prove they never leak.
	mongoPW := secret(t, "mongopw")
	mongoURI := strings.Replace(ms.URI, "mongodb://", "mongodb://persister:"+mongoPW+"@", 1) + "&authMechanism=PLAIN"
	tenants := []string{"acme", "globex"}
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "redis-password")
	if err := os.WriteFile(pwFile, []byte(redisPW+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"REDIS_URL":           "rediss://" + rs.Addr + "/0",
		"REDIS_USERNAME":      "persister",
		"REDIS_PASSWORD_FILE": pwFile,
		"REDIS_CA_CERT":       pki.CACert,
		"REDIS_TLS_CERT":      pki.ClientCert,
		"REDIS_TLS_KEY":       pki.ClientKey,
		"CHRONOS_CONFIG":      e2e.WriteChronos(t, mongoURI, tenants...),
	}
	for k, v := range e2e.Env(t, "", "", nil, nil) {
		if k != "REDIS_URL" && k != "CHRONOS_CONFIG" {
			env[k] = v
		}
	}
	for k, v := range map[string]string{
		"PERSISTER_CLAIM_MIN_IDLE":        "1s",
		"PERSISTER_CLAIM_INTERVAL":        "500ms",
		"PERSISTER_CONSUMER_IDLE_DELETE":  "1s",
		"PERSISTER_METRICS_INTERVAL":      "300ms",
		"PERSISTER_SM_RECONCILE_INTERVAL": "2s",
		"PERSISTER_SM_FLUSH_INTERVAL":     "100ms",
		"PERSISTER_CONSUMER":              "secure-1",
	} {
		env[k] = v
	}
	setEnv(t, env)

	pub := &publisher.Publisher{RDB: admin, Prefix: "cw:"}
	var ledger e2e.Ledger
	var msgs []publisher.Message
	for i := range 200 {
		msgs = append(msgs, publisher.Message{Tenant: tenants[i%2], Namespace: "app", Topic: []string{"orders", "audit"}[(i/2)%2], Payload: fmt.Sprintf(`{"i":%d}`, i)})
	}
	ids, err := pub.PublishBatch(ctx, msgs)
	if err != nil {
		t.Fatal(err)
	}
	ledger.Add(msgs, ids)
	// Keys with the prefix twice, as Chronow writes them when the app
	// passes redis.keyPrefix: covered by ~cw:* and the same channel pattern.
	doubled := []publisher.Message{}
	for i := range 20 {
		doubled = append(doubled, publisher.Message{Tenant: "globex", Namespace: "app", Topic: "doubled", Payload: fmt.Sprintf(`{"d":%d}`, i)})
	}
	if err := ledger.Publish(ctx, &publisher.Publisher{RDB: admin, Prefix: "cw:cw:"}, doubled); err != nil {
		t.Fatal(err)
	}
	// Entries left pending by a persister pod that is gone: claimed.
	orders := msgs[0].Key("cw:")
	if err := admin.XGroupCreate(ctx, orders, "persister", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := admin.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "persister", Consumer: "gone-pod", Streams: []string{orders, ">"}, Count: 5}).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := pub.PublishDeadLetter(ctx, publisher.DeadLetter{Tenant: "acme", Namespace: "app", Topic: "orders", OriginalMsgID: ids[0], Payload: `{"i":0}`, Reason: "boom", Deliveries: 3}); err != nil {
		t.Fatal(err)
	}
	if err := admin.Set(ctx, "cw:acme:app:sm:before", `{"v":1}`, 0).Err(); err != nil {
		t.Fatal(err)
	}
	// Chronow-shaped keys under another prefix: listed (SCAN), never read;
	// the ACL would refuse a read, and ACL LOG would show it.
	if _, err := (&publisher.Publisher{RDB: admin, Prefix: "other:"}).Publish(ctx, publisher.Message{Tenant: "acme", Namespace: "app", Topic: "orders", Payload: `1`}); err != nil {
		t.Fatal(err)
	}
	if err := admin.Set(ctx, "other:acme:app:sm:x", `1`, 0).Err(); err != nil {
		t.Fatal(err)
	}

	logs := &e2e.LogBuffer{T: t}
	addr, done, stop := startDaemon(t, logs)
	if err := admin.Set(ctx, "cw:globex:app:sm:live", `"live"`, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := admin.Set(ctx, "cw:cw:globex:app:sm:dbl", `"doubled"`, 0).Err(); err != nil {
		t.Fatal(err)
	}
	e2e.WaitStored(ctx, t, mc, &ledger, tenants, 90*time.Second)
	streams := e2e.StreamKeys(ledger.Records()[:len(msgs)], "cw:")
	streams = append(streams, doubled[0].Key("cw:cw:"))
	e2e.WaitNothingPending(ctx, t, admin, "persister", streams, 30*time.Second)
	smStored := func(tenant, key string) bool {
		n, err := mc.Database(e2e.DBName(tenant)).Collection(config.CollSharedMemory).CountDocuments(ctx, bson.D{{Key: "key", Value: key}})
		return err == nil && n == 1
	}
	e2e.Eventually(t, 30*time.Second, "shared memory (reconcile and live) and the dead letter stored", func() (bool, string) {
		dl, _ := mc.Database(e2e.DBName("acme")).Collection(config.CollDeadLetters).CountDocuments(ctx, bson.D{})
		return smStored("acme", "before") && smStored("globex", "live") && smStored("globex", "dbl") && dl == 1, fmt.Sprintf("dead letters %d", dl)
	})
	var metrics string
	e2e.Eventually(t, 30*time.Second, "lag measured and the gone pod's entries claimed", func() (bool, string) {
		_, body, err := e2e.HTTPGet(http.DefaultClient, "http://"+addr+"/metrics", "", "")
		metrics = body
		return err == nil && strings.Contains(body, "persister_stream_lag_entries{") &&
				sumMetric(body, "persister_entries_claimed_total") >= 5,
			fmt.Sprintf("claimed %v, err %v", sumMetric(body, "persister_entries_claimed_total"), err)
	})
	e2e.Eventually(t, 30*time.Second, "the gone pod's consumer deleted", func() (bool, string) {
		cs, err := admin.XInfoConsumers(ctx, orders, "persister").Result()
		for _, c := range cs {
			if c.Name == "gone-pod" {
				return false, "still there"
			}
		}
		return err == nil, fmt.Sprint(err)
	})
	code, ready, err := e2e.HTTPGet(http.DefaultClient, "http://"+addr+"/readyz", "", "")
	if err != nil || code != http.StatusOK {
		t.Fatalf("/readyz: %d %v %s", code, err, ready)
	}

	// The tools, as the same user over the same TLS connections.
	var toolOut strings.Builder
	tool := func(want int, args ...string) string {
		t.Helper()
		code, out, stderr := runTool(args...)
		toolOut.WriteString(out + stderr)
		if code != want {
			t.Fatalf("persister %s: exit %d, want %d\n%s\n%s", strings.Join(args, " "), code, want, out, stderr)
		}
		return out
	}
	cfgOut := tool(0, "config")
	if got := strings.TrimSpace(tool(0, "acl")); got != acl.Line(acl.Default) {
		t.Errorf("persister acl printed\n%s\nwant\n%s", got, acl.Line(acl.Default))
	}
	tool(0, "migrate")
	tool(0, "replay", "--quiet")
	tool(0, "replay", "--verify", "--quiet")
	var rq requeue.Report
	if out := tool(0, "dlq", "requeue", "--tenant", "acme", "--format", "json"); json.Unmarshal([]byte(out), &rq) != nil || rq.Requeued != 1 {
		t.Fatalf("dlq requeue: %s", out)
	}
	e2e.Eventually(t, 30*time.Second, "the requeued entry stored", func() (bool, string) {
		n := e2e.CountStored(ctx, t, mc, "acme")
		return n == 101, fmt.Sprintf("acme messages %d, want 101", n)
	})
	if err := stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}

	if den := aclDenials(ctx, t, admin, "persister"); len(den) > 0 {
		t.Errorf("Redis refused the documented ACL user:\n%s\n(add the command to internal/acl.Commands and README)", strings.Join(den, "\n"))
	}
	all := logs.String()
	if strings.Contains(all, "NOPERM") || strings.Contains(toolOut.String(), "NOPERM") {
		t.Errorf("NOPERM in the log")
	}
	for what, text := range map[string]string{"log": all, "tools": toolOut.String(), "config": cfgOut, "metrics": metrics, "readyz": ready} {
		if err := e2e.Redacted(text, redisPW, mongoPW, mongoURI, e2e.KeyMaterial(t, pki.ClientKey), e2e.KeyMaterial(t, pki.ServerKey)); err != nil {
			t.Errorf("%s: %v", what, err)
		}
	}
	if !strings.Contains(cfgOut, "persister:xxxxx@") {
		t.Errorf("config output does not show the redacted Mongo URI:\n%s", cfgOut)
	}
	select {
	case <-done:
	default:
	}

	// Another CA: the server does not verify. Not ready, says why, runs on.
	other := testenv.NewPKI(t)
	t.Setenv("REDIS_CA_CERT", other.CACert)
	t.Setenv("PERSISTER_CONSUMER", "secure-2")
	badLogs := &e2e.LogBuffer{T: t}
	addr2, done2, stop2 := startDaemon(t, badLogs)
	e2e.Eventually(t, 30*time.Second, "not ready, saying the certificate does not verify", func() (bool, string) {
		code, body, err := e2e.HTTPGet(http.DefaultClient, "http://"+addr2+"/readyz", "", "")
		ready = body
		return err == nil && code == http.StatusServiceUnavailable && strings.Contains(body, "certificate signed by unknown authority"), fmt.Sprintf("%d %s %v", code, body, err)
	})
	e2e.Eventually(t, 30*time.Second, "the reason in the log", func() (bool, string) {
		return strings.Contains(badLogs.String(), "certificate signed by unknown authority"), "not yet"
	})
	time.Sleep(2 * time.Second)
	select {
	case err := <-done2:
		t.Fatalf("daemon exited with an unverifiable Redis certificate: %v", err)
	default:
	}
	if err := stop2(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	for what, text := range map[string]string{"log": badLogs.String(), "readyz": ready} {
		if err := e2e.Redacted(text, redisPW, mongoPW, mongoURI); err != nil {
			t.Errorf("unknown CA %s: %v", what, err)
		}
	}
}

// TestSecurityClusterTLSACL runs the daemon against a TLS-only Redis
// Cluster (TLS bus too) as the documented ACL user, created on each node,
// with the doubled prefix form only (keys cw:cw:..., the channel pattern
// of that form).
func TestSecurityClusterTLSACL(t *testing.T) {
	ctx := context.Background()
	pki := testenv.NewPKI(t)
	cl := testenv.StartCluster(t, 3, testenv.WithRedisTLS(pki, true))
	redisPW := secret(t, "redispw")
	p := acl.Default
	p.Password = redisPW
	p.Form = keyspace.FormDoubled
	var admins []*redis.Client
	for _, n := range cl.Nodes {
		a := n.Client(t)
		aclSetUser(ctx, t, a, p)
		admins = append(admins, a)
	}
	ms := testenv.StartMongo(t, testenv.WithMongoTLS(pki))
	mc := ms.Client(t)
	tenants := []string{"acme", "globex"}
	env := e2e.Env(t, "", ms.URI, tenants, map[string]string{
		"REDIS_CLUSTER_NODES":        cl.NodesJSON(),
		"REDIS_TLS":                  "true",
		"REDIS_USERNAME":             "persister",
		"REDIS_PASSWORD":             redisPW,
		"REDIS_CA_CERT":              pki.CACert,
		"REDIS_TLS_CERT":             pki.ClientCert,
		"REDIS_TLS_KEY":              pki.ClientKey,
		"PERSISTER_METRICS_INTERVAL": "300ms",
		"PERSISTER_KEY_PREFIX_FORM":  "doubled",
	})
	delete(env, "REDIS_URL")
	setEnv(t, env)
	cc := cl.Client(t)
	pub := &publisher.Publisher{RDB: cc, Prefix: "cw:cw:"}
	var ledger e2e.Ledger
	var msgs []publisher.Message
	for i := range 120 {
		msgs = append(msgs, publisher.Message{Tenant: tenants[i%2], Namespace: []string{"a", "b", "c"}[i%3], Topic: "orders", Payload: fmt.Sprintf(`{"i":%d}`, i)})
	}
	if err := ledger.Publish(ctx, pub, msgs); err != nil {
		t.Fatal(err)
	}
	if err := cc.Set(ctx, "cw:cw:acme:a:sm:k", `1`, 0).Err(); err != nil {
		t.Fatal(err)
	}
	logs := &e2e.LogBuffer{T: t}
	addr, _, stop := startDaemon(t, logs)
	e2e.WaitStored(ctx, t, mc, &ledger, tenants, 90*time.Second)
	e2e.Eventually(t, 30*time.Second, "lag measured, shared memory carried", func() (bool, string) {
		_, body, err := e2e.HTTPGet(http.DefaultClient, "http://"+addr+"/metrics", "", "")
		n, _ := mc.Database(e2e.DBName("acme")).Collection(config.CollSharedMemory).CountDocuments(ctx, bson.D{})
		return err == nil && strings.Contains(body, "persister_stream_lag_entries{") && n == 1, fmt.Sprintf("sm docs %d, err %v", n, err)
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for i, a := range admins {
		if den := aclDenials(ctx, t, a, "persister"); len(den) > 0 {
			t.Errorf("node %d refused the documented ACL user:\n%s", i, strings.Join(den, "\n"))
		}
	}
	if all := logs.String(); strings.Contains(all, "NOPERM") {
		t.Errorf("NOPERM in the log")
	} else if err := e2e.Redacted(all, redisPW); err != nil {
		t.Error(err)
	}
}

// TestNoPermIsReportedByName runs the daemon as a user the documented line
// minus XINFO CONSUMERS (the claim sweep's idle-consumer clean-up): the
// refusal is logged once with the command's name,
// /readyz says which command, and the daemon keeps running.
func TestNoPermIsReportedByName(t *testing.T) {
	ctx := context.Background()
	rs := testenv.StartRedis(t)
	admin := rs.Client(t)
	ms := testenv.StartMongo(t)
	p := acl.Default
	p.Password = secret(t, "pw")
	aclSetUser(ctx, t, admin, p)
	if err := admin.Do(ctx, "ACL", "SETUSER", "persister", "-xinfo|consumers").Err(); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(rs.URL)
	u.User = url.UserPassword("persister", p.Password)
	setEnv(t, e2e.Env(t, u.String(), ms.URI, []string{"acme"}, map[string]string{"PERSISTER_CLAIM_INTERVAL": "200ms"}))
	pub := &publisher.Publisher{RDB: admin, Prefix: "cw:"}
	if _, err := pub.Publish(ctx, publisher.Message{Tenant: "acme", Namespace: "app", Topic: "orders", Payload: `1`}); err != nil {
		t.Fatal(err)
	}
	logs := &e2e.LogBuffer{T: t}
	addr, done, stop := startDaemon(t, logs)
	e2e.Eventually(t, 30*time.Second, "/readyz names the refused command", func() (bool, string) {
		code, body, err := e2e.HTTPGet(http.DefaultClient, "http://"+addr+"/readyz", "", "")
		return err == nil && code == http.StatusServiceUnavailable && strings.Contains(body, "xinfo|consumers") && strings.Contains(body, "refused by the Redis ACL"), body
	})
	time.Sleep(time.Second)
	all := logs.String()
	if n := strings.Count(all, "the Redis ACL refuses a command the persister sends"); n != 1 || !strings.Contains(all, "command=xinfo|consumers") {
		t.Errorf("want one refusal logged with command=xinfo|consumers, got %d:\n%s", n, all)
	}
	if strings.Contains(all, "redis read failed; retrying") {
		t.Errorf("a refusal reported as a Redis outage")
	}
	// Granted at runtime: ready again.
	if err := admin.Do(ctx, "ACL", "SETUSER", "persister", "+xinfo|consumers").Err(); err != nil {
		t.Fatal(err)
	}
	e2e.Eventually(t, 30*time.Second, "ready once granted", func() (bool, string) {
		code, body, err := e2e.HTTPGet(http.DefaultClient, "http://"+addr+"/readyz", "", "")
		return err == nil && code == http.StatusOK, body
	})
	select {
	case err := <-done:
		t.Fatalf("daemon exited: %v", err)
	default:
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if err := e2e.Redacted(logs.String(), p.Password); err != nil {
		t.Error(err)
	}
}

func lastCmd(ci *redis.ClientInfo) string {
	if ci == nil {
		return ""
	}
	return ci.LastCmd
}
