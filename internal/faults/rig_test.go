package faults_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/chronow/persister/internal/e2e"
	"github.com/chronow/persister/internal/promtext"
	"github.com/chronow/persister/internal/publisher"
	"github.com/chronow/persister/internal/testenv"
)

const (
	prefix = "cw:"
	group  = "persister"
)

var (
	namespaces = []string{"payments", "default"}
	topics     = []string{"orders", "billing:eu", "audit"}
	// defaultTenants are the tenants of every row (18 streams in all).
	defaultTenants = []string{"acme", "globex", "initech"}
)

// bin is the persister binary, built once by TestMain.
var bin string

// rows collects the per-row summary lines, printed at the end.
var rows struct {
	mu    sync.Mutex
	lines []string
}

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "persister-faults-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if bin, err = e2e.Build(context.Background(), dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := m.Run()
	rows.mu.Lock()
	sort.Strings(rows.lines)
	table := "fault matrix results:\n" + strings.Join(rows.lines, "\n") + "\n"
	rows.mu.Unlock()
	fmt.Print(table)
	if p := os.Getenv("PERSISTER_FAULTS_REPORT"); p != "" {
		if err := os.WriteFile(p, []byte(table), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	return code
}

// rig is one row's world: servers, tenants, the ledger, the replicas.
type rig struct {
	t       *testing.T
	row     string
	redis   *testenv.Redis
	rdb     *redis.Client
	mongos  []*testenv.Mongo
	mcs     []*mongo.Client
	tenants []string
	home    map[string]int // tenant -> index in mongos
	chronos string
	pub     *publisher.Publisher
	ledger  e2e.Ledger

	mu       sync.Mutex
	replicas []*replica
	excused  map[string]string // "tenant/docID" -> why it may be missing
	seq      int
}

type rigOpts struct {
	redis      []testenv.RedisOption
	mongos     int  // Mongo servers; tenants are spread over them (default 1)
	mongoLater bool // prepare the Mongo servers without starting them
	tenants    []string
}

func newRig(t *testing.T, row string, o rigOpts) *rig {
	t.Helper()
	if o.mongos == 0 {
		o.mongos = 1
	}
	if o.tenants == nil {
		o.tenants = defaultTenants
	}
	r := &rig{t: t, row: row, tenants: o.tenants, home: map[string]int{}, excused: map[string]string{}}
	r.redis = testenv.StartRedis(t, o.redis...)
	r.rdb = r.redis.Client(t)
	for range o.mongos {
		var m *testenv.Mongo
		if o.mongoLater {
			m = testenv.StartMongoLater(t)
		} else {
			m = testenv.StartMongo(t)
		}
		r.mongos = append(r.mongos, m)
		r.mcs = append(r.mcs, m.Client(t))
	}
	// With two servers the last tenant lives alone on the second one.
	for i, tn := range r.tenants {
		r.home[tn] = 0
		if o.mongos > 1 && i == len(r.tenants)-1 {
			r.home[tn] = 1
		}
	}
	r.chronos = r.writeChronos()
	r.pub = &publisher.Publisher{RDB: r.rdb, Prefix: prefix, MaxLen: -1}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.scrapeLoop(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

func (r *rig) writeChronos() string { return r.writeChronosWith(nil) }

// writeChronosWith writes a chronos config; uris gives some tenants a
// connection of their own with that URI.
func (r *rig) writeChronosWith(uris map[string]string) string {
	c := e2e.Chronos{Conns: map[string]string{}}
	for i, m := range r.mongos {
		c.Conns[fmt.Sprintf("mongo-%d", i)] = m.URI
	}
	for _, tn := range r.tenants {
		ref := fmt.Sprintf("mongo-%d", r.home[tn])
		if u, ok := uris[tn]; ok {
			ref = "own-" + tn
			c.Conns[ref] = u
		}
		c.Tenants = append(c.Tenants, e2e.ChronosTenant{ID: tn, Conn: ref, DB: e2e.DBName(tn)})
	}
	p := filepath.Join(r.t.TempDir(), "chronos.json")
	if err := c.Write(p); err != nil {
		r.t.Fatal(err)
	}
	return p
}

// message k of the row's sequence, spread over tenants, namespaces, topics.
func (r *rig) message(k, payloadBytes int) publisher.Message {
	payload := fmt.Sprintf(`{"seq":%d,"row":%q,"big":9007199254740993`, k, r.row)
	if pad := payloadBytes - len(payload) - 10; pad > 0 {
		payload += `,"pad":"` + strings.Repeat("x", pad) + `"`
	}
	payload += "}"
	return e2e.Spread{Tenants: r.tenants, Namespaces: namespaces, Topics: topics}.Message(k, payload, fmt.Sprintf("%s-%d", r.row, k))
}

// publish adds n entries and records their ids in the ledger.
func (r *rig) publish(n, payloadBytes int) error {
	r.mu.Lock()
	start := r.seq
	r.seq += n
	r.mu.Unlock()
	ms := make([]publisher.Message, n)
	for i := range ms {
		ms[i] = r.message(start+i, payloadBytes)
	}
	return r.ledger.Publish(context.Background(), r.pub, ms)
}

func (r *rig) mustPublish(n, payloadBytes int) {
	r.t.Helper()
	if err := r.publish(n, payloadBytes); err != nil {
		r.t.Fatalf("publish: %v", err)
	}
}

// producer publishes a steady load until stopped; Pause/Resume hold it
// while a fault makes Redis unusable (ids of a half-done pipeline would be
// unknown).
type producer struct {
	r    *rig
	gate sync.Mutex
	stop chan struct{}
	done chan struct{}
}

func (r *rig) produce(batch int, every time.Duration, payloadBytes int) *producer {
	p := &producer{r: r, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			p.gate.Lock()
			err := r.publish(batch, payloadBytes)
			p.gate.Unlock()
			if err != nil {
				r.t.Errorf("producer: %v", err)
				return
			}
		}
	}()
	r.t.Cleanup(p.Stop)
	return p
}

func (p *producer) Pause()  { p.gate.Lock() }
func (p *producer) Resume() { p.gate.Unlock() }

// Stop ends the producer (idempotent).
func (p *producer) Stop() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

// replica is one persister process with a fixed metrics port; its counters
// are kept over its incarnations (each as of its last scrape).
type replica struct {
	*e2e.Proc
	*e2e.Counts[e2e.Counters]
	name string
	addr string
}

// env returns the daemon environment of a replica: short intervals, and
// claims after 2s of idleness.
func (r *rig) env(name, addr string, extra map[string]string) map[string]string {
	env := e2e.Env(r.t, r.redis.URL, r.mongos[0].URI, r.tenants, map[string]string{
		"CHRONOS_CONFIG":              r.chronos,
		"PERSISTER_CONSUMER":          name,
		"PERSISTER_HTTP_ADDR":         addr,
		"PERSISTER_CLAIM_MIN_IDLE":    "2s",
		"PERSISTER_CLAIM_INTERVAL":    "500ms",
		"PERSISTER_BATCH_SIZE":        "200",
		"PERSISTER_RETRY_MAX_BACKOFF": "1s",
		// Generous: under `make test` the machine is shared with other
		// packages, and a write that times out while it still lands is
		// written again. Rows that stop MongoDB set a short one.
		"PERSISTER_WRITE_TIMEOUT": "20s",
	})
	for k, v := range extra {
		env[k] = v
	}
	return env
}

func (r *rig) startReplica(name string, extra map[string]string) *replica {
	r.t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(r.t))
	rp := &replica{name: name, addr: addr, Counts: e2e.NewCounts(addr, 3*time.Second, e2e.ParseCounters, e2e.Counters.Plus)}
	rp.Started()
	rp.Proc = e2e.StartProc(r.t, bin, r.env(name, addr, extra))
	r.mu.Lock()
	r.replicas = append(r.replicas, rp)
	r.mu.Unlock()
	return rp
}

// kill sends SIGKILL (after a last scrape).
func (rp *replica) kill() {
	rp.Refresh()
	rp.Stopped()
	rp.Proc.Kill()
}

// term sends SIGTERM and waits; it returns the exit code.
func (rp *replica) term(timeout time.Duration) (int, error) {
	rp.Refresh()
	rp.Stopped()
	return rp.Proc.Term(timeout)
}

// restart starts a new incarnation.
func (rp *replica) restart() {
	rp.Started()
	rp.Proc.Start()
}

// get GETs path from the replica.
func (rp *replica) get(path string) (int, string, error) {
	return rp.Get(context.Background(), path)
}

// metricValue returns the sum of the samples of one metric family.
func (rp *replica) metricValue(family string) (float64, error) {
	_, body, err := rp.get("/metrics")
	if err != nil {
		return 0, err
	}
	sum, found := promtext.Sum(body, family)
	if !found {
		return 0, fmt.Errorf("metric %s not found", family)
	}
	return sum, nil
}

// ready returns the /readyz status code and body.
func (rp *replica) ready() (int, string) {
	code, body, err := rp.get("/readyz")
	if err != nil {
		return 0, err.Error()
	}
	return code, strings.TrimSpace(body)
}

// scrapeLoop keeps every live replica's counters fresh, so a SIGKILL loses
// at most the last fraction of a second of counts.
func (r *rig) scrapeLoop(ctx context.Context) {
	e2e.Every(ctx, 250*time.Millisecond, func() {
		for _, rp := range r.replicaList() {
			rp.Refresh()
		}
	})
}

// replicaList returns a copy of the rig's replicas.
func (r *rig) replicaList() []*replica {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*replica(nil), r.replicas...)
}

