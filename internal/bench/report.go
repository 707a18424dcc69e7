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
	"strings"
	"time"
)

// Targets of issue 8 (default settings, 1 KB entries).
const (
	TargetDrainVsBaseline = 0.9
	TargetCPUPerEntry     = 25 * time.Microsecond
	TargetPeakRSS         = 64 << 20
	TargetP99             = 150 * time.Millisecond
	TargetStreamsScale    = 0.8
	TargetReplicasScale   = 1.0
)

// Report is the outcome of a run.
type Report struct {
	Config   Config
	Machine  Machine
	Servers  string
	Baseline *BaselineResult
	// BaselineInsertMany is the same sink through Collection.InsertMany.
	BaselineInsertMany *BaselineResult
	// BaselineDouble is the sink baseline with twice the writes in
	// flight: what two replicas send (replicas stage).
	BaselineDouble *BaselineResult
	Drain          *DrainResult
	Latency        *LatencyResult
	// LatencyLow is the steady load at half the Latency rate.
	LatencyLow *LatencyResult
	Scale      []DrainResult
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

// Ratio of the drain to the baseline, 0 when either is missing.
func (r *Report) drainRatio() float64 {
	if r.Baseline == nil || r.Drain == nil {
		return 0
	}
	return r.Drain.Rate() / r.Baseline.Rate()
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
		return "at their defaults (8 MiB, 48 MiB)"
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
	fmt.Fprintf(&b, "Entries: %d-byte JSON payloads in Chronow's format; backlogs: %s entries for the main drain, %s for the memory drain, %s for the baseline and the streams and replicas drains; daemon defaults (batch %d, %d in flight per tenant, %d writes in flight per connection, linger 20ms, memory budget and soft memory limit %s). Whole run: %s.\n\n",
		r.Config.PayloadBytes, num(float64(r.Config.Entries)), num(float64(r.Config.MemoryEntries)), num(float64(r.Config.ScaleEntries)),
		r.Config.Batch, r.Config.Inflight, r.Config.Writers, r.daemonEnv(), r.Wall.Round(time.Second))

	b.WriteString("| measure | result | target | met |\n|---|---|---|---|\n")
	if bl := r.Baseline; bl != nil {
		fmt.Fprintf(&b, "| sink baseline: %s docs of %d B into the drain's %d tenant databases, %d per bulk insert, %d in flight, pre-built insert commands sent with the driver (no client work) | %s docs/s | (the limit) | |\n",
			num(float64(bl.Docs)), bl.DocBytes, bl.Tenants, bl.Batch, bl.Writers, num(bl.Rate()))
	}
	if bl := r.BaselineInsertMany; bl != nil {
		fmt.Fprintf(&b, "| same with Collection.InsertMany (%s docs), for reference | %s docs/s | | |\n", num(float64(bl.Docs)), num(bl.Rate()))
	}
	if d := r.Drain; d != nil {
		ratio := ""
		ok := ""
		if r.Baseline != nil {
			ratio = fmt.Sprintf(" = %.2f × baseline", r.drainRatio())
			ok = met(r.drainRatio() >= TargetDrainVsBaseline)
		}
		fmt.Fprintf(&b, "| drain: %s entries over %s, 1 daemon, until the last is stored and acked | %s entries/s%s | ≥ %.1f × baseline | %s |\n",
			num(float64(d.Entries)), d.Layout, num(d.Rate()), ratio, TargetDrainVsBaseline, ok)
		fmt.Fprintf(&b, "| daemon CPU during the drain | %.1f µs/entry (%.3f s per 10k) | ≤ %d µs/entry | %s |\n",
			us(d.CPUPerEntry()), d.CPUPerEntry().Seconds()*10000, TargetCPUPerEntry.Microseconds(), met(d.CPUPerEntry() <= TargetCPUPerEntry))
	}
	if rss := r.rssDrains(); len(rss) > 0 {
		var parts []string
		ok := true
		for _, d := range rss {
			parts = append(parts, fmt.Sprintf("%.1f MiB (%s: %s entries, %d tenants)", mib(d.PeakRSS), d.Name, num(float64(d.Entries)), d.Layout.Tenants))
			ok = ok && d.PeakRSS <= TargetPeakRSS
		}
		fmt.Fprintf(&b, "| daemon peak RSS (VmHWM) while draining | %s | ≤ %d MiB | %s |\n",
			strings.Join(parts, "; "), TargetPeakRSS>>20, met(ok))
	}
	if l := r.Latency; l != nil {
		fmt.Fprintf(&b, "| steady load %s entries/s for %s (every one of %s entries): XADD reply → acknowledged by the daemon, i.e. stored | p50 %.1f ms, p99 %.1f ms, max %.1f ms | p99 ≤ %d ms | %s |\n",
			num(l.Achieved), l.Duration, num(float64(l.Entries)), ms(l.Quantile(.5)), ms(l.Quantile(.99)), ms(l.Quantile(1)),
			TargetP99.Milliseconds(), met(len(l.Acked) > 0 && l.Quantile(.99) <= TargetP99))
		if lo := r.LatencyLow; lo != nil && len(lo.Acked) > 0 {
			fmt.Fprintf(&b, "| same, at half that rate (%s entries/s for %s) | p50 %.1f ms, p99 %.1f ms, max %.1f ms | (context) | |\n",
				num(lo.Achieved), lo.Duration, ms(lo.Quantile(.5)), ms(lo.Quantile(.99)), ms(lo.Quantile(1)))
		}
		if v := l.Visible; len(v) > 0 {
			fmt.Fprintf(&b, "| same load, %d probed entries: XADD reply → document found by _id | p50 %.1f ms, p99 %.1f ms, max %.1f ms | p99 ≤ %d ms | %s |\n",
				len(v), ms(quantile(v, .5)), ms(quantile(v, .99)), ms(quantile(v, 1)), TargetP99.Milliseconds(), met(quantile(v, .99) <= TargetP99))
		}
	}
	if one, many := r.scale("1-stream"), r.scale("1000-streams"); one != nil && many != nil {
		x := many.Rate() / one.Rate()
		fmt.Fprintf(&b, "| 1000 streams (50 tenants × 20 topics) vs 1 stream | %s vs %s entries/s = %.2f × | ≥ %.1f × | %s |\n",
			num(many.Rate()), num(one.Rate()), x, TargetStreamsScale, met(x >= TargetStreamsScale))
	}
	if one, two := r.scale("1-replica"), r.scale("2-replicas"); one != nil && two != nil {
		x := two.Rate() / one.Rate()
		fmt.Fprintf(&b, "| 2 daemon replicas vs 1 (same backlog and layout) | %s vs %s entries/s = %.2f × | ≥ %.1f × | %s |\n",
			num(two.Rate()), num(one.Rate()), x, TargetReplicasScale, met(x >= TargetReplicasScale))
		if d, s := r.BaselineDouble, r.Baseline; d != nil && s != nil {
			fmt.Fprintf(&b, "| the sink alone with %d writes in flight (two replicas' worth) vs %d | %s vs %s docs/s = %.2f × | (context) | |\n",
				d.Writers, s.Writers, num(d.Rate()), num(s.Rate()), d.Rate()/s.Rate())
		}
	}

	drains := r.Scale
	if r.Drain != nil {
		drains = append([]DrainResult{*r.Drain}, r.Scale...)
	}
	if len(drains) > 0 {
		b.WriteString("\n| drain | streams | tenants | replicas | entries | XADD load/s | first ack s | seconds | entries/s | × baseline | CPU s/10k | µs/entry | peak RSS MiB |\n")
		b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, d := range drains {
			x := "-"
			if r.Baseline != nil {
				x = fmt.Sprintf("%.2f", d.Rate()/r.Baseline.Rate())
			}
			fmt.Fprintf(&b, "| %s | %d | %d | %d | %s | %s | %.2f | %.1f | %s | %s | %.3f | %.1f | %.1f |\n",
				d.Name, d.Layout.Streams(), d.Layout.Tenants, d.Replicas, num(float64(d.Entries)), num(d.LoadRate),
				d.FirstAck.Seconds(), d.Elapsed.Seconds(), num(d.Rate()), x,
				d.CPUPerEntry().Seconds()*10000, us(d.CPUPerEntry()), mib(d.PeakRSS))
		}
	}
	if l := r.Latency; l != nil && l.Flush.Count() > 0 {
		fmt.Fprintf(&b, "\nDuring the steady load the daemon made %s bulk inserts (%.1f entries each on average); their durations (persister_flush_duration_seconds): p50 ≤ %.0f ms, p90 ≤ %.0f ms, p99 ≤ %.0f ms.\n",
			num(l.Flush.Count()), float64(l.Entries)/l.Flush.Count(), 1000*l.Flush.Quantile(.5), 1000*l.Flush.Quantile(.9), 1000*l.Flush.Quantile(.99))
	}
	if l := r.Latency; l != nil && l.Entries > 0 {
		fmt.Fprintf(&b, "\nSteady load: target %s/s, achieved %s/s; daemon CPU %.1f µs/entry at that rate; XADD → acknowledged p90 %.1f ms, p95 %.1f ms, p99.9 %.1f ms (acknowledgement seen by polling Redis every %s; an entry counts once every older entry of its stream is acknowledged too).\n",
			num(l.Target), num(l.Achieved), us(l.CPU/time.Duration(l.Entries)), ms(l.Quantile(.9)), ms(l.Quantile(.95)), ms(l.Quantile(.999)), ackPoll)
	}
	if l := r.Latency; l != nil && l.Wall > 0 && len(l.ServerCPU) > 0 {
		names := slices.Sorted(maps.Keys(l.ServerCPU))
		parts := []string{fmt.Sprintf("the daemon %.0f%%", 100*l.CPU.Seconds()/l.Wall.Seconds())}
		for _, n := range names {
			parts = append(parts, fmt.Sprintf("%s %.0f%%", n, 100*l.ServerCPU[n].Seconds()/l.Wall.Seconds()))
		}
		fmt.Fprintf(&b, "\nCPU during the steady load, in %% of one core (the machine has %d): %s; the benchmark's producer and acknowledgement poller take part of the rest.\n",
			r.Machine.Cores, strings.Join(parts, ", "))
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "\n%s\n", n)
	}
	_, err := io.WriteString(w, b.String())
	return err
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
