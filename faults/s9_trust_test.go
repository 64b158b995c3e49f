package faults

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/proxy"
	"github.com/berthdns/berth/record"
)

// Issue 21's rows 1 to 5, tried by scenario 9's hostile hosts against its
// running servers (trustAttack), beside the flapping and the oversize host.

// invalidPolicy is issue 21 row 1's document: it does not validate
// ("maybe" is no default).
const invalidPolicy = `{"v":1,"default":"maybe","rules":[]}`

// trustHosts are the hostile hosts of rows 2 to 5: bound publishes, with
// its host bound by the policy to boundRange, a port outside it (row 3's
// foreign address); free, bound to nothing, publishes the zone's ns name
// (row 2), metadata addresses (row 3) and the proxy's targets (rows 4, 5).
type trustHosts struct{ bound, free string }

// boundRange is the range the policy gives trustHosts.bound; boundAddr is
// its host address, inside; foreignAddr a port address outside.
var (
	boundRange  = netip.MustParsePrefix("192.0.2.64/27")
	boundAddr   = netip.MustParseAddr("192.0.2.67")
	foreignAddr = netip.MustParseAddr("198.51.100.9")
)

// trustPolicy is scenario 9's policy: service owned to the world's host
// alone, every other claim allowed, and trustHosts.bound bound to
// boundRange.
func trustPolicy(w *world, owned string, h trustHosts) []byte {
	b, _ := json.Marshal(record.Policy{V: record.Version, Default: record.PolicyAllow,
		Rules:     []record.PolicyRule{{Service: owned, Hosts: []string{w.host}}},
		Addresses: []record.AddressRule{{Hosts: []string{h.bound}, CIDRs: []netip.Prefix{boundRange}}}})
	return b
}

// trustFigures are what trustAttack measured, for the FAULT line.
type trustFigures struct {
	counted              map[string]float64 // rows 2, 3: the plugin's refusals while the policy is valid, by reason
	closedIn, reopenedIn time.Duration      // row 1: the running server's switch to the closed policy and back
	restartedClaims      int                // row 1: SRV records of the owner's service a server started under the invalid policy served (want 0)
	proxyOwn, proxyUnpub float64            // rows 4, 5: berth-proxy's refusals, own_address and not_published
	ownerThroughProxy    bool               // the owner's service reached through berth-proxy
}

func (f trustFigures) kv() []any {
	return []any{"conflict", f.counted["conflict"], "metadata_address", f.counted["metadata_address"],
		"foreign_address", f.counted["foreign_address"], "policy_closed_in", f.closedIn.Round(time.Millisecond), "policy_reopened_in", f.reopenedIn.Round(time.Millisecond),
		"restarted_claims", f.restartedClaims, "proxy_own_address", f.proxyOwn, "proxy_not_published", f.proxyUnpub,
		"owner_through_proxy", f.ownerThroughProxy}
}

