package resolver

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/berthdns/berth/record"
)

// Defaults for the zero Options.
const (
	DefaultDialTimeout  = 5 * time.Second
	DefaultQueryTimeout = 2 * time.Second
	DefaultCacheSize    = 4096
)

// Options configure a Resolver. The zero value asks the system's name
// servers and looks up SRV records for every name.
type Options struct {
	// Server is the DNS server to ask, "host" or "host:port" (port 53 by
	// default). Empty means the name servers in /etc/resolv.conf; then names
	// without SRV records are resolved by the system's resolver, which also
	// reads /etc/hosts.
	Server string
	// Zones, when set, limits SRV lookups to names at or under these zones;
	// other names are dialled as given without asking for SRV records.
	Zones []string
	// SRVOnly, with Zones, reaches names in the zones only at what the zone
	// publishes together, an address, a port and a protocol: the targets of
	// _<port>._<proto>.<name>, each at the one address its port is bound on
	// (bindingAddrs). It never falls back to the name's A/AAAA records at
	// the port as given, which would reach any port of a host named in the
	// zone, nor to a port of the name's own SRV set, which says no protocol
	// (a TCP dial would reach a UDP-only binding); Dial then fails with
	// ErrNotPublished.
	SRVOnly bool
	// DialTimeout bounds each connection attempt (one address of one target).
	DialTimeout time.Duration
	// QueryTimeout bounds each DNS exchange with one server.
	QueryTimeout time.Duration
	// CacheSize is the number of DNS answers kept; negative disables caching.
	CacheSize int
	// DialContext opens connections; net.Dialer's by default.
	DialContext func(ctx context.Context, network, address string) (net.Conn, error)
}

// Resolver finds and dials services by SRV records. Create it with New.
type Resolver struct {
	servers      []string
	zones        []string // canonical, fully qualified
	srvOnly      bool
	dialTimeout  time.Duration
	queryTimeout time.Duration
	cache        *cache
	dial         func(ctx context.Context, network, address string) (net.Conn, error)
	// lookupHost resolves a name that has no SRV records.
	lookupHost func(ctx context.Context, network, host string) ([]netip.Addr, error)

	now  func() time.Time // the clock TTLs are measured by; tests replace it
	intn func(int) int    // the randomness of RFC 2782 ordering; tests replace it
}

