// Package proxy owns berth-proxy's server: a SOCKS5 proxy (RFC 1928, with
// optional username/password per RFC 1929) and an HTTP proxy (CONNECT
// tunnels and absolute-URI forwarding) that reach Berth services for clients
// that cannot look up SRV records themselves.
//
// A client names a service and the container port it wants
// (web.shop.c.example.org:80); the proxy resolves the name on its side with
// package resolver and connects to the host and port Docker published. What
// may be reached is limited three ways, so the proxy is no open relay: the
// Policy (the served zones, plus explicitly allowed domain suffixes and
// CIDRs); names in the zones only at the address, port and protocol their
// SRV records publish together (resolver.Options.SRVOnly: never a host's A
// record at a port the client picks); and never an address of the proxy's
// own host (loopback, unless Config.AllowLoopback; its interfaces' other
// addresses, unless Config.AllowOwnAddresses), a link-local, cloud
// metadata, unspecified or multicast address, nor one in Config.Deny.
//
// Files, one role each:
//   - server.go: Config and its defaults, the Server, its connection limit
//     (admit, release) and Close.
//   - socks.go: the SOCKS5 handshake, RFC 1929 authentication, CONNECT and
//     the reply codes.
//   - httpproxy.go: the HTTP proxy: CONNECT tunnels, absolute-URI
//     forwarding, Proxy-Authorization, the keep-alive timeout, and the
//     listener that puts HTTP clients under the connection limit.
//   - pac.go: GET /proxy.pac on the HTTP listener: the zones through the
//     proxy, all else DIRECT.
//   - dial.go: connect (policy, resolver, counting), and the ranking of
//     dial failures into one reason, which socks.go and httpproxy.go map to
//     a reply code and a status.
//   - guard.go: the addresses never dialled (record's address classes, the
//     deny list, the host's own addresses), and the dialer wrapper that
//     refuses them before any packet leaves.
//   - policy.go: the Policy: zones, allowed suffixes and CIDRs, judged with
//     record.InZone.
//   - logins.go: failed logins: the growing delay per client address, the
//     counting and the rate-limited log.
//   - gate.go: a once-per-interval gate per key, bounded, for logging
//     hostile input once rather than at the attacker's rate.
//   - relay.go: the byte relay of tunnels, with half-close and the idle
//     timeout.
//   - metrics.go: the Prometheus metrics (berth_proxy_*), the build-info
//     metric and Version.
//
// The command is cmd/berth-proxy: its flags and BERTH_* variables
// (config.go) and the listeners (main.go).
package proxy