// trustAttack runs rows 2 to 5 and then row 1 against the running world
// while the flapping goes on; p's checks are the owner's answers, which it
// relaxes only while the policy is invalid (row 1).
func trustAttack(t *testing.T, w *world, h *hostile, hosts trustHosts, p *prober, strict []check, owned string, policy []byte) trustFigures {
	var f trustFigures
	gw := w.net.Gateway
	// Row 4's target: a service of the proxy's own host on an address of
	// its own other than the world's gateway (a non-loopback interface).
	own := ownAddressBesides(t, gw)
	ownService := listenOn(t, own, 0)
	ownHits := testenv.ServeCounting(t, ownService, "the proxy host's own service")
	// Row 5's: a TCP service at the host port a UDP binding takes, and a
	// container whose 80 is at the gateway and 8443 at own: the gateway at
	// 8443's host port was never published.
	tcpAtUDP := listenOn(t, gw, 0)
	tcpAtUDPHits := testenv.ServeCounting(t, tcpAtUDP, "tcp service")
	web := listenOn(t, gw, 0)
	testenv.ServeCounting(t, web, "web")
	published, victim := listenPairOn(t, own, gw)
	publishedHits := testenv.ServeCounting(t, published, "published pair")
	victimHits := testenv.ServeCounting(t, victim, "never published")

	svc := func(s string) string { return w.service(s) }
	port := func(ln net.Listener) int { return ln.Addr().(*net.TCPAddr).Port }
	ctr := func(id byte, name, service string, ports ...record.Port) *record.Container {
		return &record.Container{V: record.Version, ID: strings.Repeat(string(id), 64), Name: name, Service: service,
			Image: "evil", Health: record.HealthNone, Priority: 0, Weight: 65535, Ports: ports}
	}
	tcp := func(p, hostPort int, addr netip.Addr) record.Port {
		return record.Port{Port: p, Proto: "tcp", Addr: addr, HostPort: hostPort}
	}
	before, _ := scrape("http://" + w.promAddr + "/metrics")
	// Each host's containers first, then its host document: the plugin
	// reads a host's containers when its document's rev changes.
	h.putJSON(record.ContainerKey(prefix, hosts.bound, strings.Repeat("f", 64)),
		ctr('f', "foreign", svc("foreign"), tcp(80, 31080, foreignAddr)))
	h.putJSON(record.HostKey(prefix, hosts.bound), record.Host{V: record.Version, Name: hosts.bound, Addrs: []netip.Addr{boundAddr}, Rev: 1})
	for _, c := range []*record.Container{
		ctr('1', "nsname", "ns.dns", tcp(80, 31081, gw)),
		ctr('2', "meta", svc("meta"), tcp(80, 80, netip.MustParseAddr("100.100.100.200")), tcp(81, 80, netip.MustParseAddr("fd00:ec2::254"))),
		ctr('3', "own", svc("own"), tcp(80, port(ownService), own)),
		ctr('4', "udp", svc("udp"), record.Port{Port: 53, Proto: "udp", Addr: gw, HostPort: port(tcpAtUDP)}),
		ctr('5', "mix", svc("mix"), tcp(80, port(web), gw), tcp(8443, port(published), own)),
	} {
		h.putJSON(record.ContainerKey(prefix, hosts.free, c.ID), c)
	}
	h.putJSON(record.HostKey(prefix, hosts.free), record.Host{V: record.Version, Name: hosts.free, Addrs: []netip.Addr{gw}, Rev: 1})

	// The documents are read once the udp service is served.
	udpName := "_53._udp." + svc("udp") + "." + zone
	if _, ok := waitFor(testenv.ZoneChangeWait, func() bool { n, _, _ := w.dnsPorts(udpName); return len(n) == 1 }); !ok {
		t.Errorf("%s not served within %v: the hostile documents were not read", udpName, testenv.ZoneChangeWait)
		return f
	}
	// Counted before row 1 (a closed policy refuses every address as
	// foreign_address), each within a change of its host.
	reasons := []string{"conflict", "metadata_address", "foreign_address"}
	series := func(reason string) string { return `coredns_berth_invalid_records_total{reason="` + reason + `"}` }
	f.counted = map[string]float64{}
	waitFor(testenv.ZoneChangeWait, func() bool {
		after, _ := scrape("http://" + w.promAddr + "/metrics")
		all := true
		for _, r := range reasons {
			f.counted[r] = delta(before, after, series(r))
			all = all && f.counted[r] >= 1
		}
		return all
	})
	for _, r := range reasons {
		if f.counted[r] < 1 {
			t.Errorf("rows 2, 3: %s not counted within %v", series(r), testenv.ZoneChangeWait)
		}
	}
	for _, name := range []string{svc("meta"), svc("foreign"), svc("own")} {
		ports, rcode, err := w.dnsPorts(name + "." + zone)
		if err != nil || (name == svc("own")) != (rcode == dns.RcodeSuccess && len(ports) == 1) {
			t.Errorf("%s: %s %v %v", name, dns.RcodeToString[rcode], ports, err)
		}
	}
	trustProxy(t, w, &f, hosts.free, own, owned, svc, ownHits, tcpAtUDP, tcpAtUDPHits, publishedHits, victimHits)
	trustInvalidPolicy(t, w, &f, p, strict, owned, policy)
	return f
}

