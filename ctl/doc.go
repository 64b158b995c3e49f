// Package ctl is berth, the operator's command (ctl/cmd/berth): it reads
// the namespace from Consul KV as the plugin does and shows it, checks it,
// prints the ACL policies of Berth's parts, shows what a client would dial,
// and serves a live web page of it. See ctl/README.md.
//
// Its files, one role each:
//
//   - run.go: Run, the command: dispatch and exit status.
//   - flags.go: the command line, the environment and --help.
//   - namespace.go: the prefix's documents decoded by the plugin's rules
//     (invalid documents, orphans, the ownership policy).
//   - bounded.go: reading them as the plugin does, each host within its
//     per-host bounds (record.MaxHostBytes), on a Consul client that cuts
//     a response off at its bound.
//   - check.go: berth check: those problems plus the plugin's own Check.
//   - ls.go: berth ls: services, instances, endpoints, whether served.
//   - hosts.go: berth hosts: host documents and their sessions.
//   - policy.go: berth policy: record's ACL policies, as HCL or Consul's
//     JSON; berth policy check|apply FILE: an ownership policy document,
//     validated as the plugin does, written with check-and-set.
//   - resolve.go: berth resolve: the resolver's plan, without dialling.
//   - ui.go, ui.html: berth ui: the live page (blocking queries on the
//     server, a periodic fetch in the page, everything inline).
//   - output.go: tables made safe for a terminal, and JSON with every
//     control and format character escaped.
package ctl
