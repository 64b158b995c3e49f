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
	hostsIndexed = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: plugin.Namespace, Subsystem: "berth", Name: "hosts",
		Help: "Docker hosts whose documents are indexed, per zone.",
	}, []string{"zone"})
	lastSync = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: plugin.Namespace, Subsystem: "berth", Name: "last_sync_timestamp_seconds",
		Help: "When the zone's index last matched Consul.",
	}, []string{"zone"})
	consulErrors = promauto.NewCounter(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: "berth", Name: "consul_errors_total",
		Help: "Failed Consul requests.",
	})
	watchRestarts = promauto.NewCounter(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: "berth", Name: "watch_restarts_total",
		Help: "Times a blocking query on the host index started over (after an error or an index reset).",
	})
	invalidRecords = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: "berth", Name: "invalid_records_total",
		Help: "KV documents or names skipped, by reason: invalid, version, too_long, duplicate, conflict, refused (the ownership policy), foreign_address (an address outside the ranges the ownership policy gives its host), oversize (a host's documents over the read bound).",
	}, []string{"reason"})
	stale = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: plugin.Namespace, Subsystem: "berth", Name: "stale",
		Help: "1 while Consul is unreachable and the zone's answers come from the last good data.",
	}, []string{"zone"})
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
		Help: "Response bytes read from Consul, by request: watch (layout 1's host list), shard (layout 2's shard key lists; with the host documents in a full load), host (one host's documents), policy (the ownership policy).",
	}, []string{"request"})
	policyValid = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: plugin.Namespace, Subsystem: "berth", Name: "policy_valid",
		Help: "0 while the ownership policy document does not validate, and the zone serves no service name, alias or address until a valid one is written; 1 with a valid policy or none.",
	}, []string{"zone"})
	consulRequests = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: "berth", Name: "consul_requests_total",
		Help: "Requests made to Consul, by request (the kinds of consul_received_bytes_total).",
	}, []string{"request"})
)

func updateGauges(zones []*Zone, hosts int) {
	for _, z := range zones {
		hostsIndexed.WithLabelValues(z.Origin()).Set(float64(hosts))
		recordsIndexed.WithLabelValues(z.Origin()).Set(float64(z.Records()))
		zoneSerial.WithLabelValues(z.Origin()).Set(float64(z.SOA().Serial))
	}
}

// setStale sets the zones' stale gauge, and their last sync when fresh.
func setStale(zones []*Zone, isStale bool) {
	for _, z := range zones {
		if isStale {
			stale.WithLabelValues(z.Origin()).Set(1)
		} else {
			stale.WithLabelValues(z.Origin()).Set(0)
			lastSync.WithLabelValues(z.Origin()).SetToCurrentTime()
		}
	}
}

// setPolicyValid sets the zones' policy_valid gauge.
func setPolicyValid(zones []*Zone, valid bool) {
	v := 0.0
	if valid {
		v = 1
	}
	for _, z := range zones {
		policyValid.WithLabelValues(z.Origin()).Set(v)
	}
}
