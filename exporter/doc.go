// Package exporter owns berth-exporter, the per-Docker-host half of Berth: it
// maps the running containers of one Docker Engine to the record documents of
// namespace v1 (docker.go), and keeps that host's subtree of Consul KV equal
// to them (publish.go) under a Consul session of its own (session.go), driven
// by Docker events and a periodic full resync (reconcile.go). It also serves
// Prometheus metrics and /healthz (metrics.go) and parses the binary's flags
// (config.go).
//
// The Publisher is usable without Docker: anything that can compute a host's
// desired documents can publish them with the same diffing, transaction
// splitting and rev bumping.
package exporter