// trustProxy is rows 4 and 5 through berth-proxy in-process, as the proxy
// package's tests run it: a strict proxy refuses the hostile host's entry
// at its own host's address; a proxy for a container host (the world's
// containers publish on its gateway, an address of this host:
// AllowOwnAddresses) refuses TCP to a UDP-only binding and the pair never
// published, and still reaches the owner's service.
func trustProxy(t *testing.T, w *world, f *trustFigures, free string, own netip.Addr, owned string, svc func(string) string,
	ownHits *atomic.Int32, tcpAtUDP net.Listener, tcpAtUDPHits, publishedHits, victimHits *atomic.Int32) {
	zoneName := strings.TrimSuffix(zone, ".")
	strict := startProxy(t, proxy.Config{Zones: []string{zoneName}, DNSServer: w.dns.Addr})
	if reply := strict.connect(svc("own")+"."+zoneName, 80, nil); reply != socksNotAllowed {
		t.Errorf("strict berth-proxy, %s:80 (at %s, its own address): SOCKS reply %#x, want %#x", svc("own"), own, reply, socksNotAllowed)
	}
	f.proxyOwn = testenv.MetricValue(strict.srv.Metrics().Rejected.WithLabelValues("socks", "own_address"))
	if f.proxyOwn != 1 || ownHits.Load() != 0 {
		t.Errorf("own address: rejected{socks,own_address}=%v (want 1), the host's own service accepted %d", f.proxyOwn, ownHits.Load())
	}

	host := startProxy(t, proxy.Config{Zones: []string{zoneName}, DNSServer: w.dns.Addr, AllowOwnAddresses: true})
	udpPort := uint16(tcpAtUDP.Addr().(*net.TCPAddr).Port)
	for _, name := range []string{svc("udp") + "." + zone, ctrName(free, "udp")} {
		name = strings.TrimSuffix(name, ".")
		if reply := host.connect(name, udpPort, nil); reply != socksNotAllowed {
			t.Errorf("berth-proxy, %s:%d over TCP (only 53/udp is published there): SOCKS reply %#x, want %#x", name, udpPort, reply, socksNotAllowed)
		}
	}
	f.proxyUnpub = testenv.MetricValue(host.srv.Metrics().Rejected.WithLabelValues("socks", "not_published"))
	// The mix container's name has both addresses, in either order, and a
	// proxy caches an answer: a proxy per request, so that a proxy that
	// dialled either address would miss the unpublished pair 1 time in
	// 2^mixRequests.
	const mixRequests = 4
	mix := svc("mix") + "." + zoneName
	for i := range mixRequests {
		var body string
		p := host
		if i > 0 {
			p = startProxy(t, proxy.Config{Zones: []string{zoneName}, DNSServer: w.dns.Addr, AllowOwnAddresses: true})
		}
		if reply := p.connect(mix, 8443, &body); reply != socksSucceeded || body != "published pair" {
			t.Errorf("berth-proxy, %s:8443: reply %#x, reached %q, want the published pair", mix, reply, body)
		}
	}
	if f.proxyUnpub != 2 || tcpAtUDPHits.Load() != 0 || victimHits.Load() != 0 || publishedHits.Load() != mixRequests {
		t.Errorf("rejected{socks,not_published}=%v (want 2); accepted: TCP at the UDP binding %d, the unpublished pair %d, the published pair %d (want 0, 0, %d)",
			f.proxyUnpub, tcpAtUDPHits.Load(), victimHits.Load(), publishedHits.Load(), mixRequests)
	}
	var hello string
	reply := host.connect(owned+"."+zoneName, 80, &hello)
	f.ownerThroughProxy = reply == socksSucceeded && strings.HasPrefix(hello, "hello from ") // testsvc's answer
	if !f.ownerThroughProxy {
		t.Errorf("berth-proxy, the owner's %s:80: reply %#x, %q", owned, reply, hello)
	}
}

