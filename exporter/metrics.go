package exporter

import (
	"net/http"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metric names are berth_exporter_<name>, with Namespace and Subsystem set
// as CoreDNS's plugins set theirs (coredns_hosts_...).
const (
	metricsNamespace = "berth"
	metricsSubsystem = "exporter"
)

// Metrics are the exporter's Prometheus metrics. A Metrics is a
// prometheus.Collector that nothing registers by itself: the binary
// registers it (cmd/berth-exporter), so that a library user or a test picks
// its own registry and several exporters can live in one process.
type Metrics struct {
	ContainersSeen      prometheus.Gauge
	ContainersPublished prometheus.Gauge
	ContainersSkipped   *prometheus.GaugeVec   // by reason
	BindingsSkipped     *prometheus.CounterVec // by reason: the host IP's address class
	LabelsSkipped       *prometheus.CounterVec // by reason: label values left out of published documents
	Reconciles          *prometheus.CounterVec
	ReconcileDuration   prometheus.Histogram
	KVWrites            *prometheus.CounterVec // by op: set, delete
	KVTxns              prometheus.Counter
	ConsulErrors        prometheus.Counter
	DockerErrors        prometheus.Counter
	EngineReachable     prometheus.Gauge       // 1 while the engine answers (reach.go)
	StreamReconnects    *prometheus.CounterVec // by cause: backoff, engine_answered
	Events              *prometheus.CounterVec // by action
	EventLatency        prometheus.Histogram
}

// NewMetrics creates the metrics, unregistered.
func NewMetrics() *Metrics {
	const ns, sub = metricsNamespace, metricsSubsystem
	return &Metrics{
		ContainersSeen: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "containers_seen",
			Help: "Running containers the last reconcile saw."}),
		ContainersPublished: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "containers_published",
			Help: "Containers with a document in the desired state."}),
		ContainersSkipped: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "containers_skipped",
			Help: "Running containers not published, by reason."}, []string{"reason"}),
		BindingsSkipped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "bindings_skipped_total",
			Help: "Port bindings not published because of their host IP's address class (loopback, link-local, multicast), each counted once when first seen."},
			[]string{"reason"}),
		LabelsSkipped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "label_values_skipped_total",
			Help: "Label or variable values left out of published documents (aliases past 8, reserved or too long aliases, bad or surplus tags), by reason, each counted once when first seen."},
			[]string{"reason"}),
		Reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "reconciles_total",
			Help: "Reconciles, by kind (full, partial) and result (ok, error)."}, []string{"kind", "result"}),
		ReconcileDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "reconcile_duration_seconds",
			Help: "Time one reconcile took, from Docker to KV.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 15)}),
		KVWrites: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "kv_writes_total",
			Help: "Container documents written to Consul KV, by op (set, delete)."}, []string{"op"}),
		KVTxns: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "kv_transactions_total",
			Help: "Consul transactions committed (each bumps the host document's rev)."}),
		ConsulErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "consul_errors_total",
			Help: "Failed Consul requests."}),
		DockerErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "docker_errors_total",
			Help: "Failed Docker requests and broken event streams."}),
		EngineReachable: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "engine_reachable",
			Help: "1 while the container engine answers the exporter's requests; 0 from a request it did not answer until the next it does."}),
		StreamReconnects: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "event_stream_reconnects_total",
			Help: "Resubscriptions of a broken event stream, by cause: backoff (its wait ran out) or engine_answered (the engine answered another request first)."},
			[]string{"cause"}),
		Events: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "docker_events_total",
			Help: "Docker events received, by action."}, []string{"action"}),
		EventLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "event_to_kv_seconds",
			Help:    "Time from a Docker event's timestamp to the KV transaction that reflects it.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}),
	}
}

func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.ContainersSeen, m.ContainersPublished, m.ContainersSkipped, m.BindingsSkipped, m.LabelsSkipped,
		m.Reconciles, m.ReconcileDuration, m.KVWrites, m.KVTxns, m.ConsulErrors, m.DockerErrors, m.EngineReachable, m.StreamReconnects, m.Events, m.EventLatency}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.collectors() {
		c.Collect(ch)
	}
}

// BuildInfo is berth_exporter_build_info{version,goversion}, always 1: which
// build runs.
func BuildInfo() prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "build_info",
		Help:        "Always 1: the exporter's version and the Go version it was built with.",
		ConstLabels: prometheus.Labels{"version": Version, "goversion": runtime.Version()}})
	g.Set(1)
	return g
}

// Handler serves /metrics from g and /healthz (health.go).
func (e *Exporter) Handler(g prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", e.serveHealth)
	return mux
}