// New returns a Resolver configured by opts.
func New(opts Options) (*Resolver, error) {
	r := &Resolver{
		dialTimeout:  orDefault(opts.DialTimeout, DefaultDialTimeout),
		queryTimeout: orDefault(opts.QueryTimeout, DefaultQueryTimeout),
		dial:         opts.DialContext,
		srvOnly:      opts.SRVOnly,
		now:          time.Now,
		intn:         rand.IntN,
	}
	if r.dial == nil {
		r.dial = (&net.Dialer{}).DialContext
	}
	switch size := opts.CacheSize; {
	case size == 0:
		r.cache = newCache(DefaultCacheSize)
	case size > 0:
		r.cache = newCache(size)
	}
	for _, z := range opts.Zones {
		if z = strings.TrimSpace(z); z != "" {
			if _, ok := dns.IsDomainName(z); !ok {
				return nil, fmt.Errorf("resolver: zone %q is not a domain name", z)
			}
			r.zones = append(r.zones, dns.CanonicalName(z))
		}
	}
	r.lookupHost = r.lookupHostDNS
	if opts.Server != "" {
		r.servers = []string{serverAddr(opts.Server)}
	} else {
		servers, err := systemServers("/etc/resolv.conf")
		if err != nil {
			// What Go's own resolver does without a resolv.conf.
			servers = []string{"127.0.0.1:53", "[::1]:53"}
		}
		r.servers = servers
		r.lookupHost = lookupHostSystem
	}
	return r, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

var defaultResolver = sync.OnceValues(func() (*Resolver, error) { return New(Options{}) })

// Dial connects to address ("name:port") on network ("tcp", "tcp4", "tcp6",
// "udp", "udp4", "udp6") with a Resolver that asks the system's name
// servers. See Resolver.Dial.
func Dial(ctx context.Context, network, address string) (net.Conn, error) {
	r, err := defaultResolver()
	if err != nil {
		return nil, err
	}
	return r.Dial(ctx, network, address)
}

// Target is one place Dial will try to connect to.
type Target struct {
	Host     string // the SRV target, or the name as given when there is no SRV
	Port     uint16 // the SRV port (the published host port), or the port as given
	Priority uint16 // from the SRV record; 0 without
	Weight   uint16 // from the SRV record; 0 without
	// Addrs are the target's addresses when already known: an IP literal, or
	// the SRV answer's additional section. Empty means Dial looks them up.
	Addrs []netip.Addr
}

func (t Target) String() string { return net.JoinHostPort(t.Host, strconv.Itoa(int(t.Port))) }

// Plan is what Resolve found for an address.
type Plan struct {
	// SRV is the SRV name whose answer gave the targets; "" when the name
	// has no SRV records and Targets is the name and port as given.
	SRV string
	// Targets are in the order Dial tries them (RFC 2782 for SRV).
	Targets []Target
	// Lookups are the SRV names asked that gave no targets, and why.
	Lookups []Attempt
}

// Resolve finds where address ("name:port") is served, without dialling:
// the SRV targets for _<port>._<proto>.<name> (or _<IANA name>._<proto>.<name>
// for a well-known port) in RFC 2782 order, or, when neither name has SRV
// records, the name and port as given. The order is random within a priority,
// so two calls may differ. A failed SRV lookup (timeout, SERVFAIL) is an
// error rather than a reason to fall back: falling back would hide an outage
// behind a connection to the wrong port.
func (r *Resolver) Resolve(ctx context.Context, network, address string) (*Plan, error) {
	host, port, proto, err := splitAddress(network, address)
	if err != nil {
		return nil, &DialError{Network: network, Address: address, Err: err}
	}
	direct := []Target{{Host: host, Port: port}}
	if ip, err := netip.ParseAddr(host); err == nil {
		direct[0].Addrs = []netip.Addr{ip.Unmap()}
		return &Plan{Targets: direct}, nil
	}
	if !r.inZones(host) {
		return &Plan{Targets: direct}, nil
	}

	plan := &Plan{}
	lookupFailed := false
	for _, name := range srvNames(host, port, proto) {
		msg, err := r.query(ctx, name, dns.TypeSRV)
		if err != nil {
			plan.Lookups = append(plan.Lookups, Attempt{What: name + " SRV", Err: err})
			lookupFailed = true
			continue
		}
		srvs, err := records[*dns.SRV](msg)
		if err == nil && len(srvs) == 1 && srvs[0].Target == "." {
			err = ErrServiceUnavailable
		}
		if err != nil {
			plan.Lookups = append(plan.Lookups, Attempt{What: name + " SRV", Err: err})
			if errors.Is(err, ErrServiceUnavailable) {
				return nil, &DialError{Network: network, Address: address, Lookups: plan.Lookups}
			}
			continue
		}
		plan.SRV = name
		for _, srv := range orderSRV(srvs, r.intn) {
			plan.Targets = append(plan.Targets, Target{
				Host: srv.Target, Port: srv.Port, Priority: srv.Priority, Weight: srv.Weight,
				Addrs: glue(msg, srv.Target),
			})
		}
		return plan, nil
	}
	if lookupFailed {
		return nil, &DialError{Network: network, Address: address, Lookups: plan.Lookups,
			Err: errors.New("not falling back to the name as given while its SRV lookup failed")}
	}
	if r.srvOnly && len(r.zones) > 0 {
		return r.resolvePublished(ctx, network, address, host, port, plan)
	}
	plan.Targets = direct
	return plan, nil
}

// resolvePublished is Resolve's last step under SRVOnly: no SRV record
// publishes the port for the protocol, so nothing is dialled; the name's
// own records only tell a name that does not exist (ErrNoSuchHost) from one
// that does not publish the port (ErrNotPublished).
func (r *Resolver) resolvePublished(ctx context.Context, network, address, host string, port uint16, plan *Plan) (*Plan, error) {
	name := dns.Fqdn(host)
	fail := &DialError{Network: network, Address: address, Lookups: plan.Lookups}
	msg, err := r.query(ctx, name, dns.TypeSRV)
	if err == nil {
		_, err = records[*dns.SRV](msg)
	}
	if err != nil && !errors.Is(err, ErrNoRecords) {
		fail.Lookups = append(fail.Lookups, Attempt{What: name + " SRV", Err: err})
		return nil, fail
	}
	fail.Err = fmt.Errorf("%w: port %d of %s over %s", ErrNotPublished, port, name, strings.TrimRight(network, "46"))
	return nil, fail
}

// Dial connects to address ("name:port") on network: to the first SRV target
// that accepts, trying each in RFC 2782 order and each of a target's
// addresses in turn, every attempt bounded by the dial timeout; or, when the
// name has no SRV records, to the name and port as given. If nothing
// connects, the error is a *DialError that lists every attempt. For udp,
// "connecting" sends nothing and cannot tell a dead target, so the first
// target in the order is the one used.
func (r *Resolver) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	plan, err := r.Resolve(ctx, network, address)
	if err != nil {
		return nil, err
	}
	failure := &DialError{Network: network, Address: address, Lookups: plan.Lookups, SRV: plan.SRV}
	if plan.SRV != "" {
		failure.Targets = len(plan.Targets)
	}
	for _, t := range plan.Targets {
		addrs := t.Addrs
		if len(addrs) == 0 {
			addrs, err = r.addresses(ctx, network, t.Host, plan.SRV != "")
			if err != nil {
				failure.Dials = append(failure.Dials, Attempt{What: t.String(), Err: err})
				if ctx.Err() != nil {
					break
				}
				continue
			}
		}
		if r.srvOnly && plan.SRV != "" {
			if addrs, err = r.bindingAddrs(ctx, t, addrs); err != nil {
				failure.Dials = append(failure.Dials, Attempt{What: t.String(), Err: err})
				continue
			}
		}
		for _, addr := range addrs {
			if !familyMatches(network, addr) {
				continue
			}
			if err := ctx.Err(); err != nil {
				failure.Err = err
				return nil, failure
			}
			conn, err := r.dialOne(ctx, network, netip.AddrPortFrom(addr, t.Port))
			if err == nil {
				return conn, nil
			}
			what := t.String()
			if t.Host != addr.String() {
				what += " (" + addr.String() + ")"
			}
			failure.Dials = append(failure.Dials, Attempt{What: what, Err: err})
		}
	}
	if len(failure.Dials) == 0 && failure.Err == nil {
		failure.Err = fmt.Errorf("no %s address", network)
	}
	return nil, failure
}

