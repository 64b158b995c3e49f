package berth

import (
	"context"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/berthdns/berth/record"
	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/pkg/fall"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
)

// The fixture zone c.example.org. (TTL 30), as the watcher would build it
// from two hosts' documents:
//
//	h1 192.0.2.10 2001:db8::10
//	  web-1   web.shop  healthy, priority 1 weight 5, 80/tcp http on both
//	          host addresses (dual stack), host port 32768
//	  db-1    db.shop   no health check, 5432/tcp postgresql bound on
//	          198.51.100.7 (not a host address), host port 5432
//	  sick-1  web.shop  unhealthy, 80/tcp http on 198.51.100.31:32770
//	  boot-1  web.shop  starting,  80/tcp http on 198.51.100.32:32771
//	  nap-1   web.shop  healthy but paused, 80/tcp http on 198.51.100.33:32772
//	h2 192.0.2.20
//	  web-2   web.shop  no health check, priority 20 weight 5, 80/tcp http
//	          on 192.0.2.20:8080
//	  cache-1 cache     healthy, 6379/tcp redis on 192.0.2.20:6379 and
//	          9999/udp (no name) on 192.0.2.20:9999
func fixtureHosts() map[string]*hostDocs {
	web1 := mkCtr("a1", "web-1", "web.shop", record.HealthHealthy,
		mkPort(80, "tcp", "http", "192.0.2.10", 32768), mkPort(80, "tcp", "http", "2001:db8::10", 32768))
	web1.Image, web1.Priority, web1.Weight = "nginx:1.27", 1, 5
	db1 := mkCtr("d1", "db-1", "db.shop", record.HealthNone, mkPort(5432, "tcp", "postgresql", "198.51.100.7", 5432))
	sick1 := mkCtr("e1", "sick-1", "web.shop", record.HealthUnhealthy, mkPort(80, "tcp", "http", "198.51.100.31", 32770))
	boot1 := mkCtr("b1", "boot-1", "web.shop", record.HealthStarting, mkPort(80, "tcp", "http", "198.51.100.32", 32771))
	nap1 := mkCtr("c1", "nap-1", "web.shop", record.HealthHealthy, mkPort(80, "tcp", "http", "198.51.100.33", 32772))
	nap1.Paused = true
	web2 := mkCtr("a2", "web-2", "web.shop", record.HealthNone, mkPort(80, "tcp", "http", "192.0.2.20", 8080))
	web2.Priority, web2.Weight = 20, 5
	cache1 := mkCtr("c2", "cache-1", "cache", record.HealthHealthy,
		mkPort(6379, "tcp", "redis", "192.0.2.20", 6379), mkPort(9999, "udp", "", "192.0.2.20", 9999))
	return map[string]*hostDocs{
		"h1": mkData(mkHost("h1", "192.0.2.10", "2001:db8::10"), web1, db1, sick1, boot1, nap1),
		"h2": mkData(mkHost("h2", "192.0.2.20"), web2, cache1),
	}
}

// newTestBerth is the handler over the loaded fixture zone; Next answers
// nothing and returns REFUSED.
func newTestBerth(t testing.TB) *Berth {
	t.Helper()
	var log skipLog
	z := newTestZone(log.fn)
	for name, d := range fixtureHosts() {
		z.put(name, d)
	}
	z.MarkLoaded()
	if got := log.all(); len(got) > 0 {
		t.Fatalf("fixture reported skipped names: %v", got)
	}
	return &Berth{
		Next:  test.NextHandler(dns.RcodeRefused, nil),
		zones: map[string]*Zone{testOrigin: z},
		names: plugin.Zones{testOrigin},
	}
}

// berthCase is a test.Case plus what the plugin must do with it.
type berthCase struct {
	test.Case
	desc  string
	class uint16 // default IN
	next  bool   // must go to the next plugin
}

// nextProbe is a next plugin that records that it was called.
type nextProbe struct{ called atomic.Bool }

func (n *nextProbe) Name() string { return "probe" }
func (n *nextProbe) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	n.called.Store(true)
	return dns.RcodeRefused, nil
}

func sortedRRs(rrs []dns.RR) []dns.RR {
	rrs = slices.Clone(rrs)
	sort.Sort(test.RRSet(rrs))
	return rrs
}