func (r *rig) totals() e2e.Counters {
	var c e2e.Counters
	for _, rp := range r.replicaList() {
		rp.Refresh()
		c = c.Plus(rp.Totals())
	}
	return c
}

// excuse records that a ledger entry may be missing, and why.
func (r *rig) excuse(rec e2e.Record, why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.excused[rec.Msg.Tenant+"/"+rec.DocID()] = why
}

func (r *rig) streams() []string { return e2e.StreamKeys(r.ledger.Records(), prefix) }

// caughtUp reports whether the group has delivered every entry of every
// stream and nothing is pending.
func (r *rig) caughtUp(ctx context.Context) (bool, string) {
	for _, s := range r.streams() {
		info, err := r.rdb.XInfoStream(ctx, s).Result()
		if err != nil {
			if strings.Contains(err.Error(), "no such key") {
				continue
			}
			return false, fmt.Sprintf("xinfo stream %s: %v", s, err)
		}
		groups, err := r.rdb.XInfoGroups(ctx, s).Result()
		if err != nil {
			return false, fmt.Sprintf("xinfo groups %s: %v", s, err)
		}
		found := false
		for _, g := range groups {
			if g.Name != group {
				continue
			}
			found = true
			if g.Pending != 0 || g.LastDeliveredID != info.LastGeneratedID {
				return false, fmt.Sprintf("%s: pending %d, delivered up to %s of %s", s, g.Pending, g.LastDeliveredID, info.LastGeneratedID)
			}
		}
		if !found {
			return false, fmt.Sprintf("%s: no group %q", s, group)
		}
	}
	return true, ""
}

