package exporter

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"

	"github.com/berthdns/berth/record"
)

// routeProbes are destinations whose route is the default route: addresses
// of the documentation ranges (198.51.100.0/24, 2001:db8::/32), which no
// real network uses. Only the route is looked up; nothing is sent.
var routeProbes = []string{"198.51.100.1:9", "[2001:db8:ffff::1]:9"}

// advertiseAddrs are the configured advertise addresses, which must pass
// record.Publishable (a Config need not come from ParseFlags), else the
// detected ones.
func advertiseAddrs(cfg Config, consulAddr string) ([]netip.Addr, error) {
	if len(cfg.AdvertiseAddrs) == 0 {
		addrs, err := DetectAdvertiseAddrs(consulAddr, cfg.AllowLoopback)
		if err != nil {
			return nil, fmt.Errorf("advertise address: %w", err)
		}
		return addrs, nil
	}
	addrs := make([]netip.Addr, 0, len(cfg.AdvertiseAddrs))
	for _, a := range cfg.AdvertiseAddrs {
		if err := advertisable(a, cfg.AllowLoopback); err != nil {
			return nil, err
		}
		addrs = append(addrs, a.Unmap())
	}
	return addrs, nil
}

// advertisable checks an --advertise-addr with record.Publishable, naming
// the flag, and the opt-in when loopback is what is refused.
func advertisable(a netip.Addr, allowLoopback bool) error {
	err := record.Publishable(a, allowLoopback)
	var ce *record.AddrClassError
	if errors.As(err, &ce) && ce.Class == record.ClassLoopback {
		return fmt.Errorf("--advertise-addr: %w (--allow-loopback opts in)", err)
	}
	if err != nil {
		return fmt.Errorf("--advertise-addr: %w", err)
	}
	return nil
}

// DetectAdvertiseAddrs finds the address other machines reach this one on:
// the source address this host uses to reach consulAddr (the Consul
// client's address: host:port, a URL, or a unix socket), plus its twin of
// the other family on the same interface where there is a global one.
//
// With a local Consul agent (127.0.0.1:8500, the Consul client's default)
// that source is loopback, which record.Publishable refuses unless
// allowLoopback: then the source address of the default route is used
// instead, and with no default route it refuses, asking for
// --advertise-addr. Nothing is sent: a UDP "connect" only asks the kernel
// for a route.
func DetectAdvertiseAddrs(consulAddr string, allowLoopback bool) ([]netip.Addr, error) {
	hostport, err := consulHostPort(consulAddr)
	if err != nil {
		return nil, err
	}
	src, err := routeSource(hostport)
	if err != nil {
		return nil, fmt.Errorf("find the route to consul at %s: %w", hostport, err)
	}
	if class := record.AddrClass(src, allowLoopback); class != "" {
		alt, err := defaultRouteSource()
		if err != nil {
			return nil, fmt.Errorf("the route to consul at %s leaves from %s, a %s address, which is not published, "+
				"and no default route gives a routable address of this machine (%v): "+
				"set --advertise-addr to the address other machines reach this one on "+
				"(or --allow-loopback for a single-machine setup)",
				hostport, src, strings.ReplaceAll(strings.TrimSuffix(class, "_address"), "_", "-"), err)
		}
		src = alt
	}
	addrs := []netip.Addr{src}
	if twin, ok := twinAddr(src); ok {
		addrs = append(addrs, twin)
	}
	return addrs, nil
}

// consulHostPort is the host:port the Consul client dials for addr.
func consulHostPort(addr string) (string, error) {
	hostport := addr
	if strings.Contains(addr, "://") {
		u, err := url.Parse(addr)
		if err != nil {
			return "", err
		}
		if u.Scheme == "unix" {
			return "", errors.New("consul is reached over a unix socket: set --advertise-addr")
		}
		hostport = u.Host
	}
	if strings.HasPrefix(hostport, "unix:") || strings.HasPrefix(hostport, "/") {
		return "", errors.New("consul is reached over a unix socket: set --advertise-addr")
	}
	if _, _, err := net.SplitHostPort(hostport); err != nil {
		hostport = net.JoinHostPort(hostport, "8500")
	}
	return hostport, nil
}

// routeSource is the source address of the route to hostport.
func routeSource(hostport string) (netip.Addr, error) {
	conn, err := net.Dial("udp", hostport)
	if err != nil {
		return netip.Addr{}, err
	}
	defer conn.Close()
	return conn.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(), nil
}

// defaultRouteSource is the publishable source address of the IPv4 default
// route, else of the IPv6 one.
func defaultRouteSource() (netip.Addr, error) {
	var errs []error
	for _, probe := range routeProbes {
		src, err := routeSource(probe)
		if err == nil {
			err = record.Publishable(src, false)
		}
		if err == nil {
			return src, nil
		}
		errs = append(errs, err)
	}
	return netip.Addr{}, errors.Join(errs...)
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