// trustInvalidPolicy is row 1. The invalid document goes to the running
// servers' KV mid-attack; the zone then serves no claim at all (the
// owner's neither: ClosedPolicy), so for that window the prober accepts
// the owner's exact answer or the closed one (no records), never another;
// outside it the prober's checks are exact again. This keeps the
// scenario's invariant meaningful on the server every other assertion is
// about, and tries the case production meets (a policy broken under
// running servers) rather than a server of its own. A second server
// started while the document is invalid is the restart case: it serves no
// claim, the impostor's neither, and after the restore the owner's.
func trustInvalidPolicy(t *testing.T, w *world, f *trustFigures, p *prober, strict []check, owned string, policy []byte) {
	p.setChecks(closedOr(strict))
	defer p.setChecks(strict)
	name := owned + "." + zone
	closed := func(server string) func() bool {
		return func() bool {
			r, err := testenv.Exchange("tcp", server, name, dns.TypeSRV, 0)
			return err == nil && len(r.Answer) == 0
		}
	}
	putPolicy := func(doc []byte) {
		if _, err := w.consul.KV().Put(&api.KVPair{Key: record.PolicyKey(prefix), Value: doc}, nil); err != nil {
			t.Errorf("row 1: writing the policy: %v", err)
		}
	}
	putPolicy([]byte(invalidPolicy))
	var ok bool
	if f.closedIn, ok = waitFor(testenv.ZoneChangeWait, closed(w.dns.Addr)); !ok {
		t.Errorf("row 1: %s still served %v after the policy turned invalid", name, testenv.ZoneChangeWait)
	}
	prom := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	second := testenv.StartCoreDNS(t, w.corefileAt("", prom))
	defer second.Stop()
	if _, ok := waitFor(testenv.ZoneStartWait, func() bool {
		r, err := testenv.Exchange("udp", second.Addr, zone, dns.TypeSOA, 0)
		return err == nil && r.Rcode == dns.RcodeSuccess
	}); !ok {
		t.Errorf("row 1: the server started under the invalid policy did not load within %v:\n%s", testenv.ZoneStartWait, second.Output())
	}
	r, err := testenv.Exchange("tcp", second.Addr, name, dns.TypeSRV, 0)
	if err != nil {
		t.Errorf("row 1: the restarted server: %v", err)
	} else if f.restartedClaims = len(srvPorts(r)); f.restartedClaims != 0 {
		t.Errorf("row 1: a server started under the invalid policy serves %s: %v (the impostor's port is 40000+)", name, srvPorts(r))
	}
	for _, server := range []string{w.promAddr, prom} {
		m, _ := scrape("http://" + server + "/metrics")
		if v, ok := m[`coredns_berth_policy_valid{zone="`+zone+`"}`]; !ok || v != 0 {
			t.Errorf("row 1: coredns_berth_policy_valid on %s is %v (present %v), want 0", server, v, ok)
		}
	}
	putPolicy(policy)
	reopened := func() bool {
		ok, _ := w.dnsMatches(owned, "owned")
		r, err := testenv.Exchange("tcp", second.Addr, name, dns.TypeSRV, 0)
		return ok && err == nil && equalInts(srvPorts(r), portsOf(w.running("owned")))
	}
	if f.reopenedIn, ok = waitFor(testenv.ZoneChangeWait, reopened); !ok {
		_, why := w.dnsMatches(owned, "owned")
		t.Errorf("row 1: the owner's answers not back on both servers %v after the restore: %s", testenv.ZoneChangeWait, why)
	}
}

// closedOr relaxes checks to accept, besides the right answer, the closed
// policy's: an answer with no records.
func closedOr(checks []check) []check {
	out := make([]check, len(checks))
	for i, c := range checks {
		exact := c.verify
		out[i] = check{c.name, c.qtype, func(m *dns.Msg) error {
			if len(m.Answer) == 0 && (m.Rcode == dns.RcodeSuccess || m.Rcode == dns.RcodeNameError) {
				return nil
			}
			return exact(m)
		}}
	}
	return out
}