// verify compares the ledger with every tenant database.
func (r *rig) verify(ctx context.Context) e2e.Report { return r.verifyLedger(ctx, &r.ledger) }

// verifyLedger compares a ledger with the databases of its tenants.
func (r *rig) verifyLedger(ctx context.Context, l *e2e.Ledger) e2e.Report {
	in := map[string]bool{}
	for _, rec := range l.Records() {
		in[rec.Msg.Tenant] = true
	}
	var all e2e.Report
	for i, mc := range r.mcs {
		var sub e2e.Ledger
		var tenants []string
		for _, tn := range r.tenants {
			if r.home[tn] == i && in[tn] {
				tenants = append(tenants, tn)
			}
		}
		for _, rec := range l.Records() {
			if r.home[rec.Msg.Tenant] == i {
				sub.Add([]publisher.Message{rec.Msg}, []string{rec.ID})
			}
		}
		rep := verifyDB(ctx, r.t, mc, &sub, tenants)
		all.Expected += rep.Expected
		all.Stored += rep.Stored
		all.Missing = append(all.Missing, rep.Missing...)
		all.Unexpected = append(all.Unexpected, rep.Unexpected...)
		all.CrossTenant = append(all.CrossTenant, rep.CrossTenant...)
	}
	return all
}

// result is one row's summary line.
type result struct {
	published, stored int
	counters          e2e.Counters
	excused           int            // ledger entries not stored, each with a reason
	lostWhy           map[string]int // reason -> count
	recover           time.Duration
	note              string
}

