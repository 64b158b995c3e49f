package exporter

import (
	"net/http"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the exporter's Prometheus metrics, registered on a registry of
// its own so that several exporters can live in one process (tests).
type Metrics struct {
	Registry *prometheus.Registry

	ContainersSeen      prometheus.Gauge
	ContainersPublished prometheus.Gauge
	ContainersSkipped   *prometheus.GaugeVec   // by reason
	BindingsSkipped     *prometheus.CounterVec // by reason: the host IP's address class
	Reconciles          *prometheus.CounterVec
	ReconcileDuration   prometheus.Histogram
	KVWrites            *prometheus.CounterVec // by op: set, delete
	KVTxns              prometheus.Counter
	ConsulErrors        prometheus.Counter
	DockerErrors        prometheus.Counter
	Events              *prometheus.CounterVec // by action
	EventLatency        prometheus.Histogram
	BuildInfo           prometheus.Gauge // always 1; the labels say which build runs
}

// NewMetrics creates the metrics on a new registry.
func NewMetrics() *Metrics {
	const ns = "berth_exporter"
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		ContainersSeen: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "containers_seen",
			Help: "Running containers the last reconcile saw."}),
		ContainersPublished: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "containers_published",
			Help: "Containers with a document in the desired state."}),
		ContainersSkipped: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "containers_skipped",
			Help: "Running containers not published, by reason."}, []string{"reason"}),
		BindingsSkipped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "bindings_skipped_total",
			Help: "Port bindings not published because of their host IP's address class (loopback, link-local, multicast), each counted once when first seen."},
			[]string{"reason"}),
		Reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "reconciles_total",
			Help: "Reconciles, by kind (full, partial) and result (ok, error)."}, []string{"kind", "result"}),
		ReconcileDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "reconcile_duration_seconds",
			Help: "Time one reconcile took, from Docker to KV.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 15)}),
		KVWrites: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "kv_writes_total",
			Help: "Container documents written to Consul KV, by op (set, delete)."}, []string{"op"}),
		KVTxns: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "kv_transactions_total",
			Help: "Consul transactions committed (each bumps the host document's rev)."}),
		ConsulErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "consul_errors_total",
			Help: "Failed Consul requests."}),
		DockerErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "docker_errors_total",
			Help: "Failed Docker requests and broken event streams."}),
		Events: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "docker_events_total",
			Help: "Docker events received, by action."}, []string{"action"}),
		EventLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "event_to_kv_seconds",
			Help:    "Time from a Docker event's timestamp to the KV transaction that reflects it.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}),
		BuildInfo: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "build_info",
			Help:        "Always 1: the exporter's version and the Go version it was built with.",
			ConstLabels: prometheus.Labels{"version": Version, "goversion": runtime.Version()}}),
	}
	m.BuildInfo.Set(1)
	m.Registry.MustRegister(m.ContainersSeen, m.ContainersPublished, m.ContainersSkipped, m.BindingsSkipped, m.Reconciles,
		m.ReconcileDuration, m.KVWrites, m.KVTxns, m.ConsulErrors, m.DockerErrors, m.Events, m.EventLatency, m.BuildInfo,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

// Handler serves /metrics and /healthz (health.go).
func (e *Exporter) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(e.metrics.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", e.serveHealth)
	return mux
}
