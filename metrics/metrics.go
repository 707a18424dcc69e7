// Package metrics defines every Prometheus metric the persister exports,
// registered on a registry the caller passes in.
package metrics

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
)

// Label values used across packages.
const (
	OutcomeInserted  = "inserted"
	OutcomeDuplicate = "duplicate"

	StateConsumed           = "consumed"
	StateUnconfiguredTenant = "unconfigured_tenant"

	// Causes of persister_entries_lost_total: trimmed while pending (read,
	// not stored), and trimmed before the group read them at all.
	CauseTrimmed       = "trimmed_before_stored"
	CauseTrimmedUnread = "trimmed_before_read"

	// Results of persister_flush_duration_seconds.
	ResultOK    = "ok"
	ResultError = "error"

	// Operations of persister_redis_errors_total.
	OpScan           = "scan"
	OpXReadGroup     = "xreadgroup"
	OpXGroupCreate   = "xgroup_create"
	OpClaim          = "claim"
	OpXInfoConsumers = "xinfo_consumers"
	OpLag            = "lag"
	OpSMSubscribe    = "sm_subscribe"
	OpSMGet          = "sm_get"
	OpSMReconcile    = "sm_reconcile"
	OpSMLookup       = "sm_lookup"
	OpSMConfig       = "sm_config"

	// Classes of persister_write_errors_total.
	ClassRetryable      = "retryable"
	ClassPermanent      = "permanent"
	ClassFatal          = "fatal"
	ClassUnknownOutcome = "unknown_outcome"
)

// WriteErrorClasses lists the classes of persister_write_errors_total.
func WriteErrorClasses() []string {
	return []string{ClassRetryable, ClassPermanent, ClassFatal, ClassUnknownOutcome}
}

// Metrics holds the persister's metric families.
type Metrics struct {
	StreamLag        *prometheus.GaugeVec
	StreamPending    *prometheus.GaugeVec
	OldestUnackedAge *prometheus.GaugeVec
	EntriesStored    *prometheus.CounterVec
	StoreLatency     *prometheus.HistogramVec
	BatchSize        prometheus.Histogram
	FlushDuration    *prometheus.HistogramVec
	WriteErrors      *prometheus.CounterVec
	DeadLettered     *prometheus.CounterVec
	Lost             *prometheus.CounterVec
	Malformed        *prometheus.CounterVec
	Streams          *prometheus.GaugeVec
	KeysIgnored      *prometheus.GaugeVec
	TenantHalted     *prometheus.GaugeVec
	RedisErrors      *prometheus.CounterVec
	EntriesRead      *prometheus.CounterVec
	Acked            *prometheus.CounterVec
	Claimed          *prometheus.CounterVec
	InflightEntries  *prometheus.GaugeVec
	LagCollected     prometheus.Gauge
	BuildInfo        *prometheus.GaugeVec

	SharedMemory // persister_sm_*: metrics/sharedmem.go
}