// settle waits until the group has caught up (everything read and acked,
// so stored), then checks the databases against the ledger: every entry
// stored once in its own tenant's database or excused, nothing unexpected,
// nothing cross-tenant. since is when the fault ended (time to recover is
// measured from it).
func (r *rig) settle(since time.Time, timeout time.Duration) result {
	r.t.Helper()
	ctx := context.Background()
	e2e.Eventually(r.t, timeout, "the group caught up with every stream (nothing pending)", func() (bool, string) {
		return r.caughtUp(ctx)
	})
	took := time.Since(since)
	rep := r.verify(ctx)
	r.mu.Lock()
	excused := map[string]string{}
	for k, v := range r.excused {
		excused[k] = v
	}
	r.mu.Unlock()
	var missing []string
	excusedMissing := 0
	why := map[string]int{}
	for _, m := range rep.Missing {
		if reason, ok := excused[m]; ok {
			excusedMissing++
			why[reason]++
			continue
		}
		missing = append(missing, m)
	}
	if len(missing) > 0 || len(rep.Unexpected) > 0 || len(rep.CrossTenant) > 0 {
		r.t.Fatalf("%s: %d missing without a reason %v, unexpected %v, cross-tenant %v (report: %s)",
			r.row, len(missing), clip(missing), clip(rep.Unexpected), clip(rep.CrossTenant), rep)
	}
	if rep.Stored+excusedMissing != rep.Expected {
		r.t.Fatalf("%s: stored %d + excused %d != expected %d", r.row, rep.Stored, excusedMissing, rep.Expected)
	}
	n, err := e2e.Pending(ctx, r.rdb, group, r.existingStreams(ctx))
	if err != nil || n != 0 {
		r.t.Fatalf("%s: pending %d (err %v), want 0", r.row, n, err)
	}
	// No row publishes bad input: a dead letter would mean a good entry was
	// taken for poison (e.g. delivery counts inflated by claims).
	for _, tn := range r.tenants {
		dl, err := r.mcs[r.home[tn]].Database(e2e.DBName(tn)).Collection("dead_letters").CountDocuments(ctx, bson.D{})
		if err != nil || dl != 0 {
			r.t.Errorf("%s: tenant %s has %d dead letters (err %v), want 0", r.row, tn, dl, err)
		}
	}
	return result{published: r.ledger.Len(), stored: rep.Stored, counters: r.totals(), excused: excusedMissing, lostWhy: why, recover: took}
}

func (r *rig) existingStreams(ctx context.Context) []string {
	var out []string
	for _, s := range r.streams() {
		if n, _ := r.rdb.Exists(ctx, s).Result(); n == 1 {
			out = append(out, s)
		}
	}
	return out
}

// report prints the row's line and keeps it for the final table.
func (r *rig) report(fault string, res result) {
	lost := fmt.Sprintf("%d", res.excused)
	if res.excused > 0 || res.counters.Lost+res.counters.LostUnread > 0 {
		var parts []string
		for reason, n := range res.lostWhy {
			parts = append(parts, fmt.Sprintf("%d %s", n, reason))
		}
		sort.Strings(parts)
		parts = append(parts, fmt.Sprintf("persister_entries_lost_total trimmed_before_stored %d, trimmed_before_read %d",
			int(res.counters.Lost), int(res.counters.LostUnread)))
		lost += " (" + strings.Join(parts, "; ") + ")"
	}
	line := fmt.Sprintf("row %-8s %-44s published %6d  stored %6d  duplicates %5d  lost %s  recovered in %s",
		r.row, fault, res.published, res.stored, int(res.counters.Duplicate), lost, res.recover.Round(10*time.Millisecond))
	if res.note != "" {
		line += "  [" + res.note + "]"
	}
	r.t.Log(line)
	rows.mu.Lock()
	rows.lines = append(rows.lines, line)
	rows.mu.Unlock()
}

func clip(s []string) []string {
	if len(s) > 5 {
		return s[:5]
	}
	return s
}

// procStatus reads VmRSS and VmHWM (kB) of a process.
func procStatus(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = v
		case "VmHWM:":
			hwm = v
		}
	}
	return rss, hwm, nil
}

// consumerPending returns how many entries are pending on one consumer,
// over all streams.
func (r *rig) consumerPending(ctx context.Context, consumer string) (int64, []string) {
	var total int64
	var ids []string
	for _, s := range r.streams() {
		ext, err := r.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{
			Stream: s, Group: group, Start: "-", End: "+", Count: 100000, Consumer: consumer,
		}).Result()
		if err != nil {
			continue
		}
		total += int64(len(ext))
		for _, p := range ext {
			ids = append(ids, s+"/"+p.ID)
		}
	}
	return total, ids
}

// verifyDB is e2e.Verify made robust to FerretDB's connection-bound
// cursors: after a server restart a getMore can land on another pooled
// connection and fail with CursorNotFound. It reads each collection in one
// batch and retries a failed pass.
func verifyDB(ctx context.Context, t *testing.T, mc *mongo.Client, l *e2e.Ledger, tenants []string) e2e.Report {
	t.Helper()
	var err error
	for attempt := range 5 {
		var rep e2e.Report
		if rep, err = e2e.VerifyOnce(ctx, mc, l, tenants); err == nil {
			return rep
		}
		time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
	}
	t.Fatalf("verify: %v", err)
	return e2e.Report{}
}
