package testenv

import "time"

// The waits every package's tests share, each derived from a bound of the
// part it waits for, with its margin. A test waits for Berth's own bounds
// through the constants beside them (exporter.EventChangeBound and the
// like); these are the bounds of the test's world: the parts it starts and
// the pace at which it looks. hack/check-waits.sh keeps every other
// duration out of the tests.

// PollInterval is how often a test looks again at a condition it waits
// for. It paces a loop and bounds nothing: the deadline of the loop is the
// bound.
const PollInterval = 20 * time.Millisecond

// PartStartWait is how long a real part that a test starts (a Consul -dev
// agent, CoreDNS, BIND, Podman's service, Chromium's first page) may take
// to answer its first request before the test gives up on it. It is not a
// property of Berth but a start-up deadline of a part of the test's world:
// Consul -dev elects itself in one election timeout (1 s with
// raft_multiplier 1), the others answer once their listeners are bound;
// the rest is loading binaries of up to 150 MB (Consul) on a 2-core
// machine whose cores may both be busy. Margin: wide (it was 20 to 30 s
// per part before it was named; the larger is kept), since a part that
// answers ends the wait at once and only one that never starts costs all
// of it.
const PartStartWait = 30 * time.Second

// ConsulReadyWait is PartStartWait for a Consul agent: from its start to a
// leader that accepts a write.
const ConsulReadyWait = PartStartWait

// ProbeTimeout is the timeout of one readiness probe of a part on loopback
// (a DNS query, a ping): a request's own timeout, not a wait; a probe
// that times out is simply sent again until PartStartWait.
const ProbeTimeout = 200 * time.Millisecond

// PodmanExitWait is how long a Podman service gets to end its API
// connections and its rootless user namespace after SIGTERM before its
// process group is killed: podman system service stops at once on SIGTERM
// (--time=0 keeps no idle timer), and 10 s is the engine's own default
// stop timeout for what it runs (podman stop -t), the margin.
const PodmanExitWait = 10 * time.Second

// Berth's own bounds, as the tests of every package wait for them. Each is
// derived here from constants of a product package that a test of that
// package checks it against (exporter's and plugin's waits_test.go), since
// those packages' tests import this one and it cannot import them.

// The exporter's round bounds (exporter/exporter.go, events.go): one
// Docker request (a listing, an inspect, /version) is cut off at
// dockerTimeout, one Consul round of a publish at consulTimeout. Podman
// hands its events on late: it keeps them in a file that its API service
// re-reads by polling (exporter/README.md, Podman: 35 to 230 ms measured
// here); podmanEventLag is that lag's bound, four times the longest seen.
const (
	exporterDockerTimeout = 15 * time.Second
	exporterConsulTimeout = 10 * time.Second
	podmanEventLag        = time.Second
	// exporterStep is one reconcile of one changed container: its inspect
	// and the transaction that publishes it.
	exporterStep = exporterDockerTimeout + exporterConsulTimeout
)

// ExporterChangeWait is how long a change the engine reports by an event
// (start, stop, pause, health_status, rename, network) may take to reach
// Consul KV: the worker runs one reconcile at a time, so it may first
// finish the one in flight, then runs the one for this change; each is an
// inspect and a transaction, each request cut off at its timeout (a step
// that overruns fails and is retried: the test should see that). Two steps
// is the bound; the step in flight is the margin. It is shorter than the
// default resync (30 s) plus its step only when tests set a long --resync,
// which a test that proves an event did the work does.
const ExporterChangeWait = 2 * exporterStep

// ExporterPodmanChangeWait is ExporterChangeWait on Podman, whose events
// reach the exporter up to podmanEventLag late: what the exporter promises
// there (exporter/README.md, Podman).
const ExporterPodmanChangeWait = podmanEventLag + ExporterChangeWait

// ExporterStartWait is how long an exporter may take from its start to
// publishing the containers running then, for one container: it asks the
// engine which it is (/version), subscribes to events, lists the
// containers, inspects each and publishes them, creating its session on
// the way: three Docker requests and a Consul round. A test with more
// containers running at the start adds one exporterDockerTimeout (an
// inspect) per container through ExporterStartWaitFor.
const ExporterStartWait = 3*exporterDockerTimeout + exporterConsulTimeout

// ExporterStartWaitFor is ExporterStartWait for n containers.
func ExporterStartWaitFor(n int) time.Duration {
	return ExporterStartWait + time.Duration(max(n-1, 0))*exporterDockerTimeout
}

// ExporterExitWait is how long ExporterProc.Signal lets berth-exporter end
// on its own after a signal before it kills it: on SIGTERM the exporter
// cancels what is in flight and, with --deregister-on-exit, makes one more
// Consul round, which consulTimeout bounds. Margin: times 2.
const ExporterExitWait = 2 * exporterConsulTimeout

// The plugin's round bound (plugin/consul.go): every Consul request is cut
// off at the blocking query's wait (watchWait, 15 s) plus the up to 1/16
// of jitter Consul adds to it, plus 3 s.
const pluginRequestTimeout = 15*time.Second + 15*time.Second/16 + 3*time.Second

