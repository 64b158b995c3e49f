package berth_test

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/miekg/dns"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
)

// Issue 21 rows 2, 6 and 7 against a real Consul agent and the built
// CoreDNS: names the zone owns, the bytes of TXT strings, and aliases that
// stay with their service.

// Waits, each from a bound of the product with its margin:
const (
	// claimsLoaded: CoreDNS's first load follows Consul's first answer, or
	// a retry after at most watchBackoff's cap (8 s, plugin/watch.go);
	// twice that for a 2-core machine shared by five builds.
	claimsLoaded = 16 * time.Second
	// claimsChange: a change reaches the answers after one blocking-query
	// return and one host read, both rate-limited to 20 a second
	// (plugin/index.go), and a policy change after at most one second
	// (plugin/policy.go's limiter); 10 s is ten times the slower bound.
	claimsChange = 10 * time.Second
)

// claimsHost writes host's document and containers in one transaction, as
// an exporter does (rev bumped so the plugin reads the host again).
func claimsHost(t *testing.T, kv *api.KV, host, addr string, rev uint64, ctrs ...record.Container) {
	t.Helper()
	a := netip.MustParseAddr(addr)
	var ops api.KVTxnOps
	for _, c := range ctrs {
		ops = append(ops, &api.KVTxnOp{Verb: api.KVSet, Key: record.ContainerKey("berth", host, c.ID), Value: mustJSON(t, c)})
	}
	ops = append(ops, &api.KVTxnOp{Verb: api.KVSet, Key: record.HostKey("berth", host),
		Value: mustJSON(t, record.Host{V: 1, Name: host, Addrs: []netip.Addr{a}, Rev: rev})})
	if ok, resp, _, err := kv.Txn(ops, nil); err != nil || !ok {
		t.Fatalf("txn for %s: %v %+v", host, err, resp)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// claimsCtr is a healthy container of service on addr:hostPort (port 53/udp).
func claimsCtr(n int, name, service, addr string, hostPort int, aliases ...string) record.Container {
	return record.Container{V: 1, ID: fmt.Sprintf("%064x", 0xc1a100+n), Name: name, Service: service, Image: "img",
		Health: record.HealthNone, Priority: 10, Weight: 10, Aliases: aliases,
		Ports: []record.Port{{Port: 53, Proto: "udp", Name: "domain", Addr: netip.MustParseAddr(addr), HostPort: hostPort}}}
}

// answers is a condition: name's answer of qtype from addr is want (as
// "<port> <target>" for SRV, the address for A), in any order.
func answers(addr, name string, qtype uint16, want ...string) func() error {
	return func() error {
		r, err := testenv.Exchange("tcp", addr, name, qtype, 0)
		if err != nil {
			return err
		}
		var got []string
		for _, rr := range r.Answer {
			switch rr := rr.(type) {
			case *dns.SRV:
				got = append(got, strconv.Itoa(int(rr.Port))+" "+rr.Target)
			case *dns.A:
				got = append(got, rr.A.String())
			}
		}
		slices.Sort(got)
		want = slices.Sorted(slices.Values(want))
		if !slices.Equal(got, want) {
			return fmt.Errorf("%s %s: %q, want %q", name, dns.TypeToString[qtype], got, want)
		}
		return nil
	}
}

// TestE2EZoneOwnedNamesUnclaimable proves no service or alias can claim a
// name the zone owns, whether or not the Corefile gives it addresses: the
// default ns.dns.<zone> without an ns line, `ns ns1.<zone>` without
// addresses, and the SOA's primary name (the first ns line's). Each claim
// is left out, counted as a conflict and logged once, while a host's other
// names are served.
func TestE2EZoneOwnedNamesUnclaimable(t *testing.T) {
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	kv := consul.Client().KV()
	const evil = "198.51.100.66"
	ctrs := []record.Container{
		claimsCtr(1, "a", "ns.dns", evil, 5301),
		claimsCtr(2, "b", "ns1", evil, 5302),
		claimsCtr(3, "c", "web", evil, 5303, "primary"),
	}
	claimsHost(t, kv, "evil", evil, 1, ctrs...)
	for _, tc := range []struct {
		name, nsLines, claimed string
	}{
		{"no ns line", "", "ns.dns." + e2eZone},
		{"ns without addresses", "ns ns1." + e2eZone, "ns1." + e2eZone},
		{"the SOA's primary", "ns primary." + e2eZone + "\n        ns ns2.example.net", "primary." + e2eZone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			metrics := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
			corefile := e2eZone + " {\n    berth {\n        " + tc.nsLines + "\n    }\n    prometheus " + metrics + "\n}\n"
			dnsd := testenv.StartCoreDNS(t, corefile, "CONSUL_HTTP_ADDR="+consul.HTTP)
			testenv.Eventually(t, claimsLoaded, "web is served", answers(dnsd.Addr, "web."+e2eZone, dns.TypeSRV, "5303 evil.hosts."+e2eZone))
			if tc.name == "the SOA's primary" {
				if soa := exchange(t, "udp", dnsd.Addr, e2eZone, dns.TypeSOA, 0); len(soa.Answer) != 1 || soa.Answer[0].(*dns.SOA).Ns != tc.claimed {
					t.Fatalf("SOA %v, want primary %s", soa.Answer, tc.claimed)
				}
			}
			for _, q := range []struct {
				name  string
				qtype uint16
			}{{tc.claimed, dns.TypeA}, {tc.claimed, dns.TypeSRV}, {"_53._udp." + tc.claimed, dns.TypeSRV}, {"_domain._udp." + tc.claimed, dns.TypeSRV}} {
				if err := answers(dnsd.Addr, q.name, q.qtype)(); err != nil {
					t.Errorf("a claim on a name the zone owns is served: %v", err)
				}
			}
			// Another change of the host: the claim is still refused, and
			// not logged again.
			claimsHost(t, kv, "evil", evil, 2, append(ctrs, claimsCtr(4, "d", "later", evil, 5304))...)
			testenv.Eventually(t, claimsChange, "the host's change is served", answers(dnsd.Addr, "later."+e2eZone, dns.TypeSRV, "5304 evil.hosts."+e2eZone))
			if err := answers(dnsd.Addr, tc.claimed, dns.TypeA)(); err != nil {
				t.Errorf("after a change: %v", err)
			}
			if n := strings.Count(dnsd.Output(), "not publishing "+tc.claimed+":"); n != 1 {
				t.Errorf("the refused claim on %s was logged %d times, want once:\n%s", tc.claimed, n, dnsd.Output())
			}
			if v := metricValue(t, "http://"+metrics+"/metrics", `coredns_berth_invalid_records_total{reason="conflict"}`); v < 1 {
				t.Errorf(`invalid_records_total{reason="conflict"} = %v, want the refused claim counted`, v)
			}
		})
	}
	claimsHost(t, kv, "evil", evil, 3) // the subtests' servers are gone; keep the agent's log quiet
}

// metricValue is one sample of the Prometheus text at url (0 if absent).
func metricValue(t *testing.T, url, sample string) float64 {
	t.Helper()
	for _, line := range strings.Split(httpBody(t, url), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	return 0
}

// txtEscapes are free-text fields with the escapes miekg/dns decodes when
// it packs a TXT string (issue 21, row 6): on c3f5282 "prod\044admin"
// went out as "prod,admin" and \027, \013\010 and \000 as ESC, CR LF, NUL.
var txtEscapes = struct{ image, tag string }{`app\027x\013\010\000:1`, `prod\044admin`}

// txtWant are the TXT strings of c, as its document's bytes.
func txtWant(c record.Container) []string {
	return []string{"service=" + c.Service, "id=" + c.ShortID(), "image=" + c.Image, "health=" + c.Health, record.TagsTXT(c.Tags)}
}

// txtOnWire is a condition: the TXT answer for name from addr carries want
// on the wire.
func txtOnWire(addr, name string, want []string) func() error {
	return func() error {
		r, err := testenv.Exchange("udp", addr, name, dns.TypeTXT, 0)
		if err != nil {
			return err
		}
		if len(r.Answer) != 1 {
			return fmt.Errorf("TXT %s: %v, want one record", name, r.Answer)
		}
		got, err := testenv.TXTWire(r.Answer[0].(*dns.TXT))
		if err != nil {
			return err
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("TXT %s on the wire %q, want the document's bytes %q", name, got, want)
		}
		return nil
	}
}

// TestE2ETXTIsTheDocumentsBytes proves a TXT string carries exactly the
// bytes of its document's field, as `dig +short` shows them: the escapes
// miekg/dns would decode reach a client as the document wrote them.
func TestE2ETXTIsTheDocumentsBytes(t *testing.T) {
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	c := claimsCtr(1, "esc", "esc", "192.0.2.10", 5353)
	c.Image, c.Tags = txtEscapes.image, []string{txtEscapes.tag}
	claimsHost(t, consul.Client().KV(), "host1", "192.0.2.10", 1, c)
	dnsd := testenv.StartCoreDNS(t, example(t, "minimal.Corefile"), "CONSUL_HTTP_ADDR="+consul.HTTP)
	testenv.Eventually(t, claimsLoaded, "the container's TXT carries its document's bytes",
		txtOnWire(dnsd.Addr, "esc.host1.hosts."+e2eZone, txtWant(c)))
	if err := txtOnWire(dnsd.Addr, `esc\.host1._domain._udp.`+e2eZone, txtWant(c))(); err != nil {
		t.Error(err)
	}
}

// TestHiddenPrimaryTXTBytes proves a BIND secondary stores and serves the
// same bytes as berth: the transfer carries the document's text.
func TestHiddenPrimaryTXTBytes(t *testing.T) {
	consul, primary, bind := hiddenPrimary(t)
	c := claimsCtr(1, "esc", "esc", "192.0.2.30", 5353)
	c.Image, c.Tags = txtEscapes.image, []string{txtEscapes.tag}
	claimsHost(t, consul.Client().KV(), "host3", "192.0.2.30", 1, c)
	name := "esc.host3.hosts." + e2eZone
	testenv.Eventually(t, claimsChange, "berth serves the TXT", txtOnWire(primary.Addr, name, txtWant(c)))
	// The secondary hears of it by NOTIFY and an IXFR (TestHiddenPrimaryBINDSecondary).
	testenv.Eventually(t, claimsChange, "the secondary serves the same bytes", txtOnWire(bind.Addr, name, txtWant(c)))
}

// TestE2EAliasStaysWithItsService proves an alias served for one service
// does not move to another that claims it later, whatever their names'
// order, as an alias or as its own service name; that every server agrees,
// before and after a restart (the claim's age is its document's
// CreateIndex in Consul, the data's, not the server's); and that the
// policy's alias_of gives an alias to one service only.
func TestE2EAliasStaysWithItsService(t *testing.T) {
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	kv := consul.Client().KV()
	testenv.PutJSON(t, kv, record.PolicyKey("berth"), record.Policy{V: 1, Default: record.PolicyDeny,
		Rules: []record.PolicyRule{{Service: "*", Hosts: []string{"*"}}}})
	claimsHost(t, kv, "host1", "192.0.2.10", 1, claimsCtr(1, "portal-1", "web", "192.0.2.10", 1001, "portal"))
	dnsd := testenv.StartCoreDNS(t, example(t, "minimal.Corefile"), "CONSUL_HTTP_ADDR="+consul.HTTP)
	holder := "1001 host1.hosts." + e2eZone
	testenv.Eventually(t, claimsLoaded, "portal is web's", answers(dnsd.Addr, "portal."+e2eZone, dns.TypeSRV, holder))

	check := func(addr, when string) {
		t.Helper()
		for _, name := range []string{"portal.", "_53._udp.portal.", "_domain._udp.portal."} {
			if err := answers(addr, name+e2eZone, dns.TypeSRV, holder)(); err != nil {
				t.Errorf("%s: %v", when, err)
			}
		}
	}
	// Newcomers whose service names sort first: one with the alias (on
	// c3f5282 it took portal), then one with the alias as its own service
	// name.
	claimsHost(t, kv, "host2", "192.0.2.20", 1, claimsCtr(2, "a-1", "aaa", "192.0.2.20", 2002, "portal"))
	testenv.Eventually(t, claimsChange, "the newcomer's own service is served", answers(dnsd.Addr, "aaa."+e2eZone, dns.TypeSRV, "2002 host2.hosts."+e2eZone))
	check(dnsd.Addr, "after the alias's newcomer")
	claimsHost(t, kv, "host3", "192.0.2.30", 1, claimsCtr(3, "p-1", "portal", "192.0.2.30", 3003))
	testenv.Eventually(t, claimsChange, "host3's container is served under its host", answers(dnsd.Addr, "p-1.host3.hosts."+e2eZone, dns.TypeSRV, "3003 host3.hosts."+e2eZone))
	check(dnsd.Addr, "after the service's newcomer")
	second := testenv.StartCoreDNS(t, example(t, "minimal.Corefile"), "CONSUL_HTTP_ADDR="+consul.HTTP)
	testenv.Eventually(t, claimsLoaded, "a second server loads", answers(second.Addr, "aaa."+e2eZone, dns.TypeSRV, "2002 host2.hosts."+e2eZone))
	check(second.Addr, "a second server")
	dnsd.Restart(t)
	testenv.Eventually(t, claimsLoaded, "the restarted server loads", answers(dnsd.Addr, "aaa."+e2eZone, dns.TypeSRV, "2002 host2.hosts."+e2eZone))
	check(dnsd.Addr, "after a restart")

	// The holder leaves: the oldest remaining claim (aaa's alias) holds.
	claimsHost(t, kv, "host1", "192.0.2.10", 2)
	if _, err := kv.Delete(record.ContainerKey("berth", "host1", claimsCtr(1, "", "", "192.0.2.10", 1).ID), nil); err != nil {
		t.Fatal(err)
	}
	claimsHost(t, kv, "host1", "192.0.2.10", 3)
	testenv.Eventually(t, claimsChange, "portal goes to the oldest claim left", answers(dnsd.Addr, "portal."+e2eZone, dns.TypeSRV, "2002 host2.hosts."+e2eZone))

	// The policy gives portal to web alone: aaa's alias is refused, and so
	// is host3's service of that name.
	testenv.PutJSON(t, kv, record.PolicyKey("berth"), record.Policy{V: 1, Default: record.PolicyDeny,
		Rules: []record.PolicyRule{{Service: "*", Hosts: []string{"*"}}, {Service: "portal", Hosts: []string{"*"}, AliasOf: "web"}}})
	testenv.Eventually(t, claimsChange, "portal is no one's but web's", answers(dnsd.Addr, "portal."+e2eZone, dns.TypeSRV))
	claimsHost(t, kv, "host1", "192.0.2.10", 4, claimsCtr(5, "portal-2", "web", "192.0.2.10", 1005, "portal"))
	testenv.Eventually(t, claimsChange, "web's alias is served again", answers(dnsd.Addr, "portal."+e2eZone, dns.TypeSRV, "1005 host1.hosts."+e2eZone))
}
