package proxy

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
)

// pacPath is where the HTTP proxy listener serves its proxy auto-config
// file, to a plain (origin-form) GET addressed to the proxy itself.
const pacPath = "/proxy.pac"

// pacTemplate is the PAC file. It uses only plain JavaScript string
// operations, none of the PAC helper functions (dnsDomainIs, shExpMatch...),
// whose behaviour differs between browsers: a name goes through the proxy
// when it is a served zone or ends in "." plus one, so "evilc.example.org"
// is not taken for a name under "c.example.org". Everything else is DIRECT.
const pacTemplate = `// berth-proxy %s: the names of Berth's zones go through the proxy,
// everything else directly.
function FindProxyForURL(url, host) {
  var zones = %s;
  var h = String(host).toLowerCase();
  if (h.length > 0 && h.charAt(h.length - 1) == ".") {
    h = h.substring(0, h.length - 1);
  }
  for (var i = 0; i < zones.length; i++) {
    var z = zones[i];
    if (h == z || (h.length > z.length && h.substring(h.length - z.length - 1) == "." + z)) {
      return %s;
    }
  }
  return "DIRECT";
}
`

// servePAC answers GET /proxy.pac. The proxy it names is this listener at
// the address the client used to fetch the file (its Host header, when that
// is a plain host and port; else the address the connection arrived at),
// as "PROXY host:port": it serves http:// and, by CONNECT, https://. When a
// SOCKS listener is reachable at the same host, "SOCKS5 host:port" follows
// as the browser's second choice.
func (h *httpProxy) servePAC(w http.ResponseWriter, r *http.Request) {
	host, port := pacProxyAddr(r)
	choices := []string{"PROXY " + net.JoinHostPort(host, port)}
	if socksPort := h.s.socksPortFor(r); socksPort != "" {
		choices = append(choices, "SOCKS5 "+net.JoinHostPort(host, socksPort))
	}
	zones := make([]string, 0, len(h.s.policy.Zones()))
	for _, z := range h.s.policy.Zones() {
		zones = append(zones, strings.TrimSuffix(z, "."))
	}
	// JSON is a valid JavaScript literal, and Go's encoder escapes <, >, &,
	// U+2028 and U+2029, so no name can break out of it.
	zonesJS, _ := json.Marshal(zones)
	resultJS, _ := json.Marshal(strings.Join(choices, "; "))
	w.Header().Set("Content-Type", "application/x-ns-proxy-autoconfig")
	w.Header().Set("Cache-Control", "no-cache")
	// The file is JavaScript for the proxy resolver alone: no browser may
	// take it for anything else from its bytes.
	w.Header().Set("X-Content-Type-Options", "nosniff")
	fmt.Fprintf(w, pacTemplate, Version, zonesJS, resultJS)
}

// pacProxyAddr is the host and port the client reached this listener at.
func pacProxyAddr(r *http.Request) (host, port string) {
	if h, p, err := net.SplitHostPort(r.Host); err == nil && plainHost(h) {
		if n, err := strconv.Atoi(p); err == nil && n > 0 && n <= 65535 {
			return h, p
		}
	}
	if local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if h, p, err := net.SplitHostPort(local.String()); err == nil {
			return h, p
		}
	}
	return "127.0.0.1", "3128"
}

// plainHost accepts an IP address without a zone, or a name of letters,
// digits, - and .: what a Host header needs to carry to be written into the
// PAC file. An IPv6 zone ("fe80::1%eth0") is the client's own interface
// name, free text from the request; it is refused, and the file then names
// the address the connection arrived at.
func plainHost(h string) bool {
	if a, err := netip.ParseAddr(h); err == nil {
		return a.Zone() == ""
	}
	if h == "" || len(h) > 253 {
		return false
	}
	for _, c := range h {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// socksPortFor is the port of a SOCKS listener that a client of r reaches
// at the same host as the HTTP listener: one bound to every address, or to
// the very address r arrived at. "" when there is none.
func (s *Server) socksPortFor(r *http.Request) string {
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	localIP := clientAddr(local)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.socksAddrs {
		tcp, ok := a.(*net.TCPAddr)
		if !ok {
			continue
		}
		ip := tcp.AddrPort().Addr().Unmap()
		if ip.IsUnspecified() || ip == localIP {
			return strconv.Itoa(tcp.Port)
		}
	}
	return ""
}
