// Package berth is the CoreDNS plugin that serves the Berth container
// namespace (the README's "The namespace") authoritatively from Consul KV.
// Queries never touch Consul: they read the in-memory index, which one
// watcher goroutine per server block updates a host at a time.
//
// Its files, one role each:
//
//   - setup.go: the Corefile syntax; builds the zones, watcher and notifier.
//   - berth.go: the query handler and readiness.
//   - zone.go: a zone (Zone): its names, SOA and Lookup's typed Result.
//   - node.go: the records of one owner name (node), shared by queries.
//   - compile.go: one host's documents to the records it contributes.
//   - alloc.go: one host's nodes and records, made in a few arrays.
//   - update.go: installing hosts' changes: merging shared names, empty
//     non-terminals, the serial (Consul's index of the data).
//   - journal.go: the differences behind recent serials, for IXFR.
//   - xfr.go: zone transfers (AXFR, IXFR) for the transfer plugin.
//   - notify.go: NOTIFY to the transfer plugin's secondaries, coalesced.
//   - watch.go: the watcher: its main loop, rounds of per-host fetches,
//     their bounds, and the safety-net resync.
//   - index.go: the host index in both KV layouts, one follower (blocking
//     query) per source, and the index-reset rule (nextWaitIndex).
//   - policy.go: following the ownership policy document; one that does
//     not validate gives record.ClosedPolicy, on every server alike.
//   - check.go: Check, the zone's rules for tools (berth check) without a server.
//   - report.go: reporting bad data once, with rate-limited logs.
//   - consul.go: the Consul client and its counting, bounded transport.
//   - metrics.go: the plugin's Prometheus metrics.
package berth
