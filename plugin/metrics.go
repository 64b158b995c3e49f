package berth

import (
	"io"
	"net/http"
	"strings"

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
		Help: "KV documents or names skipped, by reason: invalid, version, too_long, duplicate, conflict, refused (the ownership policy).",
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
	consulBytes = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: "berth", Name: "consul_received_bytes_total",
		Help: "Response bytes read from Consul, by request: watch (host list), host (one host's containers), full (safety-net reload).",
	}, []string{"request"})
)

func updateGauges(zones []*Zone, hosts int) {
	hostsIndexed.Set(float64(hosts))
	for _, z := range zones {
		recordsIndexed.WithLabelValues(z.Origin()).Set(float64(z.Records()))
		zoneSerial.WithLabelValues(z.Origin()).Set(float64(z.SOA().Serial))
	}
}

// countingTransport counts the bytes of every Consul response, so that the
// cost of a change can be read off coredns_berth_consul_received_bytes_total.
type countingTransport struct{ next http.RoundTripper }

func (t countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	kind := "host"
	switch {
	case strings.HasSuffix(req.URL.Path, "/hosts/"):
		kind = "watch"
	case strings.HasSuffix(req.URL.Path, "/containers/"):
		kind = "full"
	}
	resp.Body = &countingBody{ReadCloser: resp.Body, counter: consulBytes.WithLabelValues(kind)}
	return resp, nil
}

type countingBody struct {
	io.ReadCloser
	counter prometheus.Counter
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.counter.Add(float64(n))
	return n, err
}