// runCase serves tc on a copy of b with a probing next plugin and checks
// the response: rcode, AA, the three sections (sorted, TTLs compared), and
// that the response packs.
func runCase(t *testing.T, b *Berth, tc berthCase) {
	t.Helper()
	probe := &nextProbe{}
	bb := *b
	bb.Next = probe
	m := tc.Msg()
	if tc.class != 0 {
		m.Question[0].Qclass = tc.class
	}
	rec := dnstest.NewRecorder(&test.ResponseWriter{})
	rcode, err := bb.ServeDNS(context.Background(), rec, m)
	if err != nil {
		t.Fatalf("ServeDNS error: %v", err)
	}
	if tc.next {
		if !probe.called.Load() || rcode != dns.RcodeRefused || rec.Msg != nil {
			t.Fatalf("want the query passed to the next plugin; next called=%v rcode=%s msg=%v", probe.called.Load(), dns.RcodeToString[rcode], rec.Msg)
		}
		return
	}
	if probe.called.Load() {
		t.Fatal("the query went to the next plugin, want it answered here")
	}
	if rec.Msg == nil {
		t.Fatalf("no response written (rcode %s)", dns.RcodeToString[rcode])
	}
	resp := rec.Msg
	if !resp.Authoritative {
		t.Error("AA not set")
	}
	if !resp.Response || resp.Id != m.Id || len(resp.Question) != 1 || resp.Question[0] != m.Question[0] {
		t.Errorf("response header/question do not match the query: %v", resp)
	}
	want := tc.Case
	want.Answer, want.Ns, want.Extra = sortedRRs(tc.Answer), sortedRRs(tc.Ns), sortedRRs(tc.Extra)
	if err := test.SortAndCheck(resp, want); err != nil {
		t.Errorf("%v\n%v", err, resp)
	}
	if _, err := resp.Pack(); err != nil {
		t.Errorf("response does not pack: %v", err)
	}
}

const zsoa = "c.example.org. 30 IN SOA ns1.c.example.org. hostmaster.c.example.org. 1 60 30 604800 30"

// h1Glue and h2Glue are the host addresses SRV answers carry as glue.
var (
	h1Glue = []dns.RR{test.A("h1.hosts.c.example.org. 30 IN A 192.0.2.10"), test.AAAA("h1.hosts.c.example.org. 30 IN AAAA 2001:db8::10")}
	h2Glue = []dns.RR{test.A("h2.hosts.c.example.org. 30 IN A 192.0.2.20")}
)

func nxdomain(desc, qname string, qtype uint16) berthCase {
	return berthCase{desc: desc, Case: test.Case{Qname: qname, Qtype: qtype, Rcode: dns.RcodeNameError, Ns: []dns.RR{test.SOA(zsoa)}}}
}

func nodata(desc, qname string, qtype uint16) berthCase {
	return berthCase{desc: desc, Case: test.Case{Qname: qname, Qtype: qtype, Rcode: dns.RcodeSuccess, Ns: []dns.RR{test.SOA(zsoa)}}}
}

func answer(desc, qname string, qtype uint16, ans []dns.RR, extra ...dns.RR) berthCase {
	return berthCase{desc: desc, Case: test.Case{Qname: qname, Qtype: qtype, Rcode: dns.RcodeSuccess, Answer: ans, Extra: extra}}
}

var web1TXT = test.TXT(`web-1.h1.hosts.c.example.org. 30 IN TXT "service=web.shop" "id=a1a1a1a1a1a1" "image=nginx:1.27" "health=healthy"`)

var webShopSRV = []dns.RR{
	test.SRV("web.shop.c.example.org. 30 IN SRV 1 5 32768 h1.hosts.c.example.org."),
	test.SRV("web.shop.c.example.org. 30 IN SRV 20 5 8080 h2.hosts.c.example.org."),
}

func renamed(rrs []dns.RR, name string) []dns.RR {
	out := make([]dns.RR, len(rrs))
	for i, rr := range rrs {
		out[i] = dns.Copy(rr)
		out[i].Header().Name = name
	}
	return out
}

