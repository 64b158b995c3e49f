package berth_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
	"github.com/hashicorp/consul/api"
	"github.com/miekg/dns"
)

// The end-to-end tests run the built bin/coredns with the Corefiles users
// copy from corefile-examples/, against a real Consul agent, and query it
// over UDP and TCP as dig would.

const e2eZone = "c.example.org."

// seed writes host1 with one web container and host2 with many instances of
// "big", whose SRV answer cannot fit in 512 bytes.
func seed(t *testing.T, kv *api.KV) {
	t.Helper()
	host1 := netip.MustParseAddr("192.0.2.10")
	testenv.PutJSON(t, kv, record.HostKey("berth", "host1"), record.Host{V: 1, Name: "host1", Addrs: []netip.Addr{host1}, Rev: 1})
	testenv.PutJSON(t, kv, record.ContainerKey("berth", "host1", strings.Repeat("a", 64)), record.Container{
		V: 1, ID: strings.Repeat("a", 64), Name: "web-1", Service: "web.shop", Image: "nginx:1.27",
		Health: record.HealthHealthy, Priority: 10, Weight: 10,
		Ports: []record.Port{{Port: 80, Proto: "tcp", Name: "http", Addr: host1, HostPort: 32768}},
	})
	host2 := netip.MustParseAddr("192.0.2.20")
	testenv.PutJSON(t, kv, record.HostKey("berth", "host2"), record.Host{V: 1, Name: "host2", Addrs: []netip.Addr{host2}, Rev: 1})
	for i := range 60 {
		id := fmt.Sprintf("%064x", i+1)
		testenv.PutJSON(t, kv, record.ContainerKey("berth", "host2", id), record.Container{
			V: 1, ID: id, Name: "big-" + strconv.Itoa(i), Service: "big", Image: "app",
			Health: record.HealthNone, Priority: 10, Weight: 10,
			Ports: []record.Port{{Port: 8080, Proto: "tcp", Addr: host2, HostPort: 40000 + i}},
		})
	}
}

// example reads a Corefile from corefile-examples/, moving its listeners to
// free loopback ports and its upstream to upstream.
func example(t *testing.T, name string, replace ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "corefile-examples", name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.NewReplacer(replace...).Replace(string(b))
}

func exchange(t *testing.T, net, addr, name string, qtype uint16, udpSize uint16) *dns.Msg {
	t.Helper()
	r, err := testenv.Exchange(net, addr, name, qtype, udpSize)
	if err != nil {
		t.Fatalf("%s %s %s: %v", net, name, dns.TypeToString[qtype], err)
	}
	return r
}

// waitLoaded polls until the zone answers authoritatively (first load done).
func waitLoaded(t *testing.T, addr, name string) {
	t.Helper()
	deadline := time.Now().Add(testenv.ZoneStartWait)
	for {
		if r := exchange(t, "udp", addr, name, dns.TypeSOA, 0); r.Rcode == dns.RcodeSuccess && r.Authoritative {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("zone not loaded within %v", testenv.ZoneStartWait)
		}
		time.Sleep(testenv.PollInterval)
	}
}

func TestE2EMinimalCorefile(t *testing.T) {
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	seed(t, consul.Client().KV())
	dnsd := testenv.StartCoreDNS(t, example(t, "minimal.Corefile"), "CONSUL_HTTP_ADDR="+consul.HTTP)
	waitLoaded(t, dnsd.Addr, e2eZone)

	for _, proto := range []string{"udp", "tcp"} {
		r := exchange(t, proto, dnsd.Addr, "_80._tcp.web.shop."+e2eZone, dns.TypeSRV, 0)
		if r.Rcode != dns.RcodeSuccess || !r.Authoritative || len(r.Answer) != 1 {
			t.Fatalf("%s SRV: want one authoritative answer, got %v", proto, r)
		}
		srv := r.Answer[0].(*dns.SRV)
		if srv.Port != 32768 || srv.Target != "host1.hosts."+e2eZone {
			t.Errorf("%s SRV = %v, want port 32768 target host1.hosts.%s", proto, srv, e2eZone)
		}
		if len(r.Extra) != 1 || r.Extra[0].(*dns.A).A.String() != "192.0.2.10" {
			t.Errorf("%s SRV glue = %v, want host1's A record", proto, r.Extra)
		}

		r = exchange(t, proto, dnsd.Addr, "nothing.here."+e2eZone, dns.TypeA, 0)
		if r.Rcode != dns.RcodeNameError || !r.Authoritative || len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != dns.TypeSOA {
			t.Errorf("%s missing name: want NXDOMAIN, AA and the SOA, got %v", proto, r)
		}
		r = exchange(t, proto, dnsd.Addr, "SHOP."+e2eZone, dns.TypeA, 0)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 || len(r.Ns) != 1 {
			t.Errorf("%s empty non-terminal: want NODATA with the SOA, got %v", proto, r)
		}
	}
}

