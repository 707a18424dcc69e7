package bench

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Targets of issues 8 and 16 (default settings, 1 KB entries).
const (
	TargetDrainVsBaseline = 0.9
	TargetCPUPerEntry     = 25 * time.Microsecond
	TargetPeakRSS         = 64 << 20
	// TargetP99 is at half the drain rate, TargetP99Quarter at a quarter.
	TargetP99           = 150 * time.Millisecond
	TargetP99Quarter    = 60 * time.Millisecond
	TargetStreamsScale  = 0.8
	TargetReplicasScale = 1.0
)

// Report is the outcome of a run.
type Report struct {
	Config  Config
	Machine Machine
	Servers string
	// Sweeps are the sink's rates at SweepWriters for each layout of
	// Variants, in that order.
	Sweeps []Sweep
	// Baseline is the main layout's sink limit (Sweep.Best).
	Baseline *BaselineResult
	// BaselineInsertMany is the same sink through Collection.InsertMany.
	BaselineInsertMany *BaselineResult
	Drain              *DrainResult
	Latency            *LatencyResult
	// LatencyWarmup is the same load just before Latency, not judged.
	LatencyWarmup *LatencyResult
	// LatencyLow is the steady load at half the Latency rate.
	LatencyLow *LatencyResult
	Scale      []DrainResult
	// Trace is the adaptive limit with the server stopped for a while.
	Trace *TraceResult
	// Notes are paragraphs printed after the tables (the cluster stage's
	// idle cost and latency).
	Notes []string
	Wall  time.Duration
}

// Machine describes where the run happened.
type Machine struct {
	CPU    string
	Cores  int
	Memory string
	Kernel string
	Go     string
	Redis  string
	Mongo  string
}

func describeMachine(ctx context.Context, e *Env) Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if name, ok := strings.CutPrefix(line, "model name"); ok {
				m.CPU = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if kb, err := parseStatusKB(b, "MemTotal:"); err == nil {
			m.Memory = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<30))
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	m.Redis, m.Mongo = serverVersions(ctx, e)
	return m
}

func redactedURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// best returns the sink's best rate for the layout: its own sweep's best,
// or the main layout's (Baseline) for a layout that was not swept; nil
// without a baseline.
func (r *Report) best(l Layout) *BaselineResult {
	for _, sw := range r.Sweeps {
		if sw.Layout.Name == l.Name {
			b := sw.Best()
			return &b
		}
	}
	return r.Baseline
}

// ratio is a drain's rate over the best sink rate of its layout, 0
// without a baseline.
func (r *Report) ratio(d DrainResult) float64 {
	b := r.best(d.Layout)
	if b == nil {
		return 0
	}
	return d.Rate() / b.Rate()
}

func (r *Report) scale(name string) *DrainResult {
	for i := range r.Scale {
		if r.Scale[i].Name == name {
			return &r.Scale[i]
		}
	}
	return nil
}

// daemonEnv describes the daemon settings given with --daemon-env, or
// says the defaults applied.
func (r *Report) daemonEnv() string {
	if len(r.Config.DaemonEnv) == 0 {
		return "at their defaults (8 MiB, 40 MiB)"
	}
	var kv []string
	for k, v := range r.Config.DaemonEnv {
		kv = append(kv, k+"="+v)
	}
	slices.Sort(kv)
	return "at their defaults unless set here: " + strings.Join(kv, ", ")
}

// rssDrains are the drains whose peak RSS the memory target covers: the
// main drain, the 1M backlog and the 50 tenants of the 1000 streams.
func (r *Report) rssDrains() []DrainResult {
	var out []DrainResult
	if r.Drain != nil {
		out = append(out, *r.Drain)
	}
	for _, name := range []string{"1M-backlog", "1000-streams"} {
		if d := r.scale(name); d != nil {
			out = append(out, *d)
		}
	}
	return out
}

