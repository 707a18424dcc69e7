package bench

import (
	"encoding/json"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chronow/persister/internal/keyspace"
)

func TestParseStatCPU(t *testing.T) {
	// A command name with spaces and a ')' must not shift the fields.
	stat := "4242 (per sister) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 9 0 100 0 0"
	got, err := parseStatCPU([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if want := 3250 * time.Millisecond; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	if _, err := parseStatCPU([]byte("12 (x) S 1 2")); err == nil {
		t.Error("short stat: got no error")
	}
}

func TestParseStatusKB(t *testing.T) {
	status := "Name:\tpersister\nVmPeak:\t  900000 kB\nVmHWM:\t   40960 kB\nVmRSS:\t   30720 kB\n"
	for name, want := range map[string]int64{"VmHWM:": 40 << 20, "VmRSS:": 30 << 20} {
		got, err := parseStatusKB([]byte(status), name)
		if err != nil || got != want {
			t.Errorf("%s: got %d, %v, want %d", name, got, err, want)
		}
	}
	if _, err := parseStatusKB([]byte(status), "VmSwap:"); err == nil {
		t.Error("missing line: got no error")
	}
}

func TestReadUsageSelf(t *testing.T) {
	u, err := ReadUsage(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if u.PeakRSS <= 0 || u.RSS <= 0 || u.PeakRSS < u.RSS {
		t.Errorf("got peak %d, rss %d; want 0 < rss <= peak", u.PeakRSS, u.RSS)
	}
}

func TestQuantile(t *testing.T) {
	var s []time.Duration
	for i := 1; i <= 200; i++ {
		s = append(s, time.Duration(i)*time.Millisecond)
	}
	for q, want := range map[float64]time.Duration{0.5: 100 * time.Millisecond, 0.99: 198 * time.Millisecond, 1: 200 * time.Millisecond, 0: time.Millisecond} {
		if got := quantile(s, q); got != want {
			t.Errorf("q%.2f: got %s, want %s", q, got, want)
		}
	}
	if got := quantile(nil, .5); got != 0 {
		t.Errorf("empty: got %s, want 0", got)
	}
}

func TestNum(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 7912.4: "7,912", 1234567: "1,234,567"} {
		if got := num(in); got != want {
			t.Errorf("num(%v): got %q, want %q", in, got, want)
		}
	}
}

// Both payload shapes are JSON objects of exactly the asked size; the
// small-fields one has many fields (≥ 50 at 1 KB).
func TestPayloadsAreJSONOfExactSize(t *testing.T) {
	for _, tc := range []struct {
		name      string
		payload   func(seq, size int) string
		seq       int
		sizes     []int
		minFields int // at 1 KB
	}{
		{"Payload", Payload, 12345, []int{400, 1024, 4096}, 0},
		{"SmallFieldsPayload", SmallFieldsPayload, 777, []int{200, 1024, 4096}, 50},
	} {
		for _, size := range tc.sizes {
			p := tc.payload(tc.seq, size)
			if len(p) != size {
				t.Errorf("%s size %d: got %d bytes", tc.name, size, len(p))
			}
			var v map[string]any
			if err := json.Unmarshal([]byte(p), &v); err != nil {
				t.Errorf("%s size %d: not JSON: %v\n%s", tc.name, size, err, p)
				continue
			}
			if size == 1024 && len(v) < tc.minFields {
				t.Errorf("%s: 1 KB payload has %d fields, want many (≥ %d)", tc.name, len(v), tc.minFields)
			}
		}
	}
}

func TestLayoutCoversEveryStreamOnce(t *testing.T) {
	for _, l := range []Layout{Mixed, OneStream, ThousandStreams} {
		keys := l.StreamKeys()
		seen := map[string]bool{}
		tenants := map[string]bool{}
		for _, k := range keys {
			if seen[k] {
				t.Fatalf("%s: stream %s twice", l.Name, k)
			}
			seen[k] = true
			key, err := keyspace.Parse(KeyPrefix, k)
			if err != nil {
				t.Fatalf("%s: %s: %v", l.Name, k, err)
			}
			tenants[key.Tenant] = true
		}
		if len(keys) != l.Streams() || len(tenants) != l.Tenants {
			t.Errorf("%s: got %d streams of %d tenants, want %d of %d", l.Name, len(keys), len(tenants), l.Streams(), l.Tenants)
		}
		// Round robin: entry seq lands on stream seq % Streams.
		m := l.Message(l.Streams()+1, 1024)
		if got, want := m.Key(KeyPrefix), keys[1%len(keys)]; got != want {
			t.Errorf("%s: entry %d on %s, want %s", l.Name, l.Streams()+1, got, want)
		}
	}
	if ThousandStreams.Streams() != 1000 {
		t.Errorf("ThousandStreams has %d streams", ThousandStreams.Streams())
	}
}

func TestMarkdownMarksTargets(t *testing.T) {
	sweep := func(l Layout, rates ...float64) Sweep {
		sw := Sweep{Layout: l}
		for i, r := range rates {
			sw.Results = append(sw.Results, BaselineResult{Method: BaselineCommand, Docs: 1000, Batch: 500, Writers: SweepWriters[i], Tenants: l.Tenants,
				Elapsed: time.Duration(float64(time.Second) * 1000 / r), DocBytes: 1300})
		}
		return sw
	}
	rep := &Report{
		Config: Config{PayloadBytes: 1024, Entries: 1000, Batch: 500, Inflight: 2},
		Sweeps: []Sweep{sweep(Mixed, 400, 1000, 800, 500), sweep(TwoTenants, 500, 2000, 1000, 900)},
		Drain:  &DrainResult{Name: "drain", Layout: Mixed, Entries: 1000, Replicas: 1, Elapsed: 2 * time.Second, CPU: 10 * time.Millisecond, PeakRSS: 30 << 20},
	}
	best := rep.Sweeps[0].Best()
	rep.Baseline = &best
	var b strings.Builder
	if err := rep.Markdown(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	// 500/s against the best 1000/s (2 in flight) is 0.5 ×: not met. 10 µs/entry and 30 MiB are.
	for _, want := range []string{"| 400 / 1,000 / 800 / 500 docs/s: best 1,000 with 2 in flight |",
		"= 0.50 × best sink (1,000 docs/s, 2 in flight) | ≥ 0.9 × best sink | **no** |", "10.0 µs/entry", "| 30.0 MiB (drain: 1,000 entries, 4 tenants) | ≤ 64 MiB | yes |"} {
		if !strings.Contains(out, want) {
			t.Errorf("markdown lacks %q:\n%s", want, out)
		}
	}

	// The 2-tenant drain is judged against its own best (2000/s); one
	// drain over the memory target fails the row; 2 replicas at 0.95 ×
	// fail theirs, and the sink's own ratio at 4 in flight is shown.
	rep.Scale = []DrainResult{
		{Name: "2-tenants", Layout: TwoTenants, Entries: 1900, Replicas: 1, Elapsed: time.Second},
		{Name: "1M-backlog", Layout: Mixed, Entries: 1000000, Replicas: 1, Elapsed: time.Second, PeakRSS: 70 << 20},
		{Name: "1-replica", Layout: Mixed, Entries: 1000, Replicas: 1, Elapsed: time.Second},
		{Name: "2-replicas", Layout: Mixed, Entries: 950, Replicas: 2, Elapsed: time.Second},
	}
	b.Reset()
	if err := rep.Markdown(&b); err != nil {
		t.Fatal(err)
	}
	out = b.String()
	for _, want := range []string{"1,900 entries/s = 0.95 × best sink (2,000 docs/s, 2 in flight) | ≥ 0.9 × best sink | yes |",
		"70.0 MiB (1M-backlog: 1,000,000 entries, 4 tenants) | ≤ 64 MiB | **no** |",
		"= 0.95 × | ≥ 1.0 × | **no** |", "with 4 writes in flight (two replicas' worth) vs its best (2) | 800 vs 1,000 docs/s = 0.80 ×"} {
		if !strings.Contains(out, want) {
			t.Errorf("markdown lacks %q:\n%s", want, out)
		}
	}
}

// With runs at the drain's size, the drain is judged against their best,
// not the sweep's (whose best is still shown); Top ranks the sweep.
func TestMarkdownJudgesAgainstTheDrainSize(t *testing.T) {
	res := func(w int, docs, rate float64) BaselineResult {
		return BaselineResult{Method: BaselineCommand, Docs: int(docs), Batch: 500, Writers: w, Tenants: 4,
			Elapsed: time.Duration(float64(time.Second) * docs / rate), DocBytes: 1300}
	}
	sw := Sweep{Layout: Mixed, Results: []BaselineResult{res(1, 1000, 400), res(2, 1000, 1000), res(4, 1000, 800), res(8, 1000, 500)}}
	if got := sw.Top(2); !slices.Equal(got, []int{2, 4}) {
		t.Fatalf("Top(2) = %v, want [2 4]", got)
	}
	sw.Full = []BaselineResult{res(2, 10000, 700), res(4, 10000, 750)}
	if b := sw.Best(); b.Writers != 4 || sw.SweepBest().Writers != 2 {
		t.Fatalf("Best %d in flight, SweepBest %d; want 4 and 2", b.Writers, sw.SweepBest().Writers)
	}
	best := sw.Best()
	rep := &Report{
		Config:   Config{PayloadBytes: 1024, Entries: 10000, Batch: 500, Inflight: 2},
		Sweeps:   []Sweep{sw},
		Baseline: &best,
		Drain:    &DrainResult{Name: "drain", Layout: Mixed, Entries: 10000, Replicas: 1, Elapsed: 15 * time.Second},
	}
	var b strings.Builder
	if err := rep.Markdown(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"| 400 / 1,000 / 800 / 500 docs/s: best 1,000 with 2 in flight |  | |",
		"| same at the size of its drain: 10,000 docs, the sweep's two best (2 / 4 in flight), once each | 700 / 750 docs/s: best 750 with 4 in flight | (the limit) | |",
		"667 entries/s = 0.89 × best sink (750 docs/s, 4 in flight) | ≥ 0.9 × best sink | **no** |"} {
		if !strings.Contains(out, want) {
			t.Errorf("markdown lacks %q:\n%s", want, out)
		}
	}
}

func TestTraceSummary(t *testing.T) {
	tr := &TraceResult{StopAt: 3 * time.Second, ContAt: 5 * time.Second}
	for i, lim := range []int{1, 2, 3, 3, 3, 3, 2, 1, 1, 2, 3, 4, 3} {
		tr.Points = append(tr.Points, TracePoint{At: time.Duration(i) * time.Second, Limit: lim})
	}
	s := tr.Summary()
	want := TraceSummary{Before: 3, Lowest: 1, LowestAt: 7 * time.Second, Highest: 4, BackAt: 10 * time.Second}
	if s != want {
		t.Errorf("summary %+v, want %+v", s, want)
	}
	if got := tr.Changes(); got != "0.0s 1, 1.0s 2, 2.0s 3, 6.0s 2, 7.0s 1, 9.0s 2, 10.0s 3, 11.0s 4, 12.0s 3" {
		t.Errorf("changes %q", got)
	}
	var b strings.Builder
	(&Report{Trace: tr}).traceRow(&b)
	if !strings.Contains(b.String(), "3 before the stop; lowest 1 (at 7.0 s); back to 3 at 10.0 s; highest 4 after the lowest") || !strings.HasSuffix(b.String(), "| yes |\n") {
		t.Errorf("trace row %q", b.String())
	}
	if (&TraceResult{}).Summary() != (TraceSummary{}) {
		t.Error("no stop: want a zero summary")
	}
}

func TestGaugeSum(t *testing.T) {
	text := `# TYPE persister_write_concurrency_limit gauge
persister_write_concurrency_limit{name="mongo-primary",scope="connection"} 3
persister_write_concurrency_limit{name="mongo-primary/db",scope="database"} 2
persister_write_concurrency_limit_other{scope="connection"} 9
`
	if got := gaugeSum(text, "persister_write_concurrency_limit", `scope="connection"`); got != 3 {
		t.Errorf("connection limit %v, want 3", got)
	}
	if got := gaugeSum(text, "persister_write_concurrency_limit"); got != 5 {
		t.Errorf("all limits %v, want 5", got)
	}
}

func TestParseHistogram(t *testing.T) {
	text := `# HELP persister_flush_duration_seconds Duration of one bulk write.
# TYPE persister_flush_duration_seconds histogram
persister_flush_duration_seconds_bucket{result="error",le="0.001"} 7
persister_flush_duration_seconds_bucket{result="ok",le="0.001"} 0
persister_flush_duration_seconds_bucket{result="ok",le="0.002"} 10
persister_flush_duration_seconds_bucket{result="ok",le="0.004"} 90
persister_flush_duration_seconds_bucket{result="ok",le="+Inf"} 100
persister_flush_duration_seconds_sum{result="ok"} 0.3
persister_flush_duration_seconds_count{result="ok"} 100
`
	h, err := parseHistogram(strings.NewReader(text), "persister_flush_duration_seconds", `result="ok"`)
	if err != nil {
		t.Fatal(err)
	}
	if h.Count() != 100 {
		t.Fatalf("count %v, want 100 (error series excluded)", h.Count())
	}
	if q := h.Quantile(.5); q != 0.004 {
		t.Errorf("p50 ≤ %v, want 0.004", q)
	}
	if q := h.Quantile(.05); q != 0.002 {
		t.Errorf("p5 ≤ %v, want 0.002", q)
	}
	before := Histogram{0.001: 0, 0.002: 10, 0.004: 10, math.Inf(1): 10}
	if d := h.Sub(before); d.Count() != 90 || d.Quantile(.01) != 0.004 {
		t.Errorf("delta: count %v, p1 %v; want 90, 0.004", d.Count(), d.Quantile(.01))
	}
}

func TestCPUParagraphs(t *testing.T) {
	rep := &Report{
		Machine: Machine{Cores: 2},
		Drain: &DrainResult{Elapsed: 2 * time.Second, CPU: time.Second,
			ServerCPU: map[string]time.Duration{"redis-server": 500 * time.Millisecond, "ferretdb": 3 * time.Second}},
		Baseline: &BaselineResult{Writers: 2, Elapsed: 4 * time.Second, CPU: map[string]time.Duration{"ferretdb": time.Second}},
	}
	var b strings.Builder
	rep.paragraphs(&b)
	for _, want := range []string{
		"CPU during the main drain, in % of one core (2 cores, 200% in all): the daemon 50%, ferretdb 150%, redis-server 25%.",
		"CPU during the best sink run (4 tenants, few large fields, 2 in flight), in % of one core: ferretdb 25%.",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("paragraphs lack %q:\n%s", want, b.String())
		}
	}
}