var serveCases = []berthCase{
	// Apex.
	answer("apex SOA", testOrigin, dns.TypeSOA, []dns.RR{test.SOA(zsoa)}),
	answer("apex NS with in-zone glue", testOrigin, dns.TypeNS,
		[]dns.RR{test.NS("c.example.org. 30 IN NS ns1.c.example.org."), test.NS("c.example.org. 30 IN NS ns2.example.net.")},
		test.A("ns1.c.example.org. 30 IN A 192.0.2.53"), test.AAAA("ns1.c.example.org. 30 IN AAAA 2001:db8::53")),
	answer("the ns name's address", "ns1.c.example.org.", dns.TypeA, []dns.RR{test.A("ns1.c.example.org. 30 IN A 192.0.2.53")}),
	answer("the ns name's IPv6 address", "ns1.c.example.org.", dns.TypeAAAA, []dns.RR{test.AAAA("ns1.c.example.org. 30 IN AAAA 2001:db8::53")}),
	answer("apex ANY: SOA and NS", testOrigin, dns.TypeANY,
		[]dns.RR{test.SOA(zsoa), test.NS("c.example.org. 30 IN NS ns1.c.example.org."), test.NS("c.example.org. 30 IN NS ns2.example.net.")}),
	nodata("apex A: NODATA", testOrigin, dns.TypeA),
	nodata("apex SRV: NODATA, no unrelated additional records", testOrigin, dns.TypeSRV),

	// <host>.hosts.Z
	answer("host A", "h1.hosts.c.example.org.", dns.TypeA, h1Glue[:1]),
	answer("host AAAA", "h1.hosts.c.example.org.", dns.TypeAAAA, h1Glue[1:]),
	answer("second host A", "h2.hosts.c.example.org.", dns.TypeA, h2Glue),
	nodata("host AAAA where only A exists: NODATA", "h2.hosts.c.example.org.", dns.TypeAAAA),
	nxdomain("unknown host", "h3.hosts.c.example.org.", dns.TypeA),

	// <container>.<host>.hosts.Z
	answer("container A", "web-1.h1.hosts.c.example.org.", dns.TypeA, []dns.RR{test.A("web-1.h1.hosts.c.example.org. 30 IN A 192.0.2.10")}),
	answer("container AAAA", "web-1.h1.hosts.c.example.org.", dns.TypeAAAA, []dns.RR{test.AAAA("web-1.h1.hosts.c.example.org. 30 IN AAAA 2001:db8::10")}),
	answer("container SRV: dual-stack binding gives one SRV, priority/weight from the document, host glue",
		"web-1.h1.hosts.c.example.org.", dns.TypeSRV,
		[]dns.RR{test.SRV("web-1.h1.hosts.c.example.org. 30 IN SRV 1 5 32768 h1.hosts.c.example.org.")}, h1Glue...),
	answer("container TXT", "web-1.h1.hosts.c.example.org.", dns.TypeTXT, []dns.RR{web1TXT}),
	answer("container ANY", "web-1.h1.hosts.c.example.org.", dns.TypeANY, []dns.RR{
		test.A("web-1.h1.hosts.c.example.org. 30 IN A 192.0.2.10"), test.AAAA("web-1.h1.hosts.c.example.org. 30 IN AAAA 2001:db8::10"),
		test.SRV("web-1.h1.hosts.c.example.org. 30 IN SRV 1 5 32768 h1.hosts.c.example.org."), web1TXT}),
	answer("port on a specific non-host address: SRV target is the container's name, glue its address",
		"db-1.h1.hosts.c.example.org.", dns.TypeSRV,
		[]dns.RR{test.SRV("db-1.h1.hosts.c.example.org. 30 IN SRV 10 10 5432 db-1.h1.hosts.c.example.org.")},
		test.A("db-1.h1.hosts.c.example.org. 30 IN A 198.51.100.7")),
	answer("container bound on a specific address: its A", "db-1.h1.hosts.c.example.org.", dns.TypeA,
		[]dns.RR{test.A("db-1.h1.hosts.c.example.org. 30 IN A 198.51.100.7")}),
	nodata("container AAAA where only A exists: NODATA", "db-1.h1.hosts.c.example.org.", dns.TypeAAAA),
	answer("unhealthy container present under hosts", "sick-1.h1.hosts.c.example.org.", dns.TypeSRV,
		[]dns.RR{test.SRV("sick-1.h1.hosts.c.example.org. 30 IN SRV 10 10 32770 sick-1.h1.hosts.c.example.org.")},
		test.A("sick-1.h1.hosts.c.example.org. 30 IN A 198.51.100.31")),
	answer("unhealthy container TXT says so", "sick-1.h1.hosts.c.example.org.", dns.TypeTXT,
		[]dns.RR{test.TXT(`sick-1.h1.hosts.c.example.org. 30 IN TXT "service=web.shop" "id=e1e1e1e1e1e1" "image=img:sick-1" "health=unhealthy"`)}),
	answer("starting container present under hosts", "boot-1.h1.hosts.c.example.org.", dns.TypeA,
		[]dns.RR{test.A("boot-1.h1.hosts.c.example.org. 30 IN A 198.51.100.32")}),
	answer("paused container present under hosts", "nap-1.h1.hosts.c.example.org.", dns.TypeTXT,
		[]dns.RR{test.TXT(`nap-1.h1.hosts.c.example.org. 30 IN TXT "service=web.shop" "id=c1c1c1c1c1c1" "image=img:nap-1" "health=healthy"`)}),
	nxdomain("unknown container", "web-9.h1.hosts.c.example.org.", dns.TypeA),
	nxdomain("container on the wrong host", "web-1.h2.hosts.c.example.org.", dns.TypeA),
	nodata("container MX: NODATA", "web-1.h1.hosts.c.example.org.", dns.TypeMX),

	// <service>.Z: healthy instances only, across both hosts.
	answer("service A: healthy instances' addresses, each once, across two hosts", "web.shop.c.example.org.", dns.TypeA,
		[]dns.RR{test.A("web.shop.c.example.org. 30 IN A 192.0.2.10"), test.A("web.shop.c.example.org. 30 IN A 192.0.2.20")}),
	answer("service AAAA", "web.shop.c.example.org.", dns.TypeAAAA, []dns.RR{test.AAAA("web.shop.c.example.org. 30 IN AAAA 2001:db8::10")}),
	answer("service SRV: every healthy instance's port once, glue of both hosts", "web.shop.c.example.org.", dns.TypeSRV,
		webShopSRV, append(slices.Clone(h1Glue), h2Glue...)...),
	answer("service on a specific address: SRV target the container", "db.shop.c.example.org.", dns.TypeSRV,
		[]dns.RR{test.SRV("db.shop.c.example.org. 30 IN SRV 10 10 5432 db-1.h1.hosts.c.example.org.")},
		test.A("db-1.h1.hosts.c.example.org. 30 IN A 198.51.100.7")),
	answer("service with a port on a specific address: its A", "db.shop.c.example.org.", dns.TypeA,
		[]dns.RR{test.A("db.shop.c.example.org. 30 IN A 198.51.100.7")}),
	nodata("service AAAA where only A exists: NODATA", "db.shop.c.example.org.", dns.TypeAAAA),
	answer("service with two ports: two SRV, glue once", "cache.c.example.org.", dns.TypeSRV,
		[]dns.RR{test.SRV("cache.c.example.org. 30 IN SRV 10 10 6379 h2.hosts.c.example.org."),
			test.SRV("cache.c.example.org. 30 IN SRV 10 10 9999 h2.hosts.c.example.org.")}, h2Glue...),
	nodata("service NS: NODATA, no unrelated additional records", "web.shop.c.example.org.", dns.TypeNS),

	// _<P>._<proto>.<service>.Z and _<name>._<proto>.<service>.Z
	answer("service by container port", "_80._tcp.web.shop.c.example.org.", dns.TypeSRV,
		renamed(webShopSRV, "_80._tcp.web.shop.c.example.org."), append(slices.Clone(h1Glue), h2Glue...)...),
	answer("service by port name", "_http._tcp.web.shop.c.example.org.", dns.TypeSRV,
		renamed(webShopSRV, "_http._tcp.web.shop.c.example.org."), append(slices.Clone(h1Glue), h2Glue...)...),
	answer("service by port, udp, unnamed port", "_9999._udp.cache.c.example.org.", dns.TypeSRV,
		[]dns.RR{test.SRV("_9999._udp.cache.c.example.org. 30 IN SRV 10 10 9999 h2.hosts.c.example.org.")}, h2Glue...),
	answer("service by port name, redis", "_redis._tcp.cache.c.example.org.", dns.TypeSRV,
		[]dns.RR{test.SRV("_redis._tcp.cache.c.example.org. 30 IN SRV 10 10 6379 h2.hosts.c.example.org.")}, h2Glue...),
	nxdomain("the host port is not the container port", "_8080._tcp.web.shop.c.example.org.", dns.TypeSRV),
	nxdomain("port 80 over udp is not published", "_80._udp.web.shop.c.example.org.", dns.TypeSRV),
	nxdomain("unknown port name", "_https._tcp.web.shop.c.example.org.", dns.TypeSRV),

	// DNS-SD (RFC 6763).
	answer("DNS-SD service types in use", "_services._dns-sd._udp.c.example.org.", dns.TypePTR, []dns.RR{
		test.PTR("_services._dns-sd._udp.c.example.org. 30 IN PTR _http._tcp.c.example.org."),
		test.PTR("_services._dns-sd._udp.c.example.org. 30 IN PTR _postgresql._tcp.c.example.org."),
		test.PTR("_services._dns-sd._udp.c.example.org. 30 IN PTR _redis._tcp.c.example.org.")}),
	answer("DNS-SD instances: healthy only", "_http._tcp.c.example.org.", dns.TypePTR, []dns.RR{
		test.PTR(`_http._tcp.c.example.org. 30 IN PTR web-1\.h1._http._tcp.c.example.org.`),
		test.PTR(`_http._tcp.c.example.org. 30 IN PTR web-2\.h2._http._tcp.c.example.org.`)}),
	answer("DNS-SD instance SRV with glue", `web-1\.h1._http._tcp.c.example.org.`, dns.TypeSRV,
		[]dns.RR{test.SRV(`web-1\.h1._http._tcp.c.example.org. 30 IN SRV 1 5 32768 h1.hosts.c.example.org.`)}, h1Glue...),
	answer("DNS-SD instance TXT", `web-1\.h1._http._tcp.c.example.org.`, dns.TypeTXT,
		[]dns.RR{test.TXT(`web-1\.h1._http._tcp.c.example.org. 30 IN TXT "service=web.shop" "id=a1a1a1a1a1a1" "image=nginx:1.27" "health=healthy"`)}),
	answer("DNS-SD instance on a specific address", `db-1\.h1._postgresql._tcp.c.example.org.`, dns.TypeSRV,
		[]dns.RR{test.SRV(`db-1\.h1._postgresql._tcp.c.example.org. 30 IN SRV 10 10 5432 db-1.h1.hosts.c.example.org.`)},
		test.A("db-1.h1.hosts.c.example.org. 30 IN A 198.51.100.7")),
	nxdomain("no DNS-SD instance for an unhealthy container", `sick-1\.h1._http._tcp.c.example.org.`, dns.TypeSRV),
	nxdomain("no DNS-SD instance for a paused container", `nap-1\.h1._http._tcp.c.example.org.`, dns.TypeTXT),
	nxdomain("the instance label is one label, not two", "web-1.h1._http._tcp.c.example.org.", dns.TypeSRV),

	// Empty non-terminals: NODATA with the SOA.
	nodata("ENT shop.Z", "shop.c.example.org.", dns.TypeA),
	nodata("ENT hosts.Z", "hosts.c.example.org.", dns.TypeA),
	nodata("ENT _tcp.web.shop.Z", "_tcp.web.shop.c.example.org.", dns.TypeSRV),
	nodata("ENT _tcp.Z", "_tcp.c.example.org.", dns.TypePTR),
	nodata("ENT _dns-sd._udp.Z", "_dns-sd._udp.c.example.org.", dns.TypePTR),

	// NXDOMAIN with the SOA.
	nxdomain("unknown name", "nope.c.example.org.", dns.TypeA),
	nxdomain("below an existing name", "x.web.shop.c.example.org.", dns.TypeA),
	nxdomain("unknown service type", "_ftp._tcp.c.example.org.", dns.TypePTR),

	// Case-insensitive names.
	answer("upper-case query", "WEB.Shop.C.Example.ORG.", dns.TypeA,
		[]dns.RR{test.A("web.shop.c.example.org. 30 IN A 192.0.2.10"), test.A("web.shop.c.example.org. 30 IN A 192.0.2.20")}),
	answer("upper-case DNS-SD instance", `WEB-1\.H1._HTTP._TCP.c.example.org.`, dns.TypeSRV,
		[]dns.RR{test.SRV(`web-1\.h1._http._tcp.c.example.org. 30 IN SRV 1 5 32768 h1.hosts.c.example.org.`)}, h1Glue...),

	// Not ours.
	{desc: "name outside the zone goes to next", Case: test.Case{Qname: "example.com.", Qtype: dns.TypeA}, next: true},
	{desc: "parent of the zone goes to next", Case: test.Case{Qname: "example.org.", Qtype: dns.TypeSOA}, next: true},
	{desc: "zone name as a suffix of a label goes to next", Case: test.Case{Qname: "xc.example.org.", Qtype: dns.TypeA}, next: true},
	{desc: "class CHAOS goes to next", Case: test.Case{Qname: "web.shop.c.example.org.", Qtype: dns.TypeTXT}, class: dns.ClassCHAOS, next: true},
}