// ZoneChangeWait is how long a change written to Consul KV may take to be
// served by a running berth plugin: the blocking read that waits for it
// returns (Consul ends a blocking query as soon as the index moves), and
// one fetch round reads what changed (the changed hosts' keys, in
// parallel); each is one request, each cut off at pluginRequestTimeout.
// Two requests is the bound; the blocking read's share, which Consul ends
// at once on a change, is the margin.
const ZoneChangeWait = 2 * pluginRequestTimeout

// pluginBackoffMax is the longest wait of the plugin's retries after a
// failed read (plugin/watch.go's watchBackoff: 250 ms doubling to 8 s).
const pluginBackoffMax = 8 * time.Second

// ZoneRecoverWait is how long a berth plugin may take to serve a change
// made after Consul came back from an outage or a restart: the longest
// wait of its backoff, then ZoneChangeWait.
const ZoneRecoverWait = pluginBackoffMax + ZoneChangeWait

// ZoneStartWait is how long a berth plugin started on a Consul that holds
// its data may take to serve it: its first load lists the prefix and
// reads each host, one request each, in parallel: two requests, as
// ZoneChangeWait.
const ZoneStartWait = ZoneChangeWait

// EngineRequestTimeout is the timeout of one request a test makes to the
// container engine itself (create, start, inspect, remove): what the
// exporter allows one (dockerTimeout), as a request of the test's is of
// the same kind on the same engine.
const EngineRequestTimeout = exporterDockerTimeout

// ConsulRoundWait is how long one Consul round on loopback may take (a
// write, an invalidation and the deletes it makes): what the exporter
// allows one (consulTimeout).
const ConsulRoundWait = exporterConsulTimeout

// SessionExpiryWait is how long the records of an exporter that died may
// stay, for a session TTL of ttl: Consul invalidates a session between one
// and two TTLs after its last renewal (the README's "within one to two
// TTLs"; the exporter renews every TTL/2, so the last renewal came before
// the death), and deletes its keys (behavior delete) in that round, which
// ConsulRoundWait bounds.
func SessionExpiryWait(ttl time.Duration) time.Duration { return 2*ttl + ConsulRoundWait }

// exporterWorkBackoffMax and exporterStreamBackoffMax are the longest
// waits of the exporter's retries (exporter/exporter.go's work, and
// events.go's event stream; the exporter's README: "up to 5 s", "up to
// 10 s").
const (
	exporterWorkBackoffMax   = 5 * time.Second
	exporterStreamBackoffMax = 10 * time.Second
)

// ExporterRecoverWait is how long an exporter may take to publish a change
// made while Consul was away, once Consul answers again: the worker's
// backoff may just have begun its longest wait, and then come the two
// steps of ExporterChangeWait.
const ExporterRecoverWait = exporterWorkBackoffMax + ExporterChangeWait

// ExporterReconnectWait is how long an exporter may take to publish a
// change made while its engine was away, once the engine answers again:
// the event stream's backoff may just have begun its longest wait, and
// then it starts over as at its start (ExporterStartWait).
const ExporterReconnectWait = exporterStreamBackoffMax + ExporterStartWait

// QueryTimeout is the timeout of one DNS query of a test (Exchange's) to a
// server on loopback that answers from memory: the resolver's own
// DefaultQueryTimeout (resolver/resolver.go, 2 s). A request's own
// timeout, not a wait.
const QueryTimeout = 2 * time.Second

// BrowserStartWait is PartStartWait for headless Chromium, which a test
// starts cold, with a new profile, for each page: a first start on a
// machine whose cores were busy (make bench beside the suite) took over
// 90 s (proxy/pac_test.go). Margin: over twice that. The wait ends as
// soon as the page is printed or its target shows.
const BrowserStartWait = 4 * time.Minute

// PromptWait is how long a step that the code takes at once on an event,
// with no timer of its own, may take to show: a goroutine that ends once
// its connection closed, a gauge lowered as a tunnel is released, a
// process's log line once it listens. Berth has no bound there to derive
// one from (nothing waits), so this is the scheduling latency of a 2-core
// machine whose cores are busy, with a wide margin: it was 5 s wherever
// such a step was waited for, and a step that happens ends the wait at
// once.
const PromptWait = 5 * time.Second

// ExporterRetryWait is the longest wait of the exporter's worker between
// two attempts while Consul fails (exporterWorkBackoffMax).
const ExporterRetryWait = exporterWorkBackoffMax

// ClusterElectionWait is how long the tests' Consul cluster (three servers
// in containers, raft_multiplier 1) may take to have a leader that accepts
// a write, at its start or after its leader was killed. Raft bounds no
// election: each round lasts a randomised election timeout (1 to 2 s at
// raft_multiplier 1) and a split vote starts another. Not a bound of
// Berth; a deadline as wide as the fault scenarios have used (60 s, some
// 30 rounds), since a leader ends the wait as soon as it writes.
const ClusterElectionWait = 60 * time.Second
