// Package faults owns Berth's fault and bad-input suite (issue 6), run by
// `make test-faults`: each TestFault<N><Name> injects one fault that happens
// in production every week into the real parts (a three-server Consul
// cluster in containers on a private Docker network, the built berth-exporter
// and bin/coredns with the berth plugin, the local Docker Engine), states
// what must hold, asserts it, and prints the figure it measured on a final
// line "FAULT scenario=<N> ...".
//
//  1. Consul leader loss under DNS load and container churn.
//  2. Consul total outage (every server stopped for 60 s).
//  3. Partition of one Docker host's exporter from Consul.
//  4. Exporter crash (SIGKILL) and restart, polled every 10 ms.
//  5. Loss of the exporter's Docker API connection (event stream).
//  6. ACL confinement of two exporters and the plugin's read-only token.
//  7. Bad input: hostile KV documents, container labels and DNS queries;
//     fuzz targets with their corpora under testdata/fuzz.
//  8. Load: DNS at the highest sustained rate while containers churn.
//  9. Hostile hosts: one claims a service another owns and writes invalid
//     documents, one holds over 16 MiB of documents, both flap their rev,
//     for a minute under query load (README: Security); meanwhile issue
//     21's rows 1 to 5 (s9_trust_test.go): an invalid policy mid-attack and
//     a server started under it, a claim on the zone's ns name, metadata
//     addresses and an address outside the host's policy range, and
//     berth-proxy (in-process) asked for the proxy host's own address, TCP
//     to a UDP-only binding and an address/port pair never published.
//
// The scenarios are long, so plain `go test ./...` skips them; they run when
// -run names them (make test-faults runs -run Fault) or BERTH_FAULTS is set.
// The fuzz targets run everywhere. Every container and network a scenario
// creates carries the label berth.test=faults and is removed when the test
// ends, passed or failed (and, should the test process die, by the next test
// binary that uses Docker: internal/testenv/reap.go); traffic goes only to
// loopback and to the networks
// the tests create. The scenarios' helpers live in the _test files of this
// package and in internal/testenv (cluster.go, network.go, exporter.go).
package faults
