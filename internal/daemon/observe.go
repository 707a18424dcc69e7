package daemon

import (
	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/dlq"
	"github.com/chronow/persister/internal/lag"
	"github.com/chronow/persister/internal/rescue"
	"github.com/chronow/persister/metrics"
)

// newLagCollector builds the stream-level collector (internal/lag) over the
// streams discovery handed to each tenant.
func (d *Daemon) newLagCollector() *lag.Collector {
	kinds := make([]string, 0, len(d.decoders))
	for k := range d.decoders {
		kinds = append(kinds, string(k))
	}
	return lag.New(d.rdb, lag.Config{
		Group:      d.cfg.Persister.Group,
		Layout:     d.layout,
		Interval:   d.cfg.Persister.MetricsInterval,
		Kinds:      kinds,
		TopStreams: d.cfg.Persister.MetricsTopStreams,
	}, d.consumedStreams, d.m, d.reg, d.log)
}

// consumedStreams returns each tenant's streams as discovery last set them.
func (d *Daemon) consumedStreams() map[string][]string {
	out := make(map[string][]string, len(d.tenants))
	for id, tp := range d.tenants {
		keys, _ := tp.Streams().Get()
		out[id] = keys
	}
	return out
}

// initSeries exports the bounded per-tenant counters at 0 from the start, so
// the first increment shows in rate() and increase() and alert rules see a
// series instead of nothing.
func (d *Daemon) initSeries() {
	for id := range d.tenants {
		d.m.Lost.WithLabelValues(id, metrics.CauseTrimmed)
		d.m.Lost.WithLabelValues(id, metrics.CauseTrimmedUnread)
		for _, class := range metrics.WriteErrorClasses() {
			d.m.WriteErrors.WithLabelValues(id, class)
		}
		for _, outcome := range []string{metrics.OutcomeInserted, metrics.OutcomeDuplicate} {
			d.m.EntriesStored.WithLabelValues(id, config.CollMessages, outcome)
		}
		for _, reason := range []string{dlq.ReasonPoison, string(rescue.DefectRefused)} {
			d.m.DeadLettered.WithLabelValues(id, reason)
		}
		d.m.TenantHalted.WithLabelValues(id).Set(0)
	}
	for _, op := range []string{metrics.OpScan, metrics.OpXReadGroup, metrics.OpXGroupCreate, metrics.OpLag} {
		d.m.RedisErrors.WithLabelValues(op)
	}
}

// HTTPAddr returns the address the HTTP server listens on, or "" until Run
// has bound it (tests set PERSISTER_HTTP_ADDR=127.0.0.1:0).
func (d *Daemon) HTTPAddr() string { return d.addr(&d.httpAddr) }

func (d *Daemon) setHTTPAddr(addr string) { d.setAddr(&d.httpAddr, addr) }

// addr reads a bound address field (httpAddr, probeAddr) under d.mu.
func (d *Daemon) addr(field *string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return *field
}

// setAddr sets a bound address field under d.mu.
func (d *Daemon) setAddr(field *string, addr string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	*field = addr
}