// TestServeDNS proves every row of the README's names and answers (README.md#names-and-answers) on the fixture
// zone, plus the negative answers and what goes to the next plugin.
func TestServeDNS(t *testing.T) {
	t.Parallel()
	b := newTestBerth(t)
	for _, tc := range serveCases {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			runCase(t, b, tc)
		})
	}
}

// TestServeDNSFallthrough proves fallthrough sends names that do not exist
// to the next plugin but still answers names that exist, empty
// non-terminals included, and is limited to the zones it lists.
func TestServeDNSFallthrough(t *testing.T) {
	t.Parallel()
	b := newTestBerth(t)
	b.Fall = fall.Root
	cases := []berthCase{
		{desc: "NXDOMAIN name falls through", Case: test.Case{Qname: "nope.c.example.org.", Qtype: dns.TypeA}, next: true},
		{desc: "NXDOMAIN instance falls through", Case: test.Case{Qname: `sick-1\.h1._http._tcp.c.example.org.`, Qtype: dns.TypeSRV}, next: true},
		answer("existing name is answered", "web.shop.c.example.org.", dns.TypeAAAA,
			[]dns.RR{test.AAAA("web.shop.c.example.org. 30 IN AAAA 2001:db8::10")}),
		nodata("existing name without the type is answered NODATA", "h2.hosts.c.example.org.", dns.TypeAAAA),
		nodata("ENT is answered NODATA", "shop.c.example.org.", dns.TypeA),
		{desc: "outside the zone goes to next anyway", Case: test.Case{Qname: "example.com.", Qtype: dns.TypeA}, next: true},
	}
	for _, tc := range cases {
		t.Run(tc.desc, func(t *testing.T) { runCase(t, b, tc) })
	}

	limited := newTestBerth(t)
	limited.Fall.SetZonesFromArgs([]string{"other.example.net."})
	runCase(t, limited, nxdomain("fallthrough for another zone only: NXDOMAIN here", "nope.c.example.org.", dns.TypeA))
	limited.Fall.SetZonesFromArgs([]string{"sub.c.example.org."})
	runCase(t, limited, berthCase{desc: "fallthrough for a subdomain", Case: test.Case{Qname: "x.sub.c.example.org.", Qtype: dns.TypeA}, next: true})
	runCase(t, limited, nxdomain("outside the fallthrough subdomain", "nope.c.example.org.", dns.TypeA))
}

