package proxy

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
)

// Issue 21, row 5, first case: a name whose only binding at host port H is
// UDP (53/udp published at H) is not reached over TCP at H, whether the
// client names the service or the container; a TCP service of the same
// host at H sees no connection.
func TestE2ENoTCPToAUDPBinding(t *testing.T) {
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	tcpAtH := listen(t) // the host's TCP service at the port the UDP binding took
	reached := testenv.ServeCounting(t, tcpAtH, "tcp service")
	loopback := netip.MustParseAddr("127.0.0.1")
	ctr := &record.Container{V: record.Version, ID: strings.Repeat("d", 64), Name: "dns-1", Service: "dns.shop",
		Image: "test", Health: record.HealthNone, Priority: record.DefaultPriority, Weight: record.DefaultWeight,
		Ports: []record.Port{{Port: 53, Proto: "udp", Name: "domain", Addr: loopback, HostPort: port(tcpAtH)}}}
	kv := consul.Client().KV()
	testenv.PutJSON(t, kv, record.ContainerKey("berth", "testhost", ctr.ID), ctr)
	testenv.PutJSON(t, kv, record.HostKey("berth", "testhost"), &record.Host{V: record.Version, Name: "testhost",
		Addrs: []netip.Addr{loopback}, Rev: 1})
	dnsd := testenv.StartCoreDNS(t, e2eCorefile(consul.HTTP))
	waitSRV(t, dnsd.Addr, "_53._udp.dns.shop."+e2eZone+".", 1)

	srv, socksAddr, _ := startInProcess(t, Config{Zones: []string{e2eZone}, DNSServer: dnsd.Addr, AllowLoopback: true})
	for _, name := range []string{"dns.shop." + e2eZone, "dns-1.testhost.hosts." + e2eZone} {
		c, reply := socksConnect(t, socksAddr, name, uint16(port(tcpAtH)))
		if reply != replyNotAllowed {
			t.Errorf("SOCKS %s:%d over TCP (only %d/udp is published there): reply %#x, want %#x (not allowed)",
				name, port(tcpAtH), 53, reply, replyNotAllowed)
		}
		c.Close()
	}
	if n := reached.Load(); n != 0 {
		t.Errorf("the TCP service at the UDP binding's host port accepted %d connections through the proxy", n)
	}
	if n := testenv.MetricValue(srv.Metrics().Rejected.WithLabelValues("socks", rejectNotPublished)); n != 2 {
		t.Errorf("rejected{socks,not_published} = %v, want 2", n)
	}
}

// listenPair listens on the same free port at two loopback addresses.
func listenPair(t *testing.T, a, b string) (net.Listener, net.Listener) {
	t.Helper()
	for range 20 {
		first, err := net.Listen("tcp", net.JoinHostPort(a, "0"))
		if err != nil {
			t.Fatal(err)
		}
		second, err := net.Listen("tcp", net.JoinHostPort(b, strconv.Itoa(port(first))))
		if err == nil {
			t.Cleanup(func() { first.Close(); second.Close() })
			return first, second
		}
		first.Close() // taken at b: try another port
	}
	t.Fatalf("no port free at both %s and %s", a, b)
	return nil, nil
}

// Issue 21, row 5, second case: a container publishing 80 at its host's
// address (127.0.0.1:H1) and 8443 at another address (127.0.0.2:H2) lets a
// client reach 127.0.0.2:H2 through _8443._tcp, never 127.0.0.1:H2, a pair
// the zone never published (the container's name, the 8443 target, has
// both addresses). Every request lands on the published pair.
func TestE2EOnlyPublishedPairs(t *testing.T) {
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	hostAddr, otherAddr := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	web := listen(t)
	testenv.ServeCounting(t, web, "web")
	published, victim := listenPair(t, otherAddr.String(), hostAddr.String())
	publishedHits := testenv.ServeCounting(t, published, "published pair")
	victimHits := testenv.ServeCounting(t, victim, "never published")
	ctr := &record.Container{V: record.Version, ID: strings.Repeat("a", 64), Name: "mix-1", Service: "mix.shop",
		Image: "test", Health: record.HealthNone, Priority: record.DefaultPriority, Weight: record.DefaultWeight,
		Ports: []record.Port{
			{Port: 80, Proto: "tcp", Name: "http", Addr: hostAddr, HostPort: port(web)},
			{Port: 8443, Proto: "tcp", Addr: otherAddr, HostPort: port(published)},
		}}
	kv := consul.Client().KV()
	testenv.PutJSON(t, kv, record.ContainerKey("berth", "testhost", ctr.ID), ctr)
	testenv.PutJSON(t, kv, record.HostKey("berth", "testhost"), &record.Host{V: record.Version, Name: "testhost",
		Addrs: []netip.Addr{hostAddr}, Rev: 1})
	dnsd := testenv.StartCoreDNS(t, e2eCorefile(consul.HTTP))
	waitSRV(t, dnsd.Addr, "_8443._tcp.mix.shop."+e2eZone+".", 1)

	// The container name's two addresses may come in either order, and a
	// proxy caches the answer: a proxy per request, and sixteen of them
	// (2^-16 that all would try the published one first, if the order
	// were random, on a proxy that dials either).
	const requests = 16
	for i := range requests {
		_, socksAddr, _ := startInProcess(t, Config{Zones: []string{e2eZone}, DNSServer: dnsd.Addr, AllowLoopback: true})
		c, reply := socksConnect(t, socksAddr, "mix.shop."+e2eZone, 8443)
		if reply != replySucceeded {
			t.Fatalf("request %d: SOCKS mix.shop:8443: reply %#x", i+1, reply)
		}
		if body := getThrough(t, c, "mix.shop."+e2eZone); body != "published pair" {
			t.Errorf("request %d: mix.shop:8443 reached %q, want the published pair %s:%d", i+1, body, otherAddr, port(published))
		}
		c.Close()
	}
	if n := victimHits.Load(); n != 0 {
		t.Errorf("%s:%d, never published, accepted %d connections", hostAddr, port(victim), n)
	}
	if n := publishedHits.Load(); n != requests {
		t.Errorf("the published pair accepted %d connections, want %d", n, requests)
	}
}
