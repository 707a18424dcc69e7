// Package chaos is a randomized soak of the real persister binary: N
// replicas against redis-server (AOF on) and two FerretDB servers (one of
// them the database server of a single tenant), a producer that keeps an
// exact ledger of what Redis holds, and a nemesis that, on a schedule drawn
// from a seed, overlaps faults: replicas killed (-9) and stopped (SIGTERM)
// under load, servers paused (SIGSTOP), Redis restarted from its AOF, the
// tenant's database server killed, streams trimmed below the group's
// position, and latency, stalls and cut connections between the daemons and
// each server (Toxiproxy, in process). After a quiet period the checker
// compares the ledger with the databases, the group and the metrics, in the
// manner of Jepsen's total-queue checker.
package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/chronow/persister/internal/e2e"
	"github.com/chronow/persister/internal/testenv"
)

// Config is one run.
type Config struct {
	Seed     int64
	Duration time.Duration // the fault period
	Replicas int
	// Rate is the topic entries the producer writes per second.
	Rate int
	// Settle bounds the quiet period: how long the daemons get, faults
	// healed, to store everything.
	Settle time.Duration
	// Dir receives the servers' data, the logs, history.log and
	// summary.json; it is kept.
	Dir string
	// Bin is the persister binary; "" builds ./cmd/persister.
	Bin string

	// selfTest makes Run, after its check, break the outcome on purpose
	// (one stored entry deleted, one stray document, one shared-memory
	// value changed in the ledger) and check again into Result.selfTest:
	// the test of the checker itself.
	selfTest bool
}

func (c *Config) defaults() {
	if c.Duration == 0 {
		c.Duration = 10 * time.Minute
	}
	if c.Replicas == 0 {
		c.Replicas = 3
	}
	if c.Rate == 0 {
		c.Rate = 100
	}
	if c.Settle == 0 {
		c.Settle = 3 * time.Minute
	}
}

func (c *Config) grace() time.Duration { return 5 * time.Second }

// Result is what a run found.
type Result struct {
	Seed     int64          `json:"seed"`
	Duration string         `json:"duration"`
	Replicas int            `json:"replicas"`
	Faults   map[string]int `json:"faults_injected"`
	Summary  Summary        `json:"summary"`
	// Failures are the checker's findings; empty means the run passed.
	Failures []string `json:"failures"`
	Dir      string   `json:"dir"`

	selfTest *Result
}

// Summary is the total-queue count of a run.
type Summary struct {
	Published     int `json:"published"`       // ledger entries (topic + dead-letter streams)
	PublishedDLQ  int `json:"published_dlq"`   // of them dead-letter entries
	SMKeys        int `json:"sm_keys"`         // shared-memory keys
	SMSets        int `json:"sm_sets"`         // SETs confirmed
	OK            int `json:"ok"`              // stored once, right fields, own tenant's database
	Lost          int `json:"lost"`            // not stored, not explained by a trim
	LostToTrim    int `json:"lost_to_trim"`    // not stored, trimmed while pending
	Duplicated    int `json:"duplicated"`      // stored more than once (other collection or database)
	Unexpected    int `json:"unexpected"`      // documents without a ledger entry
	WrongFields   int `json:"wrong_fields"`    // stored with fields that differ from the ledger
	Trims         int `json:"trims"`           // XTRIMs that removed something
	Trimmed       int `json:"trimmed"`         // entries removed by them
	TrimmedPend   int `json:"trimmed_pending"` // of them pending when trimmed
	TrimmedStored int `json:"trimmed_pending_stored_anyway"`

	Metrics       e2e.Counters `json:"metrics"`      // summed over replicas and incarnations
	LostLogged    int          `json:"lost_logged"`  // "counted as lost" in the replicas' logs
	Unattributed  int          `json:"unattributed"` // documents no scrape counted as inserted
	SMWrong       int          `json:"sm_wrong"`     // keys whose warm copy is not the last value
	Pending       int64        `json:"pending"`      // the group's pending entries at the end
	Incarnations  int          `json:"incarnations"` // replica processes started
	ProducerRetry int          `json:"producer_retries"`
	SettledIn     string       `json:"settled_in"`
}

