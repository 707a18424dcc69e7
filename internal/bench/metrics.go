package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
)

// Histogram is a Prometheus histogram's cumulative buckets (upper bound →
// count), read from a daemon's /metrics.
type Histogram map[float64]float64

// ScrapeHistogram reads the buckets of the series of family name whose
// labels contain every one of match (e.g. `result="ok"`), summed over the
// series that do.
func (d *Daemon) ScrapeHistogram(ctx context.Context, name string, match ...string) (Histogram, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.HTTPAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", d.Name, err)
	}
	defer resp.Body.Close()
	return parseHistogram(resp.Body, name, match...)
}

func parseHistogram(r io.Reader, name string, match ...string) (Histogram, error) {
	h := Histogram{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	prefix := name + "_bucket{"
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		end := strings.LastIndexByte(line, '}')
		if end < 0 {
			continue
		}
		labels := line[len(prefix):end]
		ok := true
		for _, m := range match {
			ok = ok && strings.Contains(labels, m)
		}
		if !ok {
			continue
		}
		i := strings.Index(labels, `le="`)
		if i < 0 {
			continue
		}
		le := labels[i+4:]
		le = le[:strings.IndexByte(le, '"')]
		bound := math.Inf(1)
		if le != "+Inf" {
			if bound, ok = parseFloat(le); !ok {
				continue
			}
		}
		v, ok := parseFloat(strings.TrimSpace(line[end+1:]))
		if !ok {
			continue
		}
		h[bound] += v
	}
	return h, sc.Err()
}

func parseFloat(s string) (float64, bool) {
	if f := strings.Fields(s); len(f) > 0 {
		s = f[0]
	}
	v, err := strconv.ParseFloat(s, 64)
	return v, err == nil
}

// Sub returns the buckets of h minus those of before (the observations
// made in between).
func (h Histogram) Sub(before Histogram) Histogram {
	out := Histogram{}
	for b, v := range h {
		out[b] = v - before[b]
	}
	return out
}

// Count is the number of observations.
func (h Histogram) Count() float64 { return h[math.Inf(1)] }

// Quantile returns the upper bound of the bucket holding the q-quantile
// (so the quantile is at most that), or 0 without observations.
func (h Histogram) Quantile(q float64) float64 {
	total := h.Count()
	if total <= 0 {
		return 0
	}
	bounds := make([]float64, 0, len(h))
	for b := range h {
		bounds = append(bounds, b)
	}
	sort.Float64s(bounds)
	for _, b := range bounds {
		if h[b] >= q*total {
			return b
		}
	}
	return math.Inf(1)
}