// TestServeDNSNotLoaded proves a zone answers SERVFAIL (and does not
// deny names) until its first load from Consul, and Ready says so.
func TestServeDNSNotLoaded(t *testing.T) {
	t.Parallel()
	z := newTestZone(nil)
	z.put("h1", fixtureHosts()["h1"])
	probe := &nextProbe{}
	b := &Berth{Next: probe, zones: map[string]*Zone{testOrigin: z}, names: plugin.Zones{testOrigin}, Fall: fall.Root}
	if b.Ready() {
		t.Error("Ready() before the first load")
	}
	for _, qname := range []string{"web.shop.c.example.org.", "nope.c.example.org.", testOrigin} {
		rec := dnstest.NewRecorder(&test.ResponseWriter{})
		m := new(dns.Msg)
		m.SetQuestion(qname, dns.TypeA)
		rcode, err := b.ServeDNS(context.Background(), rec, m)
		if err != nil || rcode != dns.RcodeServerFailure {
			t.Errorf("%s before the first load: rcode %s, err %v; want SERVFAIL", qname, dns.RcodeToString[rcode], err)
		}
		if probe.called.Load() {
			t.Errorf("%s before the first load went to next", qname)
		}
		if rec.Msg != nil && rec.Msg.Rcode == dns.RcodeNameError {
			t.Errorf("%s before the first load: NXDOMAIN written", qname)
		}
	}
	z.MarkLoaded()
	if !b.Ready() {
		t.Error("not Ready() after the first load")
	}
	runCase(t, b, answer("after the first load", "web.shop.c.example.org.", dns.TypeAAAA,
		[]dns.RR{test.AAAA("web.shop.c.example.org. 30 IN AAAA 2001:db8::10")}))
}

