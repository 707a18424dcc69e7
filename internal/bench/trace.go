package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"time"
)

// TraceResult is the adaptive write limit of a drain during which the
// Mongo-compatible server was stopped (SIGSTOP) and continued (SIGCONT).
type TraceResult struct {
	Drain DrainResult
	// StopAt and ContAt are the times of SIGSTOP and SIGCONT since the
	// daemon started; StopAt is 0 when the drain ended before it.
	StopAt, ContAt time.Duration
	// Points are the daemon's connection limit and writes in flight, read
	// from its /metrics every traceEvery.
	Points []TracePoint
}

// TracePoint is one reading of the daemon's write limit.
type TracePoint struct {
	At       time.Duration
	Limit    int
	InFlight int
}

// traceEvery is how often the trace reads the daemon's metrics.
const traceEvery = 100 * time.Millisecond

// traceStage drains a quarter of the main backlog while the server is stopped for
// TraceStopFor, TraceStopAfter into the drain, recording the limit. The
// drain checks, as every drain does, that every entry was stored.
func (r *runner) traceStage(ctx context.Context) error {
	pid, ok := r.env.ServerPids[ServerMongo]
	if !ok {
		r.rep.Notes = append(r.rep.Notes, "The trace stage did not run: the benchmark can stop only a server it started.")
		return nil
	}
	tr := &TraceResult{}
	during := func(ctx context.Context, ds []*Daemon) {
		tr.record(ctx, ds[0], pid, r.cfg.TraceStopAfter, r.cfg.TraceStopFor)
	}
	d, _, err := r.env.Drain(ctx, "trace", Mixed, max(r.cfg.Entries/4, 1), 1, false, during)
	if err != nil {
		return err
	}
	tr.Drain = d
	r.rep.Trace = tr
	s := tr.Summary()
	r.log.Info("trace done", "stopped_at_s", tr.StopAt.Seconds(), "before", s.Before, "lowest", s.Lowest, "back_at_s", s.BackAt.Seconds())
	return nil
}

// record reads the limit until ctx ends, stopping the server at after for
// stopFor. The server is always continued before record returns.
func (tr *TraceResult) record(ctx context.Context, d *Daemon, pid int, after, stopFor time.Duration) {
	start := time.Now()
	stopped := false
	defer func() {
		if stopped {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}()
	tick := time.NewTicker(traceEvery)
	defer tick.Stop()
	for {
		el := time.Since(start)
		if tr.StopAt == 0 && el >= after && syscall.Kill(pid, syscall.SIGSTOP) == nil {
			stopped, tr.StopAt = true, el
		}
		if stopped && el >= tr.StopAt+stopFor {
			_ = syscall.Kill(pid, syscall.SIGCONT)
			stopped, tr.ContAt = false, el
		}
		if text, err := d.scrape(ctx); err == nil {
			tr.Points = append(tr.Points, TracePoint{At: el,
				Limit:    int(gaugeSum(text, "persister_write_concurrency_limit", `scope="connection"`)),
				InFlight: int(gaugeSum(text, "persister_writes_in_flight", `scope="connection"`))})
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

// TraceSummary is what the trace shows.
type TraceSummary struct {
	// Before is the limit at the last reading before the stop.
	Before int
	// Lowest is the lowest limit from the stop on, first read at LowestAt.
	Lowest   int
	LowestAt time.Duration
	// Highest is the highest limit after LowestAt.
	Highest int
	// BackAt is when the limit first got back to Before after LowestAt
	// (0: never).
	BackAt time.Duration
}

// Summary reads the trace; zero when the stop did not happen.
func (tr *TraceResult) Summary() TraceSummary {
	var s TraceSummary
	if tr.StopAt == 0 {
		return s
	}
	low := -1
	for i, p := range tr.Points {
		if p.At < tr.StopAt {
			s.Before = p.Limit
			continue
		}
		if low < 0 || p.Limit < s.Lowest {
			low, s.Lowest, s.LowestAt = i, p.Limit, p.At
		}
	}
	if low < 0 {
		return s
	}
	for _, p := range tr.Points[low:] {
		s.Highest = max(s.Highest, p.Limit)
		if s.BackAt == 0 && p.Limit >= s.Before && p.At > s.LowestAt {
			s.BackAt = p.At
		}
	}
	return s
}

// Changes renders the trace as "time: limit" at each change of the limit.
func (tr *TraceResult) Changes() string {
	var parts []string
	last := -1
	for _, p := range tr.Points {
		if p.Limit != last {
			parts = append(parts, fmt.Sprintf("%.1fs %d", p.At.Seconds(), p.Limit))
			last = p.Limit
		}
	}
	return strings.Join(parts, ", ")
}

// scrape returns the daemon's /metrics text.
func (d *Daemon) scrape(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.HTTPAddr+"/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("scrape %s: %w", d.Name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// gaugeSum sums the samples of family name whose labels contain every one
// of match.
func gaugeSum(text, name string, match ...string) float64 {
	total := 0.0
	for line := range strings.SplitSeq(text, "\n") {
		rest, ok := strings.CutPrefix(line, name+"{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		all := true
		for _, m := range match {
			all = all && strings.Contains(labels, m)
		}
		if v, ok := parseFloat(value); ok && all {
			total += v
		}
	}
	return total
}
