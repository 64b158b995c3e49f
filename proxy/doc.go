// Package proxy owns berth-proxy's server: a SOCKS5 proxy (RFC 1928, with
// optional username/password per RFC 1929) and an HTTP proxy (CONNECT
// tunnels and absolute-URI forwarding) that reach Berth services for clients
// that cannot look up SRV records themselves.
//
// A client names a service and the container port it wants
// (web.shop.c.example.org:80); the proxy resolves the name on its side with
// package resolver and connects to the host and port Docker published. What
// may be reached is limited by a Policy: the served zones, plus explicitly
// allowed domain suffixes and CIDRs, so the proxy is no open relay.
//
// The package also owns the proxy's Prometheus metrics (berth_proxy_*).
package proxy
