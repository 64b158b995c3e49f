package proxy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/miekg/dns"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
)

// putContainer writes one container document of service svc on host
// "testhost", one tcp port 80 published at addr:hostPort, and bumps the
// host document's rev so that the plugin reads the host again. The host's
// addresses are hostAddrs, 127.0.0.1 without any.
func putContainer(t *testing.T, kv *api.KV, rev uint64, name, svc string, addr netip.Addr, hostPort int, hostAddrs ...netip.Addr) {
	t.Helper()
	if len(hostAddrs) == 0 {
		hostAddrs = []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	}
	doc := &record.Container{V: record.Version, ID: strings.Repeat(fmt.Sprintf("%x", rev%16), 64), Name: name, Service: svc,
		Image: "test", Health: record.HealthNone, Priority: record.DefaultPriority, Weight: record.DefaultWeight,
		Ports: []record.Port{{Port: 80, Proto: "tcp", Name: "http", Addr: addr, HostPort: hostPort}}}
	testenv.PutJSON(t, kv, record.ContainerKey("berth", "testhost", doc.ID), doc)
	testenv.PutJSON(t, kv, record.HostKey("berth", "testhost"), &record.Host{V: record.Version, Name: "testhost",
		Addrs: hostAddrs, Rev: rev, Exporter: "proxy addrs test"})
}

// srvCount is how many SRV records CoreDNS serves for name now.
func srvCount(t *testing.T, server, name string) int {
	t.Helper()
	r, err := testenv.Exchange("udp", server, name, dns.TypeSRV, 0)
	if err != nil {
		t.Fatal(err)
	}
	return len(r.Answer)
}

// recordingDialer is the proxy's dialer, noting every address the guard let
// through, so that a test sees whether a refused address was dialled. It
// connects to loopback addresses only: a proxy that failed the test must
// not send a packet off this machine.
type recordingDialer struct {
	mu      sync.Mutex
	dialled []string
}

func (d *recordingDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	d.dialled = append(d.dialled, addr)
	d.mu.Unlock()
	if ap, err := netip.ParseAddrPort(addr); err != nil || !ap.Addr().Unmap().IsLoopback() {
		return nil, fmt.Errorf("recordingDialer: a test does not dial %s off this machine", addr)
	}
	return (&net.Dialer{}).DialContext(ctx, network, addr)
}

func (d *recordingDialer) all() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.dialled...)
}

// Issue 21, row 3: cloud metadata services outside link-local
// (100.100.100.200, Alibaba's; fd00:ec2::254, AWS's over IPv6) are never
// served by the plugin (each counted as metadata_address), nor dialled by
// berth-proxy even when its --allow list names them; the Corefile's
// deny_addresses and berth-proxy's --deny refuse the operator's own ranges.
func TestE2EMetadataAndDenyLists(t *testing.T) {
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	kv := consul.Client().KV()
	var accepted atomic.Int32
	guarded := listen(t)
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "guarded") })}
	go hs.Serve(testenv.CountingListener{Listener: guarded, N: &accepted})
	t.Cleanup(func() { hs.Close() })

	loopback := netip.MustParseAddr("127.0.0.1")
	putContainer(t, kv, 1, "meta4", "meta4.shop", netip.MustParseAddr("100.100.100.200"), 80)
	putContainer(t, kv, 2, "meta6", "meta6.shop", netip.MustParseAddr("fd00:ec2::254"), 80)
	putContainer(t, kv, 3, "azure", "azure.shop", netip.MustParseAddr("168.63.129.16"), 80)
	putContainer(t, kv, 4, "mgmt", "mgmt.shop", netip.MustParseAddr("198.51.100.7"), 80)
	putContainer(t, kv, 5, "guarded", "guarded.shop", loopback, port(guarded))

	metrics := "127.0.0.1:" + strconv.Itoa(testenv.FreePorts(t, 1)[0])
	dnsd := testenv.StartCoreDNS(t, e2eZone+" {\n  berth {\n    consul "+consul.HTTP+"\n    ttl 5\n    allow_loopback\n"+
		"    deny_addresses 198.51.100.0/24 2001:db8:bad::/48\n  }\n  prometheus "+metrics+"\n}\n")
	waitSRV(t, dnsd.Addr, "_80._tcp.guarded.shop."+e2eZone+".", 1)
	for _, svc := range []string{"meta4", "meta6", "azure", "mgmt"} {
		name := "_80._tcp." + svc + ".shop." + e2eZone + "."
		if n := srvCount(t, dnsd.Addr, name); n != 0 {
			t.Errorf("%s: %d SRV records served, want none (its only port is on a refused address)", name, n)
		}
	}
	scraped := scrape(t, metrics)
	for _, want := range []string{`coredns_berth_invalid_records_total{reason="metadata_address"}`,
		`coredns_berth_invalid_records_total{reason="denied_address"}`} {
		if !strings.Contains(scraped, want+" ") {
			t.Errorf("CoreDNS does not count %s:\n%s", want, grepLines(scraped, "coredns_berth_invalid_records_total"))
		}
	}
	if out := dnsd.Output(); !strings.Contains(out, "100.100.100.200 is a cloud metadata service's address") ||
		!strings.Contains(out, "198.51.100.7 is in the operator's deny list") {
		t.Errorf("CoreDNS did not log the refusals:\n%s", out)
	}

	// The proxy: an --allow list that names the metadata addresses (or a
	// DNS server that serves them) still gets no dial; a served record in
	// --deny neither.
	dialer := &recordingDialer{}
	srv, socksAddr, _ := startInProcess(t, Config{Zones: []string{e2eZone}, DNSServer: dnsd.Addr, AllowLoopback: true,
		Allow: []string{"100.100.100.200", "fd00:ec2::254", "168.63.129.16"}, Deny: []string{"127.0.0.1/32"},
		DialContext: dialer.dial})
	for _, dest := range []struct {
		host   string
		port   uint16
		reason string
	}{
		{"100.100.100.200", 80, forbidMetadata},
		{"fd00:ec2::254", 80, forbidMetadata},
		{"168.63.129.16", 80, forbidMetadata},
		{"guarded.shop." + e2eZone, 80, forbidDenied},
	} {
		c, reply := socksConnect(t, socksAddr, dest.host, dest.port)
		if reply != replyNotAllowed {
			t.Errorf("SOCKS %s:%d: reply %#x, want %#x (not allowed)", dest.host, dest.port, reply, replyNotAllowed)
		}
		c.Close()
	}
	if n := testenv.MetricValue(srv.Metrics().Rejected.WithLabelValues("socks", forbidMetadata)); n != 3 {
		t.Errorf("rejected{socks,metadata} = %v, want 3", n)
	}
	if n := testenv.MetricValue(srv.Metrics().Rejected.WithLabelValues("socks", forbidDenied)); n != 1 {
		t.Errorf("rejected{socks,denied} = %v, want 1", n)
	}
	if d := dialer.all(); len(d) != 0 || accepted.Load() != 0 {
		t.Errorf("refused addresses were dialled: %v (the guarded listener accepted %d)", d, accepted.Load())
	}
}

