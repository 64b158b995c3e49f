// Package deploy holds no code: it is the files an operator deploys a Berth
// site with (deploy/README.md walks through them), and the tests that keep
// them working against the real parts.
//
// Its files, one role each:
//
//   - exporter/compose.yaml, exporter/exporter.env.example: berth-exporter
//     on each Docker host.
//   - dns/compose.yaml, dns/dns.env.example, dns/Corefile: CoreDNS with
//     berth on a DNS server; dns/Dockerfile: its image, FROM scratch
//     (hack/image.sh builds it and the exporter's).
//   - systemd/coredns-berth.service, systemd/berth-proxy.service and their
//     .env.example files: bin/coredns and bin/berth-proxy without Docker.
//   - prometheus/berth-rules.yml: alerting rules; berth-rules_test.yml:
//     their promtool unit tests.
//   - grafana/berth.json: a dashboard of the three binaries' metrics.
//   - images_test.go: builds both images with hack/image.sh and runs them
//     as the Compose files do, against a real Consul.
//   - compose_test.go: docker-compose config of both Compose files.
//   - systemd_test.go: systemd-analyze verify and security of the units.
//   - rules_test.go: promtool check rules and test rules.
//   - dashboard_test.go: the dashboard is valid and complete.
//   - metrics_test.go: the metric names the code defines, read from its
//     source, which the rules and the dashboard may use.
package deploy
