package metrics

import "github.com/prometheus/client_golang/prometheus"

// SharedMemory holds the families of the shared-memory carrier
// (internal/sharedmem). It is embedded in Metrics.
type SharedMemory struct {
	SMWritten           *prometheus.CounterVec
	SMSkipped           *prometheus.CounterVec
	SMFoundByReconcile  *prometheus.CounterVec
	SMNotifications     *prometheus.CounterVec
	SMKeysIgnored       *prometheus.CounterVec
	SMReconcileDuration prometheus.Histogram
	SMReconcileKeys     prometheus.Counter
	SMReconcileLast     prometheus.Gauge
	SMPending           prometheus.Gauge
	SMLiveCapture       prometheus.Gauge
}

func newSharedMemory() SharedMemory {
	return SharedMemory{
		SMWritten: counterVec("persister_sm_values_written_total",
			"Shared-memory documents written, by op (value, tombstone, rescued: the server refused the value; val null, the exact text kept).", "tenant", "op"),
		SMSkipped: counterVec("persister_sm_values_skipped_total",
			"Shared-memory observations not written, by reason: unchanged (same content as stored), superseded (a newer observation of the key came within the flush window), stale (a newer version is stored).", "tenant", "reason"),
		SMFoundByReconcile: counterVec("persister_sm_found_by_reconcile_total",
			"Shared-memory values written because a reconcile pass found them changed, not a notification: changes made while the persister was down, or missed notifications.", "tenant"),
		SMNotifications: counterVec("persister_sm_notifications_total",
			"Keyspace notifications received for shared-memory keys, by class (write, delete, ignored: expiry, eviction, TTL changes, or deletes in keep mode).", "event"),
		SMKeysIgnored: counterVec("persister_sm_keys_ignored_total",
			"Shared-memory keys seen but not carried, by reason (unconfigured_tenant, not_string, other_prefix, prefix_form, ambiguous_prefix); counted at every sighting.", "reason"),
		SMReconcileDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "persister_sm_reconcile_duration_seconds",
			Help:    "Duration of one successful reconcile pass (SCAN, hash comparison, reads handed to the writer).",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 16),
		}),
		SMReconcileKeys: counter("persister_sm_reconcile_keys_scanned_total",
			"Shared-memory keys of configured tenants found by reconcile scans."),
		SMReconcileLast: gauge("persister_sm_reconcile_last_success_timestamp_seconds",
			"Unix time of the end of the last successful reconcile pass."),
		SMPending: gauge("persister_sm_pending_values",
			"Shared-memory keys whose latest value waits for a flush."),
		SMLiveCapture: gauge("persister_sm_live_capture",
			"1 while keyspace notifications are subscribed on every master and notify-keyspace-events is known to hold the needed flags; 0 when values arrive through reconcile only."),
	}
}

func (s SharedMemory) collectors() []prometheus.Collector {
	return []prometheus.Collector{s.SMWritten, s.SMSkipped, s.SMFoundByReconcile, s.SMNotifications,
		s.SMKeysIgnored, s.SMReconcileDuration, s.SMReconcileKeys, s.SMReconcileLast, s.SMPending, s.SMLiveCapture}
}
