package exporter

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
)

// DetectAdvertiseAddrs finds the source address this host uses to reach
// consulAddr (the Consul client's address: host:port, a URL, or a unix
// socket), plus its twin of the other family on the same interface where
// there is a global one. Nothing is sent: a UDP "connect" only asks the
// kernel for a route.
func DetectAdvertiseAddrs(consulAddr string) ([]netip.Addr, error) {
	hostport := consulAddr
	if strings.Contains(consulAddr, "://") {
		u, err := url.Parse(consulAddr)
		if err != nil {
			return nil, err
		}
		if u.Scheme == "unix" {
			return nil, errors.New("consul is reached over a unix socket: set --advertise-addr")
		}
		hostport = u.Host
	}
	if strings.HasPrefix(hostport, "unix:") || strings.HasPrefix(hostport, "/") {
		return nil, errors.New("consul is reached over a unix socket: set --advertise-addr")
	}
	if _, _, err := net.SplitHostPort(hostport); err != nil {
		hostport = net.JoinHostPort(hostport, "8500")
	}
	conn, err := net.Dial("udp", hostport)
	if err != nil {
		return nil, fmt.Errorf("find the route to consul at %s: %w", hostport, err)
	}
	defer conn.Close()
	src := conn.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
	addrs := []netip.Addr{src}
	if twin, ok := twinAddr(src); ok {
		addrs = append(addrs, twin)
	}
	return addrs, nil
}

// twinAddr finds a global address of the other family on the interface that
// holds a.
func twinAddr(a netip.Addr) (netip.Addr, bool) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return netip.Addr{}, false
	}
	for _, ifc := range ifaces {
		list, err := ifc.Addrs()
		if err != nil {
			continue
		}
		var has bool
		var twin netip.Addr
		for _, x := range list {
			p, err := netip.ParsePrefix(x.String())
			if err != nil {
				continue
			}
			b := p.Addr().Unmap()
			if b == a {
				has = true
			} else if b.Is4() != a.Is4() && b.IsGlobalUnicast() && !twin.IsValid() {
				twin = b
			}
		}
		if has {
			return twin, twin.IsValid()
		}
	}
	return netip.Addr{}, false
}
