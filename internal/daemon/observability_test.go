package daemon_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/chronow/persister/internal/e2e"
	"github.com/chronow/persister/internal/message"
	"github.com/chronow/persister/internal/publisher"
	"github.com/chronow/persister/internal/testenv"
)

// obsSample is one line of a /metrics scrape.
type obsSample struct {
	name   string
	labels map[string]string
	value  float64
}

// obsScrape is a parsed /metrics text page.
type obsScrape struct {
	raw     string
	types   map[string]string // family name -> counter, gauge, histogram...
	samples []obsSample
}

func scrapeMetrics(addr string) (obsScrape, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return obsScrape{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return obsScrape{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return obsScrape{}, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return parseMetrics(string(body))
}

// eventuallyScraped scrapes addr's /metrics until cond holds of a scrape
// (see e2e.Eventually) and returns that scrape.
func eventuallyScraped(t *testing.T, addr string, timeout time.Duration, what string, cond func(obsScrape) (bool, string)) obsScrape {
	t.Helper()
	var last obsScrape
	e2e.Eventually(t, timeout, what, func() (bool, string) {
		s, err := scrapeMetrics(addr)
		if err != nil {
			return false, err.Error()
		}
		last = s
		return cond(s)
	})
	return last
}

// backlog returns the summed stream lag and pending entries and the largest
// oldest unacknowledged age of a scrape.
func (s obsScrape) backlog() (lag, pending, age float64) {
	return s.sum("persister_stream_lag_entries"), s.sum("persister_stream_pending_entries"), s.max("persister_oldest_unacked_age_seconds")
}

// parseMetrics reads the Prometheus text format (the subset client_golang
// writes: one sample per line, label values quoted with \\ \" \n escapes).
func parseMetrics(text string) (obsScrape, error) {
	s := obsScrape{raw: text, types: map[string]string{}}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			s.types[f[2]] = f[3]
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		smp := obsSample{labels: map[string]string{}}
		rest := line
		if i := strings.IndexAny(line, "{ "); i >= 0 && line[i] == '{' {
			smp.name = line[:i]
			rest = line[i+1:]
			for !strings.HasPrefix(rest, "}") {
				eq := strings.Index(rest, `="`)
				if eq < 0 {
					return s, fmt.Errorf("bad labels in %q", line)
				}
				name := strings.TrimPrefix(rest[:eq], ",")
				rest = rest[eq+2:]
				var val strings.Builder
				for len(rest) > 0 && rest[0] != '"' {
					if rest[0] == '\\' && len(rest) > 1 {
						switch rest[1] {
						case 'n':
							val.WriteByte('\n')
						default:
							val.WriteByte(rest[1])
						}
						rest = rest[2:]
						continue
					}
					val.WriteByte(rest[0])
					rest = rest[1:]
				}
				if rest == "" {
					return s, fmt.Errorf("unterminated label value in %q", line)
				}
				smp.labels[name] = val.String()
				rest = strings.TrimPrefix(rest[1:], ",")
			}
			rest = strings.TrimSpace(rest[1:])
		} else {
			sp := strings.IndexByte(line, ' ')
			if sp < 0 {
				return s, fmt.Errorf("bad sample %q", line)
			}
			smp.name, rest = line[:sp], strings.TrimSpace(line[sp+1:])
		}
		v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
		if err != nil {
			return s, fmt.Errorf("bad value in %q: %w", line, err)
		}
		smp.value = v
		s.samples = append(s.samples, smp)
	}
	return s, sc.Err()
}

func (s obsScrape) match(name string, kv []string) []obsSample {
	var out []obsSample
next:
	for _, smp := range s.samples {
		if smp.name != name {
			continue
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if smp.labels[kv[i]] != kv[i+1] {
				continue next
			}
		}
		out = append(out, smp)
	}
	return out
}

// sum adds the samples of name whose labels include the kv pairs.
func (s obsScrape) sum(name string, kv ...string) float64 {
	var t float64
	for _, smp := range s.match(name, kv) {
		t += smp.value
	}
	return t
}

// max is the largest such sample (-1 when there is none).
func (s obsScrape) max(name string, kv ...string) float64 {
	m := -1.0
	for _, smp := range s.match(name, kv) {
		m = max(m, smp.value)
	}
	return m
}

// lines returns the scrape lines of the given families, for the test log.
func (s obsScrape) lines(families ...string) string {
	var b strings.Builder
	for _, line := range strings.Split(s.raw, "\n") {
		for _, f := range families {
			if strings.HasPrefix(line, f+"{") || strings.HasPrefix(line, f+" ") {
				b.WriteString(line + "\n")
				break
			}
		}
	}
	return b.String()
}

func waitAddr(t *testing.T, r *e2e.Running) string {
	t.Helper()
	var addr string
	e2e.Eventually(t, 20*time.Second, "HTTP server bound", func() (bool, string) {
		addr = r.D.HTTPAddr()
		return addr != "", "no address yet"
	})
	return addr
}

// pauseMongo stops the server (SIGSTOP) and returns resume, to be called
// once; a test that ends before calling it has the server resumed at
// cleanup.
func pauseMongo(t *testing.T, ms *testenv.Mongo) (resume func()) {
	ms.Pause(t)
	resume = sync.OnceFunc(func() { ms.Resume(t) })
	t.Cleanup(resume)
	return resume
}

func obsMessages(tenants []string, topics []string, n int) []publisher.Message {
	out := make([]publisher.Message, n)
	for i := range out {
		out[i] = publisher.Message{
			Tenant:    tenants[i%len(tenants)],
			Namespace: "default",
			Topic:     topics[(i/len(tenants))%len(topics)],
			Payload:   fmt.Sprintf(`{"seq":%d}`, i),
		}
	}
	return out
}

func getStatus(addr, path string) (int, string) {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var obsFamilies = []string{
	"persister_stream_lag_entries", "persister_stream_pending_entries", "persister_oldest_unacked_age_seconds",
	"persister_entries_stored_total", "persister_entries_lost_total",
}

// While MongoDB is stopped a backlog shows as lag + pending with a growing
// oldest age; once MongoDB is back, both fall to 0 and the stored counter
// equals what was published.
func TestMetricsFollowABacklogDraining(t *testing.T) {
	ctx := context.Background()
	rs, ms, rdb, _ := e2e.StartServers(t)
	tenants := []string{"obs-a", "obs-b"}
	pub := &publisher.Publisher{RDB: rdb, Prefix: "cw:"}
	const n = 1200
	if _, err := pub.PublishBatch(ctx, obsMessages(tenants, []string{"orders", "audit", "billing"}, n)); err != nil {
		t.Fatal(err)
	}

	resume := pauseMongo(t, ms)
	run := e2e.Start(t, e2e.Env(t, rs.URL, ms.URI, tenants, map[string]string{"PERSISTER_METRICS_INTERVAL": "200ms"}))
	addr := waitAddr(t, run)

	if code, body := getStatus(addr, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d %q, want 200", code, body)
	}
	backlog := eventuallyScraped(t, addr, 60*time.Second, "the whole backlog as lag+pending, oldest age >= 1s", func(s obsScrape) (bool, string) {
		lag, pend, age := s.backlog()
		return lag+pend == n && age >= 1, fmt.Sprintf("lag %v pending %v age %v", lag, pend, age)
	})
	t.Logf("scrape while MongoDB is stopped:\n%s", backlog.lines(obsFamilies...))
	if got := backlog.sum("persister_entries_stored_total"); got != 0 {
		t.Errorf("stored while MongoDB is stopped = %v, want 0", got)
	}
	for _, tenant := range tenants {
		if got := backlog.sum("persister_stream_lag_entries", "tenant", tenant, "kind", "topic") +
			backlog.sum("persister_stream_pending_entries", "tenant", tenant, "kind", "topic"); got != n/2 {
			t.Errorf("tenant %s lag+pending = %v, want %d", tenant, got, n/2)
		}
	}
	code, body := getStatus(addr, "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, tenants[0]) {
		t.Errorf("/readyz with MongoDB stopped = %d %s, want 503 naming the tenants", code, body)
	}

	resume()
	maxAge := backlog.max("persister_oldest_unacked_age_seconds")
	drained := eventuallyScraped(t, addr, 120*time.Second, "lag, pending and oldest age at 0 and every entry stored", func(s obsScrape) (bool, string) {
		lag, pend, age := s.backlog()
		maxAge = max(maxAge, age)
		stored := s.sum("persister_entries_stored_total", "collection", "messages")
		return lag == 0 && pend == 0 && age == 0 && stored == n,
			fmt.Sprintf("lag %v pending %v age %v stored %v", lag, pend, age, stored)
	})
	t.Logf("scrape after the drain (largest oldest age seen %.1fs):\n%s", maxAge, drained.lines(obsFamilies...))
	if got := drained.sum("persister_entries_lost_total"); got != 0 {
		t.Errorf("lost = %v, want 0", got)
	}
	e2e.Eventually(t, 30*time.Second, "/readyz 200", func() (bool, string) {
		code, body := getStatus(addr, "/readyz")
		return code == http.StatusOK, fmt.Sprintf("%d %s", code, body)
	})
	if err := run.Stop(); err != nil {
		t.Fatal(err)
	}
}

// Entries trimmed while no persister runs are counted as lost once, by
// exactly one of two replicas, and the rest is stored.
func TestLostCountedWhenTrimmedBeforeStored(t *testing.T) {
	ctx := context.Background()
	rs, ms, rdb, _ := e2e.StartServers(t)
	tenants := []string{"obs-trim"}
	pub := &publisher.Publisher{RDB: rdb, Prefix: "cw:"}
	const stream = "cw:obs-trim:default:topic:orders"
	env := func(consumer string) map[string]string {
		return e2e.Env(t, rs.URL, ms.URI, tenants, map[string]string{
			"PERSISTER_METRICS_INTERVAL": "200ms",
			"PERSISTER_CONSUMER":         consumer,
		})
	}
	publishN := func(n int) {
		if _, err := pub.PublishBatch(ctx, obsMessages(tenants, []string{"orders"}, n)); err != nil {
			t.Fatal(err)
		}
	}

	first := e2e.Start(t, env("replica-1"))
	addr := waitAddr(t, first)
	publishN(100)
	e2e.Eventually(t, 60*time.Second, "100 stored", func() (bool, string) {
		s, err := scrapeMetrics(addr)
		if err != nil {
			return false, err.Error()
		}
		got := s.sum("persister_entries_stored_total", "collection", "messages")
		return got == 100, fmt.Sprintf("stored %v", got)
	})
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	if p, err := rdb.XPending(ctx, stream, "persister").Result(); err != nil || p.Count != 0 {
		t.Fatalf("pending after a graceful stop = %+v, %v; want 0", p, err)
	}

	// While no persister runs: 500 more, then a producer trims to 100.
	publishN(500)
	if err := rdb.XTrimMaxLen(ctx, stream, 100).Err(); err != nil {
		t.Fatal(err)
	}
	gs, err := rdb.XInfoGroups(ctx, stream).Result()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("XINFO GROUPS before restart: %+v (lag 500 reported for 100 entries)", gs)

	r1 := e2e.Start(t, env("replica-1"))
	r2 := e2e.Start(t, env("replica-2"))
	addrs := []string{waitAddr(t, r1), waitAddr(t, r2)}
	scrapeBoth := func() ([]obsScrape, error) {
		var out []obsScrape
		for _, a := range addrs {
			s, err := scrapeMetrics(a)
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
		return out, nil
	}
	e2e.Eventually(t, 60*time.Second, "400 lost, 100 more stored, lag 0", func() (bool, string) {
		ss, err := scrapeBoth()
		if err != nil {
			return false, err.Error()
		}
		var lost, stored float64
		for _, s := range ss {
			lost += s.sum("persister_entries_lost_total", "cause", "trimmed_before_read")
			stored += s.sum("persister_entries_stored_total", "collection", "messages")
		}
		lag := max(ss[0].sum("persister_stream_lag_entries"), ss[1].sum("persister_stream_lag_entries"))
		return lost == 400 && stored == 100 && lag == 0,
			fmt.Sprintf("lost %v (sum of both replicas), stored %v, lag %v", lost, stored, lag)
	})
	// More passes run; the count must not move.
	time.Sleep(1500 * time.Millisecond)
	ss, err := scrapeBoth()
	if err != nil {
		t.Fatal(err)
	}
	lost := ss[0].sum("persister_entries_lost_total") + ss[1].sum("persister_entries_lost_total")
	if lost != 400 {
		t.Errorf("lost after more passes = %v, want 400 (counted once)", lost)
	}
	for i, s := range ss {
		t.Logf("replica-%d scrape:\n%s", i+1, s.lines(obsFamilies...))
	}
	if n := e2e.CountStored(ctx, t, ms.Client(t), tenants[0]); n != 200 {
		t.Errorf("documents stored = %d, want 200 (100 before, 100 left after the trim)", n)
	}
	gs, err = rdb.XInfoGroups(ctx, stream).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(gs) != 1 || gs[0].Lag != 0 || gs[0].EntriesRead != 600 {
		t.Errorf("XINFO GROUPS after = %+v, want lag 0 and entries-read 600 (corrected)", gs)
	}
}

// TestTrimmedAfterStoredIsNotLost: entries a replica stored but did not
// acknowledge (it died between the write and the XACK) and that are then
// trimmed while pending are acknowledged without being counted as lost;
// only those with no document are. (Found by the chaos soak: the lost
// counter had counted both.)
func TestTrimmedAfterStoredIsNotLost(t *testing.T) {
	ctx := context.Background()
	rs, ms, rdb, mc := e2e.StartServers(t)
	tenants := []string{"obs-trim2"}
	const stream = "cw:obs-trim2:default:topic:orders"
	pub := &publisher.Publisher{RDB: rdb, Prefix: "cw:"}
	ids, err := pub.PublishBatch(ctx, obsMessages(tenants, []string{"orders"}, 10))
	if err != nil {
		t.Fatal(err)
	}
	// The dead replica's state: all 10 read and pending, 6 of them stored.
	if err := rdb.XGroupCreate(ctx, stream, "persister", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "persister", Consumer: "replica-1", Streams: []string{stream, ">"}, Count: 10}).Err(); err != nil {
		t.Fatal(err)
	}
	coll := mc.Database(e2e.DBName("obs-trim2")).Collection("messages")
	for _, id := range ids[:6] {
		if _, err := coll.InsertOne(ctx, bson.M{"_id": message.Identity("default", "orders", id), "msgId": id}); err != nil {
			t.Fatal(err)
		}
	}
	if err := rdb.XTrimMaxLen(ctx, stream, 0).Err(); err != nil {
		t.Fatal(err)
	}

	run := e2e.Start(t, e2e.Env(t, rs.URL, ms.URI, tenants, map[string]string{"PERSISTER_CONSUMER": "replica-1"}))
	addr := waitAddr(t, run)
	e2e.Eventually(t, 60*time.Second, "pending entries acknowledged, 4 counted lost", func() (bool, string) {
		p, err := rdb.XPending(ctx, stream, "persister").Result()
		if err != nil {
			return false, err.Error()
		}
		s, err := scrapeMetrics(addr)
		if err != nil {
			return false, err.Error()
		}
		lost := s.sum("persister_entries_lost_total", "tenant", "obs-trim2")
		return p.Count == 0 && lost == 4, fmt.Sprintf("pending %d lost %v (want 0, 4)", p.Count, lost)
	})
	time.Sleep(500 * time.Millisecond)
	s, err := scrapeMetrics(addr)
	if err != nil {
		t.Fatal(err)
	}
	if lost := s.sum("persister_entries_lost_total", "tenant", "obs-trim2"); lost != 4 {
		t.Errorf("lost %v after settling, want 4 (the 6 stored ones are not lost)", lost)
	}
}