func met(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

// Markdown writes the report as markdown tables.
func (r *Report) Markdown(w io.Writer) error {
	var b strings.Builder
	m := r.Machine
	fmt.Fprintf(&b, "Machine: %s, %d cores, %s RAM, %s; %s; Redis %s; %s. %s.\n\n",
		orDash(m.CPU), m.Cores, orDash(m.Memory), orDash(m.Kernel), m.Go, orDash(m.Redis), orDash(m.Mongo), r.Servers)
	fmt.Fprintf(&b, "Entries: %d-byte JSON payloads in Chronow's format; backlogs: %s entries for the main drain (half that for the other layouts, a quarter for the trace), %s for the memory drain, %s for the streams and replicas drains, %s for each sink run; daemon defaults (batch %d, %d in flight per tenant, at most %d writes in flight per connection, write concurrency %s, linger 20ms, memory budget and soft memory limit %s). Every ratio is against the best sink rate of the same layout and payload shape (the 4-tenant, few-large-fields one for the drains of other layouts). Whole run: %s.\n\n",
		r.Config.PayloadBytes, num(float64(r.Config.Entries)), num(float64(r.Config.MemoryEntries)), num(float64(r.Config.ScaleEntries)), num(float64(r.Config.SweepEntries)),
		r.Config.Batch, r.Config.Inflight, r.Config.Writers, r.writeConcurrency(), r.daemonEnv(), r.Wall.Round(time.Second))
	b.WriteString("| measure | result | target | met |\n|---|---|---|---|\n")
	r.sinkRows(&b)
	r.drainRows(&b)
	r.latencyRows(&b)
	r.scaleRows(&b)
	r.traceRow(&b)
	r.drainTable(&b)
	r.paragraphs(&b)
	_, err := io.WriteString(w, b.String())
	return err
}

// writeConcurrency is the daemons' PERSISTER_WRITE_CONCURRENCY.
func (r *Report) writeConcurrency() string {
	if v, ok := r.Config.DaemonEnv["PERSISTER_WRITE_CONCURRENCY"]; ok {
		return v
	}
	return "adaptive"
}

// sinkRows are the sweeps, one row per layout (and one for its runs at the
// drain's size), and InsertMany.
func (r *Report) sinkRows(b *strings.Builder) {
	for _, sw := range r.Sweeps {
		if len(sw.Results) == 0 {
			continue
		}
		first, limit := sw.Results[0], "(the limit)"
		if len(sw.Full) > 0 {
			limit = ""
		}
		runs := ""
		if first.Runs > 1 {
			runs = fmt.Sprintf(" (the faster of %d runs each)", first.Runs)
		}
		ws, rates := writersAndRates(sw.Results)
		best := sw.SweepBest()
		fmt.Fprintf(b, "| sink alone: %s docs of %d B (%s) into %d tenant databases, %d per bulk insert, pre-built insert commands sent with the driver (no client work), %s in flight%s | %s docs/s: best %s with %d in flight | %s | |\n",
			num(float64(first.Docs)), first.DocBytes, sw.Layout.ShapeName(), sw.Layout.Tenants, first.Batch, ws, runs, rates, num(best.Rate()), best.Writers, limit)
		if len(sw.Full) > 0 {
			ws, rates := writersAndRates(sw.Full)
			best := sw.Best()
			fmt.Fprintf(b, "| same at the size of its drain: %s docs, the sweep's two best (%s in flight), once each | %s docs/s: best %s with %d in flight | (the limit) | |\n",
				num(float64(best.Docs)), ws, rates, num(best.Rate()), best.Writers)
		}
	}
	if bl := r.BaselineInsertMany; bl != nil {
		fmt.Fprintf(b, "| same with Collection.InsertMany (%s docs, 4 tenants, %d in flight), for reference | %s docs/s | | |\n", num(float64(bl.Docs)), bl.Writers, num(bl.Rate()))
	}
}

// writersAndRates lists the runs' writes in flight and rates, joined by " / ".
func writersAndRates(rs []BaselineResult) (string, string) {
	var ws, rates []string
	for _, x := range rs {
		ws = append(ws, strconv.Itoa(x.Writers))
		rates = append(rates, num(x.Rate()))
	}
	return strings.Join(ws, " / "), strings.Join(rates, " / ")
}

// drainRows are the main drain (and the other layouts') against the best
// sink, CPU and peak RSS.
func (r *Report) drainRows(b *strings.Builder) {
	drains := r.Scale
	if r.Drain != nil {
		drains = append([]DrainResult{*r.Drain}, r.Scale...)
	}
	for _, d := range drains {
		if !slices.ContainsFunc(Variants, func(l Layout) bool { return l.Name == d.Layout.Name }) || d.Replicas != 1 || (d.Name != "drain" && d.Name != d.Layout.Name) {
			continue
		}
		ratio, ok := "", ""
		if best := r.best(d.Layout); best != nil {
			ratio = fmt.Sprintf(" = %.2f × best sink (%s docs/s, %d in flight)", r.ratio(d), num(best.Rate()), best.Writers)
			ok = met(r.ratio(d) >= TargetDrainVsBaseline)
		}
		fmt.Fprintf(b, "| drain: %s entries over %s, 1 daemon, until the last is stored and acked | %s entries/s%s | ≥ %.1f × best sink | %s |\n",
			num(float64(d.Entries)), d.Layout, num(d.Rate()), ratio, TargetDrainVsBaseline, ok)
	}
	if d := r.Drain; d != nil {
		fmt.Fprintf(b, "| daemon CPU during the main drain | %.1f µs/entry (%.3f s per 10k) | ≤ %d µs/entry | %s |\n",
			us(d.CPUPerEntry()), d.CPUPerEntry().Seconds()*10000, TargetCPUPerEntry.Microseconds(), met(d.CPUPerEntry() <= TargetCPUPerEntry))
	}
	if rss := r.rssDrains(); len(rss) > 0 {
		var parts []string
		ok := true
		for _, d := range rss {
			parts = append(parts, fmt.Sprintf("%.1f MiB (%s: %s entries, %d tenants)", mib(d.PeakRSS), d.Name, num(float64(d.Entries)), d.Layout.Tenants))
			ok = ok && d.PeakRSS <= TargetPeakRSS
		}
		fmt.Fprintf(b, "| daemon peak RSS (VmHWM) while draining | %s | ≤ %d MiB | %s |\n",
			strings.Join(parts, "; "), TargetPeakRSS>>20, met(ok))
	}
}

// latencyRows are the steady loads at half and a quarter of the drain rate.
func (r *Report) latencyRows(b *strings.Builder) {
	l := r.Latency
	if l == nil {
		return
	}
	if w := r.LatencyWarmup; w != nil && len(w.Acked) > 0 {
		fmt.Fprintf(b, "| warm-up: the same load for %s just before it (%s entries), not judged: the server recovering from the drain | p50 %.1f ms, p99 %.1f ms, max %.1f ms | | |\n",
			w.Duration, num(float64(w.Entries)), ms(w.Quantile(.5)), ms(w.Quantile(.99)), ms(w.Quantile(1)))
	}
	fmt.Fprintf(b, "| steady load %s entries/s (half the drain rate) for %s (every one of %s entries): XADD reply → acknowledged by the daemon, i.e. stored | p50 %.1f ms, p99 %.1f ms, max %.1f ms | p99 ≤ %d ms | %s |\n",
		num(l.Achieved), l.Duration, num(float64(l.Entries)), ms(l.Quantile(.5)), ms(l.Quantile(.99)), ms(l.Quantile(1)),
		TargetP99.Milliseconds(), met(len(l.Acked) > 0 && l.Quantile(.99) <= TargetP99))
	if lo := r.LatencyLow; lo != nil && len(lo.Acked) > 0 {
		fmt.Fprintf(b, "| same, at a quarter of the drain rate (%s entries/s for %s) | p50 %.1f ms, p99 %.1f ms, max %.1f ms | p99 ≤ %d ms | %s |\n",
			num(lo.Achieved), lo.Duration, ms(lo.Quantile(.5)), ms(lo.Quantile(.99)), ms(lo.Quantile(1)),
			TargetP99Quarter.Milliseconds(), met(lo.Quantile(.99) <= TargetP99Quarter))
	}
	if v := l.Visible; len(v) > 0 {
		fmt.Fprintf(b, "| same load, %d probed entries: XADD reply → document found by _id | p50 %.1f ms, p99 %.1f ms, max %.1f ms | p99 ≤ %d ms | %s |\n",
			len(v), ms(quantile(v, .5)), ms(quantile(v, .99)), ms(quantile(v, 1)), TargetP99.Milliseconds(), met(quantile(v, .99) <= TargetP99))
	}
}

// scaleRows compare 1000 streams with 1, and 2 replicas with 1.
func (r *Report) scaleRows(b *strings.Builder) {
	if one, many := r.scale("1-stream"), r.scale("1000-streams"); one != nil && many != nil {
		x := many.Rate() / one.Rate()
		fmt.Fprintf(b, "| 1000 streams (50 tenants × 20 topics) vs 1 stream | %s vs %s entries/s = %.2f × | ≥ %.1f × | %s |\n",
			num(many.Rate()), num(one.Rate()), x, TargetStreamsScale, met(x >= TargetStreamsScale))
	}
	if one, two := r.scale("1-replica"), r.scale("2-replicas"); one != nil && two != nil {
		x := two.Rate() / one.Rate()
		fmt.Fprintf(b, "| 2 daemon replicas vs 1 (same backlog and layout) | %s vs %s entries/s = %.2f × | ≥ %.1f × | %s |\n",
			num(two.Rate()), num(one.Rate()), x, TargetReplicasScale, met(x >= TargetReplicasScale))
		if len(r.Sweeps) > 0 {
			best := r.Sweeps[0].SweepBest()
			for _, s := range r.Sweeps[0].Results {
				if s.Writers == 2*best.Writers {
					fmt.Fprintf(b, "| the sink alone with %d writes in flight (two replicas' worth) vs its best (%d) | %s vs %s docs/s = %.2f × | (context) | |\n",
						s.Writers, best.Writers, num(s.Rate()), num(best.Rate()), s.Rate()/best.Rate())
				}
			}
		}
	}
}

// traceRow says whether the limit fell and climbed back around a stop of
// the server.
func (r *Report) traceRow(b *strings.Builder) {
	tr := r.Trace
	if tr == nil {
		return
	}
	if tr.StopAt == 0 {
		fmt.Fprintf(b, "| adaptive limit, server stopped during a drain | the drain (%s entries) ended before the stop | falls, nothing lost, climbs back | **no** |\n", num(float64(tr.Drain.Entries)))
		return
	}
	s := tr.Summary()
	back := "never got back to it"
	if s.BackAt > 0 {
		back = fmt.Sprintf("back to %d at %.1f s", s.Before, s.BackAt.Seconds())
	}
	fmt.Fprintf(b, "| adaptive limit (connection), FerretDB stopped (SIGSTOP) %.1f s into a drain of %s entries, continued (SIGCONT) at %.1f s | %d before the stop; lowest %d (at %.1f s); %s; highest %d after the lowest; all %s entries stored and acked | falls, nothing lost, climbs back | %s |\n",
		tr.StopAt.Seconds(), num(float64(tr.Drain.Entries)), tr.ContAt.Seconds(), s.Before, s.Lowest, s.LowestAt.Seconds(), back, s.Highest,
		num(float64(tr.Drain.Entries)), met(s.Lowest < s.Before && s.BackAt > 0))
}

// drainTable lists every drain.
func (r *Report) drainTable(b *strings.Builder) {
	drains := r.Scale
	if r.Drain != nil {
		drains = append([]DrainResult{*r.Drain}, r.Scale...)
	}
	if r.Trace != nil {
		drains = append(drains, r.Trace.Drain)
	}
	if len(drains) == 0 {
		return
	}
	b.WriteString("\n| drain | streams | tenants | payload | replicas | entries | XADD load/s | first ack s | seconds | entries/s | × best sink | CPU s/10k | µs/entry | peak RSS MiB |\n")
	b.WriteString("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, d := range drains {
		x := "-"
		if r.best(d.Layout) != nil {
			x = fmt.Sprintf("%.2f", r.ratio(d))
		}
		fmt.Fprintf(b, "| %s | %d | %d | %s | %d | %s | %s | %.2f | %.1f | %s | %s | %.3f | %.1f | %.1f |\n",
			d.Name, d.Layout.Streams(), d.Layout.Tenants, d.Layout.ShapeName(), d.Replicas, num(float64(d.Entries)), num(d.LoadRate),
			d.FirstAck.Seconds(), d.Elapsed.Seconds(), num(d.Rate()), x,
			d.CPUPerEntry().Seconds()*10000, us(d.CPUPerEntry()), mib(d.PeakRSS))
	}
}

// paragraphs are the notes after the tables: bulk writes and CPU during
// the steady load, the trace, the cluster notes.
func (r *Report) paragraphs(b *strings.Builder) {
	if l := r.Latency; l != nil && l.Flush.Count() > 0 {
		fmt.Fprintf(b, "\nDuring the steady load the daemon made %s bulk inserts (%.1f entries each on average); their durations (persister_flush_duration_seconds): p50 ≤ %.0f ms, p90 ≤ %.0f ms, p99 ≤ %.0f ms.\n",
			num(l.Flush.Count()), float64(l.Entries)/l.Flush.Count(), 1000*l.Flush.Quantile(.5), 1000*l.Flush.Quantile(.9), 1000*l.Flush.Quantile(.99))
	}
	if l := r.Latency; l != nil && l.Entries > 0 {
		fmt.Fprintf(b, "\nSteady load: target %s/s, achieved %s/s; daemon CPU %.1f µs/entry at that rate; XADD → acknowledged p90 %.1f ms, p95 %.1f ms, p99.9 %.1f ms (acknowledgement seen by polling Redis every %s; an entry counts once every older entry of its stream is acknowledged too).\n",
			num(l.Target), num(l.Achieved), us(l.CPU/time.Duration(l.Entries)), ms(l.Quantile(.9)), ms(l.Quantile(.95)), ms(l.Quantile(.999)), ackPoll)
	}
	if l := r.Latency; l != nil && l.Wall > 0 && len(l.ServerCPU) > 0 {
		parts := append([]string{fmt.Sprintf("the daemon %.0f%%", 100*l.CPU.Seconds()/l.Wall.Seconds())}, cpuShares(l.ServerCPU, l.Wall)...)
		fmt.Fprintf(b, "\nCPU during the steady load, in %% of one core (the machine has %d): %s (the client is the benchmark's producer and acknowledgement poller).\n",
			r.Machine.Cores, strings.Join(parts, ", "))
	}
	if d := r.Drain; d != nil && d.Elapsed > 0 && len(d.ServerCPU) > 0 {
		parts := append([]string{fmt.Sprintf("the daemon %.0f%%", 100*d.CPU.Seconds()/d.Elapsed.Seconds())}, cpuShares(d.ServerCPU, d.Elapsed)...)
		fmt.Fprintf(b, "\nCPU during the main drain, in %% of one core (%d cores, %.0f%% in all): %s.\n",
			r.Machine.Cores, 100*float64(r.Machine.Cores), strings.Join(parts, ", "))
	}
	if best := r.Baseline; best != nil && best.Elapsed > 0 && len(best.CPU) > 0 {
		fmt.Fprintf(b, "\nCPU during the best sink run (4 tenants, few large fields, %d in flight), in %% of one core: %s.\n", best.Writers, strings.Join(cpuShares(best.CPU, best.Elapsed), ", "))
	}
	if tr := r.Trace; tr != nil && len(tr.Points) > 0 {
		fmt.Fprintf(b, "\nAdaptive limit of the connection during the trace drain (time since the daemon started: limit, at each change; read every %s; SIGSTOP at %.1f s, SIGCONT at %.1f s): %s.\n",
			traceEvery, tr.StopAt.Seconds(), tr.ContAt.Seconds(), tr.Changes())
	}
	for _, n := range r.Notes {
		fmt.Fprintf(b, "\n%s\n", n)
	}
}

// cpuShares lists each process's CPU time as a share of wall, in % of one
// core ("name 42%"), in name order.
func cpuShares(cpu map[string]time.Duration, wall time.Duration) []string {
	var parts []string
	for _, n := range slices.Sorted(maps.Keys(cpu)) {
		parts = append(parts, fmt.Sprintf("%s %.0f%%", n, 100*cpu[n].Seconds()/wall.Seconds()))
	}
	return parts
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// num formats a count or rate with thousands separators.
func num(f float64) string {
	n := int64(f + 0.5)
	s := fmt.Sprint(n)
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}
