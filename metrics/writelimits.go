package metrics

import "github.com/prometheus/client_golang/prometheus"

// Scopes of the write limit metrics (label scope): a MongoDB connection,
// or one database on it.
const (
	ScopeConnection = "connection"
	ScopeDatabase   = "database"
)

// WriteLimit is the state of one write limiter (internal/arc) at a scrape.
type WriteLimit struct {
	// Scope is ScopeConnection or ScopeDatabase; Name the connection's
	// name or connection/database.
	Scope, Name string
	Limit       int
	InFlight    int
	// Floor is the latency floor of full batches in seconds, 0 before any.
	Floor float64
}

var (
	writeLimitDesc = prometheus.NewDesc("persister_write_concurrency_limit",
		"Bulk writes allowed in flight now, per MongoDB connection and per database (PERSISTER_WRITE_CONCURRENCY=adaptive moves it within [1, PERSISTER_MAX_CONCURRENT_WRITES]; fixed keeps PERSISTER_MAX_CONCURRENT_WRITES per connection).",
		[]string{"scope", "name"}, nil)
	writeInflightDesc = prometheus.NewDesc("persister_writes_in_flight",
		"Bulk writes in flight now, per MongoDB connection and per database.",
		[]string{"scope", "name"}, nil)
	writeFloorDesc = prometheus.NewDesc("persister_write_latency_floor_seconds",
		"Latency floor of the largest batches written: the fastest such write of the last 2 to 4 minutes, against which the adaptive limit judges writes.",
		[]string{"scope", "name"}, nil)
)

// writeLimits collects the limiters' state at scrape time.
type writeLimits func() []WriteLimit

func (f writeLimits) Describe(ch chan<- *prometheus.Desc) {
	ch <- writeLimitDesc
	ch <- writeInflightDesc
	ch <- writeFloorDesc
}

func (f writeLimits) Collect(ch chan<- prometheus.Metric) {
	for _, l := range f() {
		ch <- prometheus.MustNewConstMetric(writeLimitDesc, prometheus.GaugeValue, float64(l.Limit), l.Scope, l.Name)
		ch <- prometheus.MustNewConstMetric(writeInflightDesc, prometheus.GaugeValue, float64(l.InFlight), l.Scope, l.Name)
		ch <- prometheus.MustNewConstMetric(writeFloorDesc, prometheus.GaugeValue, l.Floor, l.Scope, l.Name)
	}
}

// RegisterWriteLimits registers the write limit gauges, read from limits
// at every scrape.
func RegisterWriteLimits(reg prometheus.Registerer, limits func() []WriteLimit) {
	reg.MustRegister(writeLimits(limits))
}
