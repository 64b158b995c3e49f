package faults

import (
	"time"

	"github.com/berthdns/berth/internal/testenv"
)

// The waits of the fault scenarios, from the exporter's and the plugin's
// bounds (testenv/bounds.go, checked against those packages' constants by
// their own tests). The scenarios' other durations (how long a fault, a
// load or a churn lasts, how often a prober asks) are not waits for a
// condition: each is named where it is used, and says so.

// servedWait is how long the world's DNS may take to answer for what its
// containers are now, after an exporter started or anything changed: the
// exporter may have to inspect every container the world made
// (testenv.ExporterStartWaitFor), and the plugin then serves it
// (testenv.ZoneChangeWait).
func (w *world) servedWait() time.Duration {
	w.mu.Lock()
	n := len(w.containers)
	w.mu.Unlock()
	return testenv.ExporterStartWaitFor(n) + testenv.ZoneChangeWait
}

// kvRecoverWait is how long KV may take to hold what the world's
// containers are now once Consul answers again: the exporter's worker may
// be in its longest retry wait (testenv.ExporterRetryWait), and then
// inspects and publishes all of them.
func (w *world) kvRecoverWait() time.Duration {
	w.mu.Lock()
	n := len(w.containers)
	w.mu.Unlock()
	return testenv.ExporterRetryWait + testenv.ExporterStartWaitFor(n)
}

// dnsRecoverWait is kvRecoverWait and then the plugin's return to a Consul
// that came back (testenv.ZoneRecoverWait).
func (w *world) dnsRecoverWait() time.Duration {
	return w.kvRecoverWait() + testenv.ZoneRecoverWait
}

// reconnectWait is how long the world's DNS may take to answer for what
// its containers are now once the exporter's engine answers again: the
// event stream's backoff and a new start (testenv.ExporterReconnectWait,
// one container), an inspect for each other container, and the plugin.
func (w *world) reconnectWait() time.Duration {
	return w.servedWait() - testenv.ExporterStartWait + testenv.ExporterReconnectWait
}

// probeEvery is how often a scenario's pollers ask while they watch for a
// gap: not a wait but their pace.
const probeEvery = 10 * time.Millisecond