// Line is the one-line summary of a run.
func (r *Result) Line() string {
	s := r.Summary
	var kinds []string
	for k, v := range r.Faults {
		kinds = append(kinds, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(kinds)
	return fmt.Sprintf("seed %d, %s, %d replicas: faults %s; published %d (%d dead letters), stored ok %d, duplicates absorbed %d, lost-to-trim %d (persister counted %d, logged %d; %d trimmed while pending, %d of them stored anyway, of %d trimmed), lost otherwise %d, duplicated %d, unexpected %d, wrong fields %d; shared memory %d keys (%d sets), %d wrong; %d replica incarnations; settled in %s",
		r.Seed, r.Duration, r.Replicas, strings.Join(kinds, " "), s.Published, s.PublishedDLQ, s.OK, int(s.Metrics.Duplicate),
		s.LostToTrim, int(s.Metrics.Lost), s.LostLogged, s.TrimmedPend, s.TrimmedStored, s.Trimmed, s.Lost, s.Duplicated, s.Unexpected, s.WrongFields,
		s.SMKeys, s.SMSets, s.SMWrong, s.Incarnations, s.SettledIn)
}

// Repro is the command that replays the schedule of a run.
func (r *Result) Repro() string {
	return fmt.Sprintf("go run ./cmd/persister-chaos -seed %d -duration %s -replicas %d", r.Seed, r.Duration, r.Replicas)
}

// world is a run's servers, proxies, replicas and clients.
type world struct {
	cfg      Config
	redis    *server
	mongoA   *server
	mongoB   *server
	px       *proxies
	pxByName map[string]*toxiproxy.Proxy
	replicas []*replica
	rdb      *redis.Client
	mcA, mcB *mongo.Client
	releases []func() // reserved ports
	hist     *history

	mu    sync.Mutex
	exits []string // replica exits the nemesis did not cause
}

func (w *world) server(name string) *server {
	switch name {
	case "redis":
		return w.redis
	case "mongo-a":
		return w.mongoA
	default:
		return w.mongoB
	}
}

func (w *world) proxy(target string) *toxiproxy.Proxy {
	return w.pxByName[strings.TrimPrefix(target, "proxy:")]
}

func (w *world) replica(name string) *replica {
	for _, rp := range w.replicas {
		if rp.name == name {
			return rp
		}
	}
	return nil
}

// home returns the client of a tenant's database server.
func (w *world) home(tenant string) *mongo.Client {
	if tenant == tenants[len(tenants)-1] {
		return w.mcB
	}
	return w.mcA
}

func (w *world) close() {
	for _, rp := range w.replicas {
		rp.kill()
	}
	if w.rdb != nil {
		_ = w.rdb.Close()
	}
	for _, mc := range []*mongo.Client{w.mcA, w.mcB} {
		if mc != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = mc.Disconnect(ctx)
			cancel()
		}
	}
	if w.px != nil {
		w.px.close()
	}
	for _, r := range w.releases {
		r()
	}
	for _, sv := range []*server{w.redis, w.mongoA, w.mongoB} {
		if sv != nil {
			sv.close()
		}
	}
}

// Run runs one soak and checks it. An error means the run could not be
// carried out; the checker's findings are in Result.Failures.
func Run(ctx context.Context, cfg Config, log *slog.Logger) (*Result, error) {
	cfg.defaults()
	if cfg.Dir == "" {
		return nil, fmt.Errorf("chaos: no output directory")
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	hist, err := newHistory(filepath.Join(cfg.Dir, "history.log"))
	if err != nil {
		return nil, err
	}
	defer hist.close()
	res := &Result{Seed: cfg.Seed, Duration: cfg.Duration.String(), Replicas: cfg.Replicas, Faults: map[string]int{}, Dir: cfg.Dir}
	faults := Schedule(cfg.Seed, cfg.Duration, cfg.Replicas)
	logSchedule(cfg, hist, res, faults)
	if cfg.Bin == "" {
		if cfg.Bin, err = buildPersister(ctx, cfg.Dir, log); err != nil {
			return nil, err
		}
	}

	w := &world{cfg: cfg, px: newProxies(), pxByName: map[string]*toxiproxy.Proxy{}, hist: hist}
	defer w.close()
	if err := w.setup(ctx); err != nil {
		return nil, err
	}
	log.Info("servers and replicas up", "dir", cfg.Dir, "redis", w.redis.addr(), "mongo-a", w.mongoA.addr(), "mongo-b", w.mongoB.addr())
	stopScrape := w.scrape()
	defer stopScrape()

	led := newLedger()
	prod := &producer{rdb: w.rdb, rng: rand.New(rand.NewPCG(uint64(cfg.Seed), 0x70726f64)), ledger: led, hist: hist, //nolint:gosec // test data
		rate: cfg.Rate, lastID: map[string][2]int64{}}
	if err := w.faultPeriod(ctx, prod, faults, res, log); err != nil {
		return nil, err
	}

	c := &checker{w: w, led: led, hist: hist}
	if err := c.quietPeriod(ctx, res); err != nil {
		return nil, err
	}
	res.Summary.ProducerRetry = prod.retries
	for _, rp := range w.replicas {
		rp.mu.Lock()
		res.Summary.Incarnations += rp.incarnation
		rp.mu.Unlock()
	}
	hist.logf("result: %s", res.Line())
	for _, f := range res.Failures {
		hist.logf("FAILURE: %s", f)
	}
	if b, err := json.MarshalIndent(res, "", "  "); err == nil {
		_ = os.WriteFile(filepath.Join(cfg.Dir, "summary.json"), b, 0o644)
	}
	return res, nil
}

// logSchedule writes the run's parameters and fault schedule to the
// history and the schedule to schedule.json.
func logSchedule(cfg Config, hist *history, res *Result, faults []Fault) {
	hist.logf("seed %d duration %s replicas %d rate %d/s; repro: %s", cfg.Seed, cfg.Duration, cfg.Replicas, cfg.Rate, res.Repro())
	hist.logf("schedule (%d faults):", len(faults))
	for _, f := range faults {
		hist.logf("  %s", f)
	}
	if sj, err := json.MarshalIndent(faults, "", " "); err == nil {
		_ = os.WriteFile(filepath.Join(cfg.Dir, "schedule.json"), sj, 0o644)
	}
}

// buildPersister builds ./cmd/persister into dir and returns the binary's
// path.
func buildPersister(ctx context.Context, dir string, log *slog.Logger) (string, error) {
	log.Info("building the persister binary")
	return e2e.Build(ctx, dir)
}

// scrape keeps each replica's counters fresh (the last scrape before a kill
// is what that incarnation counts for) until the returned func is called.
func (w *world) scrape() (stop func()) {
	scrapeCtx, stopScrape := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	bg.Add(1)
	go func() {
		defer bg.Done()
		e2e.Every(scrapeCtx, 200*time.Millisecond, func() {
			for _, rp := range w.replicas {
				rp.counts.Refresh()
			}
		})
	}()
	return func() { stopScrape(); bg.Wait() }
}

// faultPeriod runs the producer while the nemesis plays faults, then heals
// everything and stops the producer.
func (w *world) faultPeriod(ctx context.Context, prod *producer, faults []Fault, res *Result, log *slog.Logger) error {
	prodStop := make(chan struct{})
	prodDone := make(chan bool, 1)
	go func() { prodDone <- prod.run(prodStop, 3*time.Minute) }()

	nem := &nemesis{w: w, hist: w.hist, counts: map[string]int{}}
	start := time.Now()
	w.hist.logf("fault period begins")
	log.Info("fault period", "duration", w.cfg.Duration, "faults", len(faults))
	nem.run(ctx, start, faults)
	if err := ctx.Err(); err != nil {
		close(prodStop)
		<-prodDone
		return err
	}
	// Heal: every fault has ended by now; make sure of it.
	for _, p := range w.px.all {
		p.Toxics.ResetToxics(context.Background())
	}
	for _, rp := range w.replicas {
		if !rp.running() {
			if err := rp.start(); err != nil {
				return err
			}
		}
	}
	close(prodStop)
	if ok := <-prodDone; !ok {
		res.Failures = append(res.Failures, "producer: writes not confirmed within 3 minutes of the fault period's end")
	}
	w.hist.logf("fault period over; producer stopped after %d entries; quiet period", len(prod.ledger.records()))
	log.Info("quiet period", "published", len(prod.ledger.records()))
	res.Faults = nem.counts
	res.Failures = append(res.Failures, nem.errs...)
	return nil
}

// quietPeriod waits for the replicas to settle, then checks the run (and,
// in the self test, that the checker catches broken data).
func (c *checker) quietPeriod(ctx context.Context, res *Result) error {
	w := c.w
	quiet := time.Now()
	settled := c.waitSettled(ctx, w.cfg.Settle)
	res.Summary.SettledIn = time.Since(quiet).Round(100 * time.Millisecond).String()
	if !settled {
		res.Failures = append(res.Failures, fmt.Sprintf("not settled within %s of the quiet period: %s", w.cfg.Settle, c.lastState))
	}
	for _, rp := range w.replicas {
		rp.counts.Refresh()
	}
	c.check(ctx, res)
	w.mu.Lock()
	res.Failures = append(res.Failures, w.exits...)
	w.mu.Unlock()
	if w.cfg.selfTest {
		st, err := c.breakAndCheck(ctx)
		if err != nil {
			return fmt.Errorf("self test: %w", err)
		}
		res.selfTest = st
	}
	return nil
}

func (w *world) setup(ctx context.Context) error {
	dir := w.cfg.Dir
	var err error
	if w.redis, err = startServer("redis", func() (*testenv.Server, error) {
		return testenv.LaunchRedis(filepath.Join(dir, "redis"), "--appendonly", "yes", "--appendfsync", "always")
	}); err != nil {
		return err
	}
	if w.mongoA, err = startServer("mongo-a", func() (*testenv.Server, error) {
		return testenv.LaunchFerretDB(filepath.Join(dir, "mongo-a"), "warn")
	}); err != nil {
		return err
	}
	if w.mongoB, err = startServer("mongo-b", func() (*testenv.Server, error) {
		return testenv.LaunchFerretDB(filepath.Join(dir, "mongo-b"), "warn")
	}); err != nil {
		return err
	}
	// The daemons reach each server through a proxy the nemesis poisons;
	// the producer and the checker through one it leaves alone.
	for _, p := range []struct {
		name string
		sv   *server
	}{{"redis", w.redis}, {"mongo-a", w.mongoA}, {"mongo-b", w.mongoB}, {"redis-clean", w.redis}, {"mongo-a-clean", w.mongoA}, {"mongo-b-clean", w.mongoB}} {
		port, release, err := reservePort()
		if err != nil {
			return err
		}
		w.releases = append(w.releases, release)
		px, err := w.px.add(p.name, "127.0.0.1:"+strconv.Itoa(port), p.sv)
		if err != nil {
			return err
		}
		w.pxByName[p.name] = px
	}
	w.rdb = redis.NewClient(&redis.Options{Addr: w.pxByName["redis-clean"].Listen, ReadTimeout: 3 * time.Second, WriteTimeout: 3 * time.Second, MaxRetries: -1})
	for _, m := range []struct {
		to **mongo.Client
		px string
	}{{&w.mcA, "mongo-a-clean"}, {&w.mcB, "mongo-b-clean"}} {
		mc, err := mongo.Connect(ctx, options.Client().ApplyURI("mongodb://"+w.pxByName[m.px].Listen+"/").SetDirect(true))
		if err != nil {
			return fmt.Errorf("mongo connect: %w", err)
		}
		*m.to = mc
	}
	chronos, err := writeChronos(dir, "mongodb://"+w.pxByName["mongo-a"].Listen+"/", "mongodb://"+w.pxByName["mongo-b"].Listen+"/")
	if err != nil {
		return err
	}
	for i := range w.cfg.Replicas {
		port, release, err := reservePort()
		if err != nil {
			return err
		}
		w.releases = append(w.releases, release)
		name := fmt.Sprintf("replica-%d", i)
		addr := "127.0.0.1:" + strconv.Itoa(port)
		env := map[string]string{
			"REDIS_URL":                       "redis://" + w.pxByName["redis"].Listen + "/0",
			"CHRONOS_CONFIG":                  chronos,
			"PERSISTER_CONSUMER":              name,
			"PERSISTER_HTTP_ADDR":             addr,
			"PERSISTER_DISCOVERY_INTERVAL":    "500ms",
			"PERSISTER_READ_BLOCK":            "200ms",
			"PERSISTER_RETRY_MAX_BACKOFF":     "1s",
			"PERSISTER_WRITE_TIMEOUT":         "3s",
			"PERSISTER_SHUTDOWN_GRACE":        w.cfg.grace().String(),
			"PERSISTER_CLAIM_MIN_IDLE":        "15s",
			"PERSISTER_CLAIM_INTERVAL":        "2s",
			"PERSISTER_BATCH_SIZE":            "100",
			"PERSISTER_LOG_FORMAT":            "json",
			"PERSISTER_SM_RECONCILE_INTERVAL": "5s",
			"PERSISTER_SM_FLUSH_INTERVAL":     "200ms",
		}
		rp := newReplica(name, w.cfg.Bin, addr, filepath.Join(dir, name+".log"), env)
		rp.onExit = func(name string, inc int, state string) {
			msg := fmt.Sprintf("%s incarnation %d exited by itself (%s); see %s", name, inc, state, rp.logPath)
			w.hist.logf("%s", msg)
			w.mu.Lock()
			w.exits = append(w.exits, msg)
			w.mu.Unlock()
		}
		if err := rp.start(); err != nil {
			return err
		}
		w.replicas = append(w.replicas, rp)
	}
	return nil
}

// writeChronos writes the chronos config: the first tenants on server A,
// the last alone on server B.
func writeChronos(dir, uriA, uriB string) (string, error) {
	c := e2e.Chronos{Conns: map[string]string{"mongo-a": uriA, "mongo-b": uriB}}
	for i, tn := range tenants {
		ref := "mongo-a"
		if i == len(tenants)-1 {
			ref = "mongo-b"
		}
		c.Tenants = append(c.Tenants, e2e.ChronosTenant{ID: tn, Conn: ref, DB: dbName(tn)})
	}
	p := filepath.Join(dir, "chronos.json")
	return p, c.Write(p)
}

// history is the run's history file: one timestamped line per event.
type history struct {
	mu    sync.Mutex
	f     *os.File
	start time.Time
}

func newHistory(path string) (*history, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	return &history{f: f, start: time.Now()}, nil
}

func (h *history) logf(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	fmt.Fprintf(h.f, "%s +%8.3fs %s\n", time.Now().UTC().Format("15:04:05.000"), time.Since(h.start).Seconds(), fmt.Sprintf(format, args...))
}

func (h *history) close() { _ = h.f.Close() }