// TestServeDNSLongServiceTXT proves a container whose service name is valid
// (at most 253 octets) but too long to publish under the zone still gets a
// TXT answer that packs: every TXT string must fit in 255 octets.
func TestServeDNSLongServiceTXT(t *testing.T) {
	t.Parallel()
	svc := labelsOf(250, 's')
	if err := record.ValidService(svc); err != nil {
		t.Fatalf("fixture: %v", err)
	}
	var log skipLog
	z := newTestZone(log.fn)
	z.put("h1", mkData(mkHost("h1", "192.0.2.10"), mkCtr("a1", "long", svc, "none", mkPort(80, "tcp", "http", "192.0.2.10", 80))))
	z.MarkLoaded()
	b := &Berth{Next: test.NextHandler(dns.RcodeRefused, nil), zones: map[string]*Zone{testOrigin: z}, names: plugin.Zones{testOrigin}}
	if !log.has("too_long", svc+"."+testOrigin) {
		t.Errorf("reported %v, want too_long for the service name", log.all())
	}
	for _, qtype := range []uint16{dns.TypeTXT, dns.TypeANY} {
		rec := dnstest.NewRecorder(&test.ResponseWriter{})
		m := new(dns.Msg)
		m.SetQuestion("long.h1.hosts.c.example.org.", qtype)
		if _, err := b.ServeDNS(context.Background(), rec, m); err != nil || rec.Msg == nil {
			t.Fatalf("%s: no answer: %v", dns.TypeToString[qtype], err)
		}
		if _, err := rec.Msg.Pack(); err != nil {
			t.Errorf("%s long.h1.hosts: response does not pack: %v", dns.TypeToString[qtype], err)
		}
		for _, rr := range rec.Msg.Answer {
			if txt, ok := rr.(*dns.TXT); ok {
				for _, s := range txt.Txt {
					if len(s) > 255 {
						t.Errorf("TXT string of %d octets: %.40q...", len(s), s)
					}
				}
			}
		}
	}
	// A zone transfer must pack too.
	_, rrs := z.snapshot()
	for _, rr := range rrs {
		buf := make([]byte, dns.MaxMsgSize)
		if _, err := dns.PackRR(rr, buf, 0, nil, false); err != nil {
			t.Errorf("record in the zone does not pack: %v: %.80s", err, rr)
		}
	}
}

