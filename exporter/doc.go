// Package exporter owns berth-exporter, the per-Docker-host half of Berth: it
// maps the running containers of one Docker Engine to the record documents of
// namespace v1, and keeps that host's subtree of Consul KV equal to them under
// a Consul session of its own, driven by Docker events and a periodic full
// resync.
//
// Files, one role each:
//   - exporter.go: the Exporter, New, Run, Once, Deregister, the worker
//     loop that reconciles whenever woken and retries after a failure, and
//     the detection of the engine behind the Docker API (Docker, Podman).
//   - advertise.go: the advertise addresses: the configured ones, checked
//     with record.Publishable, or the detected ones (the source address
//     towards Consul, else of the default route, and its twin of the other
//     family).
//   - queue.go: the dirty queue events and resyncs feed the worker.
//   - reconcile.go: one reconcile: refresh the desired state from Docker,
//     then hand it to the Publisher.
//   - events.go: the engine's event stream, reopened after it breaks
//     (after a backoff, or at once when the engine answers again): Docker's
//     /events, or Podman's libpod stream filtered by type only, and
//     Podman's action names.
//   - libpod.go: Podman's own API over the moby client's connection: its
//     event stream, which does not lose events as its /events does.
//   - reach.go: engineReach, the one owner of whether the engine answers:
//     every Docker request reports to it, a ping per second while it is
//     silent, and its recovery wakes the event stream and the worker.
//   - dryrun.go: the --dry-run table.
//   - health.go: /healthz, and the cache of its Docker and Consul pings.
//   - docker.go: the Mapper, from Docker's inspect result to a document,
//     leaving out bindings on addresses record.Publishable refuses.
//   - labels.go: container labels and environment to the document's name
//     fields: enable, service, SRV priority and weight, port names,
//     aliases; registrator's SERVICE_* keys under --compat registrator.
//   - publish.go: the Publisher: diffing, transaction splitting, rev bumps.
//   - session.go: the Consul session that holds every key of the host.
//   - metrics.go: the Prometheus metrics (a Collector the binary registers),
//     the build-info metric, and the handler of /metrics and /healthz.
//   - config.go: the flags and BERTH_* variables, and the logger.
//
// The Publisher is usable without Docker: anything that can compute a host's
// desired documents can publish them with the same diffing, transaction
// splitting and rev bumping.
package exporter
