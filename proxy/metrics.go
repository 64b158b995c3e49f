package proxy

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
)

// Version is berth-proxy's version, shown by --version and in
// berth_proxy_build_info; the build may set it with
// -ldflags "-X github.com/berthdns/berth/proxy.Version=...".
var Version = "0.1.0"

// Metrics are berth-proxy's Prometheus metrics. Listener labels are "socks"
// and "http".
type Metrics struct {
	Connections  *prometheus.CounterVec // accepted client connections
	Active       *prometheus.GaugeVec   // client connections open now
	Rejected     *prometheus.CounterVec // requests refused before any dial, by reason
	Bytes        *prometheus.CounterVec // bytes relayed, upstream (to the target) and downstream
	DialFailures *prometheus.CounterVec // failed connections to targets, by reason
	BuildInfo    *prometheus.GaugeVec   // 1, labelled with the version and Go version
	// LoginFailures are wrong user names or passwords, by listener.
	LoginFailures *prometheus.CounterVec
}

// Reasons for Rejected.
const (
	rejectLimit       = "limit"       // the connection limit was reached
	rejectNotAllowed  = "not_allowed" // the policy refused the destination
	rejectAuth        = "auth"        // missing or wrong credentials
	rejectBadRequest  = "bad_request" // malformed or truncated handshake or request
	rejectUnsupported = "unsupported" // a command or address type not supported
	// The zone does not publish the port asked for (resolver.ErrNotPublished).
	rejectNotPublished = "not_published"
	// And the forbid* reasons of guard.go: loopback, link_local,
	// unspecified, multicast, broadcast, not_ip.
)

const (
	namespace = "berth"
	subsystem = "proxy"
)

// NewMetrics creates the metrics and registers them with reg (if not nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "connections_total",
			Help: "Client connections accepted, by listener.",
		}, []string{"listener"}),
		Active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "connections_active",
			Help: "Client connections open now, by listener.",
		}, []string{"listener"}),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "requests_rejected_total",
			Help: "Connections or requests refused before dialling, by listener and reason (limit, not_allowed, auth, bad_request, unsupported, not_published; loopback, link_local, unspecified, multicast, broadcast, not_ip: the target's address is not dialled).",
		}, []string{"listener", "reason"}),
		Bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "bytes_total",
			Help: "Bytes relayed, by listener and direction (upstream: client to target; downstream: target to client).",
		}, []string{"listener", "direction"}),
		DialFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "dial_failures_total",
			Help: "Failed connections to destinations, by listener and reason (refused, timeout, no_such_host, network_unreachable, host_unreachable, dns, other).",
		}, []string{"listener", "reason"}),
		LoginFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "login_failures_total",
			Help: "Credentials presented and refused (wrong user name or password), by listener; each is also a rejected{auth}.",
		}, []string{"listener"}),
		BuildInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "build_info",
			Help: "Always 1; its labels are berth-proxy's version and the Go version it was built with.",
		}, []string{"version", "goversion"}),
	}
	m.BuildInfo.WithLabelValues(Version, runtime.Version()).Set(1)
	if reg != nil {
		reg.MustRegister(m.Connections, m.Active, m.Rejected, m.Bytes, m.DialFailures, m.BuildInfo, m.LoginFailures)
	}
	return m
}