// A large answer is truncated with TC over UDP (512 bytes without EDNS0, or
// the EDNS0 size), and whole over TCP.
func TestE2ETruncation(t *testing.T) {
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	seed(t, consul.Client().KV())
	dnsd := testenv.StartCoreDNS(t, example(t, "minimal.Corefile"), "CONSUL_HTTP_ADDR="+consul.HTTP)
	waitLoaded(t, dnsd.Addr, e2eZone)

	name := "big." + e2eZone
	udp := exchange(t, "udp", dnsd.Addr, name, dns.TypeSRV, 0)
	if !udp.Truncated || len(udp.Answer) >= 60 {
		t.Errorf("UDP without EDNS0: want TC and fewer than 60 records, got TC=%v with %d", udp.Truncated, len(udp.Answer))
	}
	udp.Compress = true // Len of the wire form, as the server packed it
	if n := udp.Len(); n > 512 {
		t.Errorf("UDP without EDNS0: %d bytes, over 512", n)
	}
	edns := exchange(t, "udp", dnsd.Addr, name, dns.TypeSRV, 4096)
	if edns.Truncated || len(edns.Answer) != 60 {
		t.Errorf("UDP with EDNS0 4096: want all 60 records untruncated, got TC=%v with %d", edns.Truncated, len(edns.Answer))
	}
	tcp := exchange(t, "tcp", dnsd.Addr, name, dns.TypeSRV, 0)
	if tcp.Truncated || len(tcp.Answer) != 60 {
		t.Errorf("TCP: want all 60 records, got TC=%v with %d", tcp.Truncated, len(tcp.Answer))
	}
}