// sameAs accepts exactly the records (TTLs aside) and rcode of want.
func sameAs(want *dns.Msg) func(*dns.Msg) error {
	key := func(m *dns.Msg) string {
		var rrs []string
		for _, rr := range m.Answer {
			c := dns.Copy(rr)
			c.Header().Ttl = 0
			rrs = append(rrs, c.String())
		}
		slices.Sort(rrs)
		return dns.RcodeToString[m.Rcode] + " " + strings.Join(rrs, " | ")
	}
	k := key(want)
	return func(m *dns.Msg) error {
		if got := key(m); got != k {
			return fmt.Errorf("%s, want %s", got, k)
		}
		return nil
	}
}

func (h *hostile) putJSON(key string, v any) {
	b, _ := json.Marshal(v)
	h.put(key, string(b))
}

// ownAddressBesides is an IPv4 address of this machine's interfaces, not
// loopback, link-local nor not; the scenario stops without one.
func ownAddressBesides(t *testing.T, not netip.Addr) netip.Addr {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		p, err := netip.ParsePrefix(a.String())
		if err == nil && p.Addr().Is4() && !p.Addr().IsLoopback() && !p.Addr().IsLinkLocalUnicast() && p.Addr() != not &&
			record.AddrClass(p.Addr(), false) == "" {
			return p.Addr()
		}
	}
	t.Fatalf("this machine has no IPv4 address of its own besides %s and loopback", not)
	return netip.Addr{}
}

func listenOn(t *testing.T, addr netip.Addr, port int) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(addr.String(), strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// listenPairOn listens on the same free port at a and b.
func listenPairOn(t *testing.T, a, b netip.Addr) (net.Listener, net.Listener) {
	t.Helper()
	for range 20 {
		first := listenOn(t, a, 0)
		second, err := net.Listen("tcp", net.JoinHostPort(b.String(), strconv.Itoa(first.Addr().(*net.TCPAddr).Port)))
		if err == nil {
			t.Cleanup(func() { second.Close() })
			return first, second
		}
		first.Close() // taken at b: try another port
	}
	t.Fatalf("no port free at both %s and %s", a, b)
	return nil, nil
}

// socksProxy is berth-proxy in-process with its SOCKS listener.
type socksProxy struct {
	srv  *proxy.Server
	addr string
}

func startProxy(t *testing.T, cfg proxy.Config) *socksProxy {
	t.Helper()
	cfg.Registerer = prometheus.NewRegistry()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := proxy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	ln := listenOn(t, netip.MustParseAddr("127.0.0.1"), 0)
	go srv.ServeSOCKS(ln)
	return &socksProxy{srv: srv, addr: ln.Addr().String()}
}

// SOCKS5 replies (RFC 1928).
const (
	socksSucceeded  = 0x00
	socksNotAllowed = 0x02
)

// connect sends a SOCKS5 CONNECT to host:port and returns the reply code;
// on success with body set, it GETs / through the tunnel into body.
func (p *socksProxy) connect(host string, port uint16, body *string) byte {
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		return 0xff
	}
	defer c.Close()
	// The proxy answers within its handshake timeout and a connect within
	// its connect timeout.
	_ = c.SetDeadline(time.Now().Add(proxy.DefaultHandshakeTimeout + proxy.DefaultConnectTimeout))
	req := append([]byte{5, 1, 0, 5, 1, 0, 3, byte(len(host))}, host...)
	req = binary.BigEndian.AppendUint16(req, port)
	if _, err := c.Write(req); err != nil {
		return 0xff
	}
	rd := bufio.NewReader(c)
	head := make([]byte, 2+4) // the method chosen, then the reply up to its address type
	if _, err := io.ReadFull(rd, head); err != nil {
		return 0xff
	}
	reply := head[3]
	if reply != socksSucceeded || body == nil {
		return reply
	}
	rest := 4 + 2 // the bound address: IPv4 and port
	if head[5] == 4 {
		rest = 16 + 2
	}
	if _, err := io.ReadFull(rd, make([]byte, rest)); err != nil {
		return 0xff
	}
	fmt.Fprintf(c, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", host)
	resp, err := http.ReadResponse(rd, nil)
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		*body = string(b)
	}
	return reply
}