// TestServeDNSMultipleZones proves the longest matching zone answers when
// one server block serves a zone and a zone below it.
func TestServeDNSMultipleZones(t *testing.T) {
	t.Parallel()
	outer := newTestZone(nil)
	outer.MarkLoaded()
	inner := NewZone("sub.c.example.org.", 10, nil, nil)
	inner.put("h1", shopHost("h1", "192.0.2.99", "a1", "w", "web", 99))
	inner.MarkLoaded()
	b := &Berth{Next: test.NextHandler(dns.RcodeRefused, nil),
		zones: map[string]*Zone{testOrigin: outer, "sub.c.example.org.": inner},
		names: plugin.Zones{testOrigin, "sub.c.example.org."}}
	runCase(t, b, answer("inner zone answers its names", "web.sub.c.example.org.", dns.TypeA,
		[]dns.RR{test.A("web.sub.c.example.org. 10 IN A 192.0.2.99")}))
	c := nxdomain("outer zone answers its own", "web.c.example.org.", dns.TypeA)
	runCase(t, b, c)
	inSOA := berthCase{desc: "inner NXDOMAIN carries the inner SOA", Case: test.Case{Qname: "nope.sub.c.example.org.", Qtype: dns.TypeA,
		Rcode: dns.RcodeNameError, Ns: []dns.RR{test.SOA("sub.c.example.org. 10 IN SOA ns.dns.sub.c.example.org. hostmaster.sub.c.example.org. 1 60 30 604800 10")}}}
	runCase(t, b, inSOA)
	if !strings.HasSuffix(inner.SOA().Ns, "sub.c.example.org.") {
		t.Errorf("inner SOA %v", inner.SOA())
	}
}

// TestServeDNSRefusesTransfer proves an AXFR or IXFR query that reaches the
// plugin (the transfer plugin did not take it: not allowed) is refused,
// neither answered with zone data nor passed on.
func TestServeDNSRefusesTransfer(t *testing.T) {
	t.Parallel()
	b := newTestBerth(t)
	for _, qtype := range []uint16{dns.TypeAXFR, dns.TypeIXFR} {
		probe := &nextProbe{}
		bb := *b
		bb.Next = probe
		rec := dnstest.NewRecorder(&test.ResponseWriter{})
		m := new(dns.Msg)
		m.SetQuestion(testOrigin, qtype)
		rcode, err := bb.ServeDNS(context.Background(), rec, m)
		if err != nil || rcode != dns.RcodeRefused || probe.called.Load() {
			t.Errorf("%s: rcode %s err %v next called %v; want REFUSED here", dns.TypeToString[qtype], dns.RcodeToString[rcode], err, probe.called.Load())
		}
		if rec.Msg != nil && len(rec.Msg.Answer) > 0 {
			t.Errorf("%s: zone data written: %v", dns.TypeToString[qtype], rec.Msg)
		}
	}
}