// The production example: cache, metrics, readiness and AXFR.
func TestE2EProductionCorefile(t *testing.T) {
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	seed(t, consul.Client().KV())
	ports := testenv.FreePorts(t, 4)
	metrics := "127.0.0.1:" + strconv.Itoa(ports[0])
	health := "127.0.0.1:" + strconv.Itoa(ports[1])
	ready := "127.0.0.1:" + strconv.Itoa(ports[2])
	// The secondaries become this machine (127.0.0.1, NOTIFY to a port
	// where nothing listens), so the test may transfer; 127.0.0.2 may not.
	secondary := "127.0.0.1:" + strconv.Itoa(ports[3])
	corefile := example(t, "production.Corefile",
		"127.0.0.1:9153", metrics, "127.0.0.1:8080", health, "127.0.0.1:8181", ready,
		"to 192.0.2.63 192.0.2.64", "to "+secondary)
	dnsd := testenv.StartCoreDNS(t, corefile, "CONSUL_HTTP_ADDR="+consul.HTTP)
	waitLoaded(t, dnsd.Addr, e2eZone)

	if code := httpStatus(t, "http://"+ready+"/ready"); code != http.StatusOK {
		t.Errorf("ready: status %d after the first load, want 200", code)
	}
	r := exchange(t, "udp", dnsd.Addr, e2eZone, dns.TypeNS, 0)
	if len(r.Answer) != 2 || len(r.Extra) != 2 {
		t.Errorf("NS: want 2 NS records with 2 glue records, got %v", r)
	}

	// A transfer from an address that is not a secondary is refused.
	other, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: testenv.QueryTimeout}).Dial("tcp", dnsd.Addr)
	if err != nil {
		t.Fatal(err)
	}
	refused := &dns.Transfer{Conn: &dns.Conn{Conn: other}}
	m := new(dns.Msg)
	m.SetAxfr(e2eZone)
	env, err := refused.In(m, dnsd.Addr)
	if err != nil {
		t.Fatal(err)
	}
	var refusal error
	for e := range env {
		if e.Error == nil || len(e.RR) > 0 {
			t.Errorf("AXFR from 127.0.0.2, not a secondary: %v records, error %v; want it refused", len(e.RR), e.Error)
		}
		refusal = e.Error
	}
	if refusal == nil || !strings.Contains(refusal.Error(), "bad xfr rcode: 5") {
		t.Errorf("AXFR from 127.0.0.2: %v, want REFUSED (rcode 5)", refusal)
	}

	tr := &dns.Transfer{}
	env, err = tr.In(m, dnsd.Addr)
	if err != nil {
		t.Fatal(err)
	}
	var rrs []dns.RR
	for e := range env {
		if e.Error != nil {
			t.Fatalf("AXFR: %v", e.Error)
		}
		rrs = append(rrs, e.RR...)
	}
	if len(rrs) < 2 || rrs[0].Header().Rrtype != dns.TypeSOA || rrs[len(rrs)-1].Header().Rrtype != dns.TypeSOA {
		t.Fatalf("AXFR: want SOA first and last, got %d records", len(rrs))
	}
	seen := map[string]bool{}
	for _, rr := range rrs[1 : len(rrs)-1] {
		if seen[rr.String()] {
			t.Errorf("AXFR: %v sent twice", rr)
		}
		seen[rr.String()] = true
	}
	for _, want := range []string{
		"_80._tcp.web.shop.c.example.org.\t5\tIN\tSRV\t10 10 32768 host1.hosts.c.example.org.",
		"ns1.c.example.org.\t5\tIN\tA\t192.0.2.53",
		"big-59.host2.hosts.c.example.org.\t5\tIN\tSRV\t10 10 40059 host2.hosts.c.example.org.",
	} {
		if !seen[want] {
			t.Errorf("AXFR: missing %q", want)
		}
	}

	body := httpBody(t, "http://"+metrics+"/metrics")
	for _, want := range []string{`coredns_berth_records{zone="c.example.org."}`, `coredns_berth_hosts{zone="c.example.org."} 2`, `coredns_berth_stale{zone="c.example.org."} 0`} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics: missing %q", want)
		}
	}
}

// The fallthrough example: names berth does not have go to the forward
// plugin's upstream (a DNS server of the test's own on loopback).
func TestE2EFallthroughCorefile(t *testing.T) {
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	seed(t, consul.Client().KV())
	upstream := startUpstream(t)
	dnsd := testenv.StartCoreDNS(t, example(t, "fallthrough.Corefile", "/etc/resolv.conf", upstream),
		"CONSUL_HTTP_ADDR="+consul.HTTP)
	waitLoaded(t, dnsd.Addr, e2eZone)

	r := exchange(t, "udp", dnsd.Addr, "web.shop."+e2eZone, dns.TypeA, 0)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.10" {
		t.Errorf("berth name: want 192.0.2.10 from berth, got %v", r)
	}
	r = exchange(t, "udp", dnsd.Addr, "www.c.example.org.", dns.TypeA, 0)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "198.51.100.7" {
		t.Errorf("name berth lacks: want the upstream's 198.51.100.7, got %v", r)
	}
	r = exchange(t, "udp", dnsd.Addr, "example.net.", dns.TypeA, 0)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "198.51.100.7" {
		t.Errorf("name outside the zone: want the upstream's 198.51.100.7, got %v", r)
	}
}

// startUpstream answers every A query with 198.51.100.7.
func startUpstream(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if r.Question[0].Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA,
				Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP("198.51.100.7")})
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

func httpStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func httpBody(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
