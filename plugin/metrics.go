package berth

import (
	"github.com/coredns/coredns/plugin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var (
	recordsIndexed = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: plugin.Namespace, Subsystem: "berth", Name: "records",
		Help: "Resource records indexed, per zone.",
	}, []string{"zone"})
	hostsIndexed = promauto.NewGauge(prometheus.GaugeOpts{
		Namespace: plugin.Namespace, Subsystem: "berth", Name: "hosts",
		Help: "Docker hosts whose documents are indexed.",
	})
	lastSync = promauto.NewGauge(prometheus.GaugeOpts{
		Namespace: plugin.Namespace, Subsystem: "berth", Name: "last_sync_timestamp_seconds",
		Help: "When the index last matched Consul.",
	})
	consulErrors = promauto.NewCounter(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: "berth", Name: "consul_errors_total",
		Help: "Failed Consul requests.",
	})
	watchRestarts = promauto.NewCounter(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: "berth", Name: "watch_restarts_total",
		Help: "Times the blocking query on the host list started over (after an error or an index reset).",
	})
	invalidRecords = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: "berth", Name: "invalid_records_total",
		Help: "KV documents or names skipped, by reason: invalid, version, too_long, duplicate, conflict, refused (the ownership policy), oversize (a host's documents over the read bound).",
	}, []string{"reason"})
	stale = promauto.NewGauge(prometheus.GaugeOpts{
		Namespace: plugin.Namespace, Subsystem: "berth", Name: "stale",
		Help: "1 while Consul is unreachable and answers come from the last good data.",
	})
	zoneSerial = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: plugin.Namespace, Subsystem: "berth", Name: "soa_serial",
		Help: "The zone's SOA serial: Consul's index of the data served (every server on one Consul serves the same).",
	}, []string{"zone"})
	transfers = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: "berth", Name: "transfers_total",
		Help: "Zone transfers served, by kind: ixfr (differences from the journal or only the SOA) or axfr (the whole zone).",
	}, []string{"zone", "kind"})
	notifies = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: "berth", Name: "notifies_total",
		Help: "NOTIFY rounds sent to the transfer plugin's secondaries, by result: ok or failed (some secondary did not accept).",
	}, []string{"zone", "result"})
	nonQueries = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: "berth", Name: "non_queries_total",
		Help: "Requests with an opcode other than QUERY, refused (NOTIFY) or not implemented (the rest), by opcode.",
	}, []string{"zone", "opcode"})
	hostFetchesDeferred = promauto.NewCounter(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: "berth", Name: "host_fetches_deferred_total",
		Help: "Times a host changed faster than its fetch rate and had its changes coalesced.",
	})
	consulBytes = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: "berth", Name: "consul_received_bytes_total",
		Help: "Response bytes read from Consul, by request: watch (the host list), host (one host's containers), policy (the ownership policy).",
	}, []string{"request"})
)

func updateGauges(zones []*Zone, hosts int) {
	hostsIndexed.Set(float64(hosts))
	for _, z := range zones {
		recordsIndexed.WithLabelValues(z.Origin()).Set(float64(z.Records()))
		zoneSerial.WithLabelValues(z.Origin()).Set(float64(z.SOA().Serial))
	}
}