// bindingAddrs narrows an SRV target's addresses to the one address its
// port is bound on, by the plugin's rule for targets (plugin/compile.go,
// README.md's names): a port bound on one of its host's addresses has the
// host's name <host>.hosts.<zone> as target; one bound on another address
// has the container's name <container>.<host>.hosts.<zone>, whose addresses
// are those of all its ports. So a container's name as target stands for
// its addresses less its host's, and when more than one remains the zone
// does not say which the port is bound on: dialling any would risk a port
// of one binding at the address of another, and none is (ErrNotPublished).
// Other targets are dialled at their addresses.
func (r *Resolver) bindingAddrs(ctx context.Context, t Target, addrs []netip.Addr) ([]netip.Addr, error) {
	host, ok := r.containerHost(t.Host)
	if !ok {
		return addrs, nil
	}
	// Both families, whatever the network dialled: a port bound on an IPv6
	// address must not be dialled at the container's IPv4 one either.
	all, err := r.lookupHostDNS(ctx, "tcp", t.Host)
	if err != nil {
		return nil, err
	}
	hostAddrs, err := r.lookupHostDNS(ctx, "tcp", host)
	var queryErr *QueryError
	if errors.As(err, &queryErr) {
		return nil, err
	}
	own := slices.DeleteFunc(all, func(a netip.Addr) bool { return slices.Contains(hostAddrs, a) })
	if len(own) != 1 {
		return nil, fmt.Errorf("%w: %s at port %d: the zone names %d addresses of the container besides its host's %v, and does not say which the port is bound on",
			ErrNotPublished, t.Host, t.Port, len(own), hostAddrs)
	}
	return own, nil
}

// containerHost is the host name <host>.hosts.<zone> of a container's name
// <container>.<host>.hosts.<zone> in one of the zones; ok is false for any
// other name.
func (r *Resolver) containerHost(name string) (host string, ok bool) {
	name = dns.CanonicalName(name)
	for _, z := range r.zones {
		if !record.InZone(name, z) || len(name) <= len(z) {
			continue
		}
		labels := dns.SplitDomainName(strings.TrimSuffix(name, "."+z))
		if len(labels) == 3 && labels[2] == record.HostsLabel {
			return labels[1] + "." + labels[2] + "." + z, true
		}
	}
	return "", false
}

func (r *Resolver) dialOne(ctx context.Context, network string, addr netip.AddrPort) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, r.dialTimeout)
	defer cancel()
	return r.dial(ctx, network, addr.String())
}

// addresses resolves a target: SRV targets always through the configured
// servers (the answer may only make sense there), the plain name through
// lookupHost. IPv4 comes first: Docker hosts publish on IPv4 by default, and
// a host without an IPv6 route would spend an attempt on every AAAA.
func (r *Resolver) addresses(ctx context.Context, network, host string, srvTarget bool) ([]netip.Addr, error) {
	if srvTarget {
		return r.lookupHostDNS(ctx, network, host)
	}
	return r.lookupHost(ctx, network, host)
}

