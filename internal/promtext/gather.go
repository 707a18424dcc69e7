package promtext

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Series returns the series of family name in g whose labels include every
// name/value pair of labels, and how many series the family has in all. A
// Gather error fails t.
func Series(t testing.TB, g prometheus.Gatherer, name string, labels ...string) (match []*dto.Metric, all int) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		all += len(mf.GetMetric())
		for _, m := range mf.GetMetric() {
			if hasLabels(m, labels) {
				match = append(match, m)
			}
		}
	}
	return match, all
}

func hasLabels(m *dto.Metric, labels []string) bool {
	have := map[string]string{}
	for _, lp := range m.GetLabel() {
		have[lp.GetName()] = lp.GetValue()
	}
	for i := 0; i+1 < len(labels); i += 2 {
		if have[labels[i]] != labels[i+1] {
			return false
		}
	}
	return true
}

// GatherSum sums the counter and gauge values of the series Series returns.
func GatherSum(t testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	ms, _ := Series(t, g, name, labels...)
	var sum float64
	for _, m := range ms {
		sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
	}
	return sum
}

// Value reads a gauge's or a counter's current value (-1 if it cannot be
// read).
func Value(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	if m.Gauge != nil {
		return m.Gauge.GetValue()
	}
	return m.Counter.GetValue()
}