// TestServeDNSNonQueryOpcodes proves a NOTIFY for a berth zone is refused
// (the zone has no primary to fetch from) and an UPDATE not implemented:
// neither is answered as a query, with zone data, nor passed on. A NOTIFY
// for a name outside the zones goes to the next plugin.
func TestServeDNSNonQueryOpcodes(t *testing.T) {
	t.Parallel()
	b := newTestBerth(t)
	for _, c := range []struct {
		opcode int
		qname  string
		rcode  int
		next   bool
	}{
		{dns.OpcodeNotify, testOrigin, dns.RcodeRefused, false},
		{dns.OpcodeNotify, "web.shop." + testOrigin, dns.RcodeRefused, false},
		{dns.OpcodeUpdate, testOrigin, dns.RcodeNotImplemented, false},
		{dns.OpcodeNotify, "example.net.", dns.RcodeRefused, true},
	} {
		probe := &nextProbe{}
		bb := *b
		bb.Next = probe
		rec := dnstest.NewRecorder(&test.ResponseWriter{})
		m := new(dns.Msg)
		m.SetQuestion(c.qname, dns.TypeSOA)
		m.Opcode = c.opcode
		rcode, err := bb.ServeDNS(context.Background(), rec, m)
		op := dns.OpcodeToString[c.opcode] + " " + c.qname
		if probe.called.Load() != c.next {
			t.Errorf("%s: next plugin called %v, want %v", op, probe.called.Load(), c.next)
		}
		if c.next {
			continue
		}
		if err != nil || rcode != c.rcode {
			t.Errorf("%s: rcode %s err %v, want %s", op, dns.RcodeToString[rcode], err, dns.RcodeToString[c.rcode])
		}
		if rec.Msg != nil {
			t.Errorf("%s: answered as a query: %v", op, rec.Msg)
		}
	}
}

// TestMatch proves the handler's allocation-free zone match picks the same
// zone as CoreDNS's plugin.Zones.Matches, escaped dots included.
func TestMatch(t *testing.T) {
	t.Parallel()
	for _, origins := range [][]string{
		{testOrigin, "sub.c.example.org."},
		{"example.org.", testOrigin},
		{"."},
		{".", testOrigin},
	} {
		b := &Berth{names: origins}
		for _, qname := range []string{
			testOrigin, "web.c.example.org.", "a.b.sub.c.example.org.", "sub.c.example.org.",
			`a\.c.example.org.`, `a\\.c.example.org.`, `a\\\.c.example.org.`, `\.c.example.org.`,
			"xc.example.org.", "c.example.org.evil.", "example.org.", "org.", ".", "c.example.org.c.example.org.",
		} {
			want := plugin.Zones(origins).Matches(qname)
			if got := b.match(qname); got != want {
				t.Errorf("zones %v, %q: match %q, plugin.Zones.Matches %q", origins, qname, got, want)
			}
		}
	}
}

// TestServeDNSNegativeSOAShared proves that the SOA slice every negative
// answer shares cannot be changed through a reply: it has no spare capacity,
// so a later plugin appending to the authority section gets its own copy.
func TestServeDNSNegativeSOAShared(t *testing.T) {
	t.Parallel()
	b := newTestBerth(t)
	for _, q := range []string{"nope." + testOrigin, "web.shop." + testOrigin} { // NXDOMAIN, NODATA
		rec := dnstest.NewRecorder(&test.ResponseWriter{})
		m := new(dns.Msg)
		m.SetQuestion(q, dns.TypeMX)
		if _, err := b.ServeDNS(context.Background(), rec, m); err != nil || rec.Msg == nil {
			t.Fatalf("%s: no reply: %v", q, err)
		}
		if len(rec.Msg.Ns) != 1 || rec.Msg.Ns[0].Header().Rrtype != dns.TypeSOA || cap(rec.Msg.Ns) != 1 {
			t.Errorf("%s: authority section %v (cap %d), want the SOA alone, capacity 1", q, rec.Msg.Ns, cap(rec.Msg.Ns))
		}
	}
}
