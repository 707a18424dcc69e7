package promtext

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestEachAndSum(t *testing.T) {
	body := `# HELP a_total A.
# TYPE a_total counter
a_total{x="1"} 2
a_total{x="2 3"} 3.5
a_total_other 100
b 7

c NaNx
`
	var series []string
	if err := Each(body, func(s string, _ float64) { series = append(series, s) }); err != nil {
		t.Fatal(err)
	}
	if want := []string{`a_total{x="1"}`, `a_total{x="2 3"}`, "a_total_other", "b"}; len(series) != len(want) {
		t.Fatalf("series %q, want %q", series, want)
	} else {
		for i := range want {
			if series[i] != want[i] {
				t.Errorf("series[%d] = %q, want %q", i, series[i], want[i])
			}
		}
	}
	if sum, ok := Sum(body, "a_total"); !ok || sum != 5.5 {
		t.Errorf("Sum(a_total) = %v, %v; want 5.5, true", sum, ok)
	}
	if sum, ok := Sum(body, "b"); !ok || sum != 7 {
		t.Errorf("Sum(b) = %v, %v; want 7, true", sum, ok)
	}
	if _, ok := Sum(body, "missing"); ok {
		t.Error("Sum(missing) found samples")
	}
}

func TestSeriesAndGatherSum(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "c_total", Help: "c"}, []string{"tenant", "kind"})
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g", Help: "g"})
	reg.MustRegister(c, g)
	c.WithLabelValues("a", "topic").Add(2)
	c.WithLabelValues("a", "dlq").Add(3)
	c.WithLabelValues("b", "topic").Add(5)
	g.Set(7)
	if ms, all := Series(t, reg, "c_total", "tenant", "a"); len(ms) != 2 || all != 3 {
		t.Errorf("Series(tenant=a) = %d of %d, want 2 of 3", len(ms), all)
	}
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"c_total", nil, 10},
		{"c_total", []string{"tenant", "a"}, 5},
		{"c_total", []string{"tenant", "a", "kind", "dlq"}, 3},
		{"c_total", []string{"tenant", "c"}, 0},
		{"g", nil, 7},
		{"missing", nil, 0},
	} {
		if got := GatherSum(t, reg, tc.name, tc.labels...); got != tc.want {
			t.Errorf("GatherSum(%s, %v) = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
}