// New creates the metrics and registers them on reg.
func New(reg prometheus.Registerer, version string) *Metrics {
	m := &Metrics{
		StreamLag: gaugeVec("persister_stream_lag_entries",
			"Entries in the streams not yet delivered to the persister's group (XINFO GROUPS lag, computed when Redis reports null).", "tenant", "kind"),
		StreamPending: gaugeVec("persister_stream_pending_entries",
			"Entries delivered to the persister's group and not yet acknowledged (stored).", "tenant", "kind"),
		OldestUnackedAge: gaugeVec("persister_oldest_unacked_age_seconds",
			"Age, from its stream id time, of the oldest entry not yet stored (pending or undelivered).", "tenant", "kind"),
		EntriesStored: counterVec("persister_entries_stored_total",
			"Entries stored and acknowledged, by collection and outcome (inserted, or duplicate = already stored).", "tenant", "collection", "outcome"),
		StoreLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "persister_store_latency_seconds",
			Help:    "Time from an entry's stream id time to its acknowledgement after the write.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 1800},
		}, []string{"kind"}),
		BatchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "persister_batch_size_entries",
			Help:    "Entries per bulk write.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14),
		}),
		FlushDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "persister_flush_duration_seconds",
			Help:    "Duration of one bulk write, by result (ok, error).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}, []string{"result"}),
		WriteErrors: counterVec("persister_write_errors_total",
			"MongoDB write errors by class (retryable, permanent, fatal, unknown_outcome).", "tenant", "class"),
		DeadLettered: counterVec("persister_entries_dead_lettered_total",
			"Entries the persister itself routed to dead_letters because they could not be stored as messages, by reason.", "tenant", "reason"),
		Lost: counterVec("persister_entries_lost_total",
			"Entries that reached Redis but can never be stored, by cause: trimmed_before_stored (read, trimmed while pending), trimmed_before_read (trimmed before the group read them).", "tenant", "cause"),
		Malformed: counterVec("persister_entries_malformed_total",
			"Entries stored with a defect recorded in _system.defects, by defect.", "tenant", "defect"),
		Streams: gaugeVec("persister_streams",
			"Streams found by discovery, by kind and state (consumed, unconfigured_tenant).", "kind", "state"),
		KeysIgnored: gaugeVec("persister_keys_ignored",
			"Chronow-shaped stream keys found by the last discovery pass that are not consumed, by kind and reason (unconfigured_tenant, other_prefix, prefix_form, ambiguous_prefix). Each key is logged once with what to set.", "kind", "reason"),
		TenantHalted: gaugeVec("persister_tenant_halted",
			"1 while a tenant's writes are halted by a fatal error (authentication, authorization, conflicting index).", "tenant"),
		RedisErrors: counterVec("persister_redis_errors_total",
			"Redis command errors by operation.", "op"),
		EntriesRead: counterVec("persister_entries_read_total",
			"Entries read from streams (new, pending re-reads and claims).", "tenant", "kind"),
		Acked: counterVec("persister_entries_acked_total",
			"Entries acknowledged with XACK.", "tenant", "kind"),
		Claimed: counterVec("persister_entries_claimed_total",
			"Pending entries of other consumers claimed with XAUTOCLAIM.", "tenant", "kind"),
		InflightEntries: gaugeVec("persister_inflight_entries",
			"Entries read and held in memory, not yet acknowledged.", "tenant"),
		LagCollected: gauge("persister_lag_collected_timestamp_seconds",
			"Unix time of the last pass that measured every consumed stream (lag, pending, oldest age, unseen trims)."),
		BuildInfo: gaugeVec("persister_build_info",
			"Build information; always 1.", "version", "goversion"),
	}
	reg.MustRegister(m.StreamLag, m.StreamPending, m.OldestUnackedAge, m.EntriesStored, m.StoreLatency,
		m.BatchSize, m.FlushDuration, m.WriteErrors, m.DeadLettered, m.Lost, m.Malformed, m.Streams, m.KeysIgnored,
		m.TenantHalted, m.RedisErrors, m.EntriesRead, m.Acked, m.Claimed, m.InflightEntries, m.LagCollected, m.BuildInfo)
	m.SharedMemory = newSharedMemory()
	reg.MustRegister(m.SharedMemory.collectors()...)
	m.BuildInfo.WithLabelValues(version, runtime.Version()).Set(1)
	return m
}

// TopStreams are the per-stream gauges of the streams with the oldest
// unstored entries (PERSISTER_METRICS_TOP_STREAMS > 0 only).
type TopStreams struct {
	Lag *prometheus.GaugeVec
	Age *prometheus.GaugeVec
}

// RegisterTopStreams creates and registers the per-stream gauges.
func RegisterTopStreams(reg prometheus.Registerer) TopStreams {
	labels := []string{"tenant", "kind", "stream"}
	t := TopStreams{
		Lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "persister_top_stream_lag_entries",
			Help: "Lag (entries not yet delivered) of the streams with the oldest unstored entries, at most PERSISTER_METRICS_TOP_STREAMS of them.",
		}, labels),
		Age: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "persister_top_stream_oldest_unacked_age_seconds",
			Help: "Oldest unstored entry age of the streams with the oldest unstored entries, at most PERSISTER_METRICS_TOP_STREAMS of them.",
		}, labels),
	}
	reg.MustRegister(t.Lag, t.Age)
	return t
}

// RegisterBudget registers the memory budget's gauges (PERSISTER_MAX_INFLIGHT_BYTES),
// read at scrape time from used.
func RegisterBudget(reg prometheus.Registerer, used func() int64, limit int64) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "persister_inflight_bytes",
			Help: "Bytes of stream entries held in memory (read, batched or being written), all tenants; reads wait while it is at persister_inflight_bytes_limit.",
		}, func() float64 { return float64(used()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "persister_inflight_bytes_limit",
			Help: "PERSISTER_MAX_INFLIGHT_BYTES: the memory budget of entries in hand.",
		}, func() float64 { return float64(limit) }),
	)
}