func (r *Resolver) lookupHostDNS(ctx context.Context, network, host string) ([]netip.Addr, error) {
	var addrs []netip.Addr
	var errA, errAAAA error
	if !strings.HasSuffix(network, "6") {
		var a []*dns.A
		if a, errA = queryRecords[*dns.A](ctx, r, host, dns.TypeA); errA == nil {
			for _, rr := range a {
				if ip, ok := netip.AddrFromSlice(rr.A); ok {
					addrs = append(addrs, ip.Unmap())
				}
			}
		} else if errors.Is(errA, ErrNoSuchHost) {
			return nil, ErrNoSuchHost // AAAA would say the same
		}
	}
	if !strings.HasSuffix(network, "4") {
		var aaaa []*dns.AAAA
		if aaaa, errAAAA = queryRecords[*dns.AAAA](ctx, r, host, dns.TypeAAAA); errAAAA == nil {
			for _, rr := range aaaa {
				if ip, ok := netip.AddrFromSlice(rr.AAAA); ok {
					addrs = append(addrs, ip)
				}
			}
		}
	}
	if len(addrs) == 0 {
		return nil, &addressError{A: errA, AAAA: errAAAA}
	}
	return addrs, nil
}

func queryRecords[T dns.RR](ctx context.Context, r *Resolver, name string, qtype uint16) ([]T, error) {
	msg, err := r.query(ctx, name, qtype)
	if err != nil {
		return nil, err
	}
	return records[T](msg)
}

// addressError says why neither A nor AAAA gave an address.
type addressError struct{ A, AAAA error }

func (e *addressError) Error() string {
	var parts []string
	if e.A != nil {
		parts = append(parts, "A: "+describe(e.A))
	}
	if e.AAAA != nil {
		parts = append(parts, "AAAA: "+describe(e.AAAA))
	}
	return strings.Join(parts, ", ")
}

func (e *addressError) Unwrap() []error { return []error{e.A, e.AAAA} }

func lookupHostSystem(ctx context.Context, network, host string) ([]netip.Addr, error) {
	ipNet := "ip"
	if strings.HasSuffix(network, "4") || strings.HasSuffix(network, "6") {
		ipNet += network[len(network)-1:]
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, ipNet, host)
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return nil, ErrNoSuchHost
	}
	for i := range addrs {
		addrs[i] = addrs[i].Unmap()
	}
	return addrs, err
}

func (r *Resolver) inZones(host string) bool {
	if len(r.zones) == 0 {
		return true
	}
	name := dns.CanonicalName(host)
	for _, z := range r.zones {
		if record.InZone(name, z) {
			return true
		}
	}
	return false
}

// srvNames are the SRV names asked for host:port, in order: by number, then
// by IANA name where the port has a well-known one.
func srvNames(host string, port uint16, proto string) []string {
	base := "._" + proto + "." + dns.Fqdn(host)
	names := []string{"_" + strconv.Itoa(int(port)) + base}
	if name := record.PortName(int(port), proto); name != "" {
		names = append(names, "_"+name+base)
	}
	return names
}

// glue is the target's addresses from the SRV answer's additional section.
func glue(msg *dns.Msg, target string) []netip.Addr {
	var v4, v6 []netip.Addr
	for _, rr := range msg.Extra {
		if !strings.EqualFold(rr.Header().Name, target) {
			continue
		}
		switch rr := rr.(type) {
		case *dns.A:
			if ip, ok := netip.AddrFromSlice(rr.A); ok {
				v4 = append(v4, ip.Unmap())
			}
		case *dns.AAAA:
			if ip, ok := netip.AddrFromSlice(rr.AAAA); ok {
				v6 = append(v6, ip)
			}
		}
	}
	return append(v4, v6...)
}

func familyMatches(network string, addr netip.Addr) bool {
	switch {
	case strings.HasSuffix(network, "4"):
		return addr.Is4()
	case strings.HasSuffix(network, "6"):
		return addr.Is6()
	}
	return true
}

// splitAddress parses "name:port" for network into its parts and the SRV
// protocol label.
func splitAddress(network, address string) (host string, port uint16, proto string, err error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
		proto = "tcp"
	case "udp", "udp4", "udp6":
		proto = "udp"
	default:
		return "", 0, "", fmt.Errorf("network %q is not supported (tcp or udp)", network)
	}
	host, service, err := net.SplitHostPort(address)
	if err != nil {
		return "", 0, "", err
	}
	if host == "" {
		return "", 0, "", errors.New("missing host")
	}
	p, err := net.LookupPort(network, service)
	if err != nil {
		return "", 0, "", err
	}
	if p == 0 {
		return "", 0, "", errors.New("port 0")
	}
	return strings.TrimSuffix(host, "."), uint16(p), proto, nil
}