// ownAddress is a non-loopback, non-link-local address of this machine's
// interfaces, IPv4 if it has one; the test skips without any.
func ownAddress(t *testing.T) netip.Addr {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	var found netip.Addr
	for _, a := range addrs {
		p, err := netip.ParsePrefix(a.String())
		if err != nil || p.Addr().IsLoopback() || p.Addr().IsLinkLocalUnicast() || record.AddrClass(p.Addr(), false) != "" {
			continue
		}
		if !found.IsValid() || p.Addr().Is4() && !found.Is4() {
			found = p.Addr().Unmap()
		}
	}
	if !found.IsValid() {
		testenv.Unavailable(t, "this machine has no non-loopback address of its own")
	}
	return found
}

// Issue 21, row 4: a container entry naming one of the proxy host's own
// non-loopback addresses, at a port a service of that host listens on,
// does not reach it through berth-proxy, even with --allow-loopback (which
// opens loopback only); --allow-own-addresses is the one setting that does,
// for a proxy on a container host. The service listens on that address
// alone, so the connection never leaves this machine.
func TestE2EOwnAddressRefused(t *testing.T) {
	own := ownAddress(t)
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	ln, err := net.Listen("tcp", net.JoinHostPort(own.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int32
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "the proxy host's own service")
	})}
	go hs.Serve(testenv.CountingListener{Listener: ln, N: &accepted})
	t.Cleanup(func() { hs.Close() })
	putContainer(t, consul.Client().KV(), 1, "local-1", "local.shop", own, port(ln), own)
	dnsd := testenv.StartCoreDNS(t, e2eCorefile(consul.HTTP))
	service := "local.shop." + e2eZone
	waitSRV(t, dnsd.Addr, "_80._tcp."+service+".", 1)

	strict, socksAddr, httpAddr := startInProcess(t, Config{Zones: []string{e2eZone}, DNSServer: dnsd.Addr, AllowLoopback: true})
	c, reply := socksConnect(t, socksAddr, service, 80)
	if reply != replyNotAllowed {
		t.Errorf("SOCKS %s:80 (at %s, this host's own address): reply %#x, want %#x (not allowed)", service, own, reply, replyNotAllowed)
	}
	c.Close()
	if status, body := get(t, proxyClient(t, httpAddr, nil), "GET", "http://"+service+"/", ""); status != http.StatusForbidden {
		t.Errorf("HTTP GET %s (at %s, this host's own address): %d %q, want 403", service, own, status, body)
	}
	if n := accepted.Load(); n != 0 {
		t.Fatalf("the proxy host's own service at %s accepted %d connections through the proxy", own, n)
	}
	if n := testenv.MetricValue(strict.Metrics().Rejected.WithLabelValues("socks", forbidOwnAddress)); n != 1 {
		t.Errorf("rejected{socks,own_address} = %v, want 1", n)
	}

	_, socksAddr, _ = startInProcess(t, Config{Zones: []string{e2eZone}, DNSServer: dnsd.Addr, AllowOwnAddresses: true})
	c, reply = socksConnect(t, socksAddr, service, 80)
	if reply != replySucceeded {
		t.Fatalf("SOCKS %s:80 with AllowOwnAddresses: reply %#x", service, reply)
	}
	if body := getThrough(t, c, service); body != "the proxy host's own service" {
		t.Errorf("through %s:80 with AllowOwnAddresses: %q", service, body)
	}
	c.Close()
}
