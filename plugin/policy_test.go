package berth

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
	"github.com/hashicorp/consul/api"
	"github.com/miekg/dns"
)

// TestZoneOwnership proves the ownership policy decides which host's claim
// on a service name is served: an impostor's claim (even at priority 0) is
// left out and reported once while the owner's records stay; the
// impostor's container is still served under its own host; a label's
// priority and weight are held within the rule's bounds.
func TestZoneOwnership(t *testing.T) {
	t.Parallel()
	var log skipLog
	z := newTestZone(log.fn)
	minPrio, maxWeight := 10, 20
	z.policy = &record.Policy{V: 1, Default: record.PolicyAllow, Rules: []record.PolicyRule{
		{Service: "web.shop", Hosts: []string{"h1"}, MinPriority: &minPrio, MaxWeight: &maxWeight},
	}}
	owner := shopHost("h1", "192.0.2.10", "a1", "web-1", "web.shop", 8080)
	owner.Containers[0].Weight = 100 // over the rule's bound
	impostor := shopHost("h9", "192.0.2.99", "f9", "evil", "web.shop", 6666)
	impostor.Containers[0].Priority = 0
	z.put("h1", owner)
	z.put("h9", impostor)
	z.MarkLoaded()

	svc := "web.shop." + testOrigin
	if got, want := answerStrings(z, svc, dns.TypeSRV), rrStrings(svc+" 30 IN SRV 10 20 8080 h1.hosts.c.example.org."); !slices.Equal(got, want) {
		t.Errorf("SRV of the owned service %v, want only the owner's, weight held at 20: %v", got, want)
	}
	if got := answerStrings(z, "_http._tcp."+testOrigin, dns.TypePTR); len(got) != 1 {
		t.Errorf("DNS-SD list %v: the impostor's instance must not be browsable", got)
	}
	if got := answerStrings(z, "evil.h9.hosts."+testOrigin, dns.TypeSRV); len(got) != 1 {
		t.Errorf("the impostor's container under its own host: %v, want its SRV (that name is its host's)", got)
	}
	if !log.has("refused", svc) {
		t.Errorf("the refused claim was not reported: %v", log.all())
	}
	z.put("h9", impostor) // again: no second report while it holds
	if n := slices.Index(log.all(), "refused "+svc); n < 0 || slices.Index(log.all()[n+1:], "refused "+svc) >= 0 {
		t.Errorf("the refused claim was reported more than once: %v", log.all())
	}
	// A policy with the default deny refuses names no rule covers.
	z.policy = &record.Policy{V: 1, Default: record.PolicyDeny}
	z.put("h1", owner)
	if got := answerStrings(z, svc, dns.TypeSRV); len(got) != 0 {
		t.Errorf("default deny: SRV %v, want none", got)
	}
}

// TestWatchOwnershipPolicy proves the watcher follows the policy document
// in Consul: with none every claim is served; a policy written later takes
// the impostor out within a blocking read, with the serial at the policy's
// index; a policy that does not validate allows no claim (policy_valid 0)
// until a valid one is written; the policy gone, every claim is served
// again.
func TestWatchOwnershipPolicy(t *testing.T) {
	c := testenv.StartConsul(t, testenv.ConsulOptions{})
	kv := c.Client().KV()
	publish(t, kv, mkHost("h1", "192.0.2.10"), ctrOp(t, "h1", mkCtr("a1", "web-1", "web.shop", "none", mkPort(80, "tcp", "http", "192.0.2.10", 8080))))
	evil := mkCtr("f9", "evil", "web.shop", "none", mkPort(80, "tcp", "http", "192.0.2.99", 6666))
	evil.Priority = 0
	publish(t, kv, mkHost("h9", "192.0.2.99"), ctrOp(t, "h9", evil))
	w := startWatcher(t, kv, time.Hour)
	both := w.has("web.shop.c.example.org.", dns.TypeSRV,
		"web.shop.c.example.org. 30 IN SRV 10 10 8080 h1.hosts.c.example.org.",
		"web.shop.c.example.org. 30 IN SRV 0 10 6666 h9.hosts.c.example.org.")
	owner := w.has("web.shop.c.example.org.", dns.TypeSRV, "web.shop.c.example.org. 30 IN SRV 10 10 8080 h1.hosts.c.example.org.")
	testenv.Eventually(t, testenv.ZoneChangeWait, "no policy: every claim", both)

	putPolicy := func(doc string) uint64 {
		t.Helper()
		if _, err := kv.Put(&api.KVPair{Key: record.PolicyKey(kvPrefix), Value: []byte(doc)}, nil); err != nil {
			t.Fatal(err)
		}
		p, _, err := kv.Get(record.PolicyKey(kvPrefix), nil)
		if err != nil || p == nil {
			t.Fatalf("policy not written: %v", err)
		}
		return p.ModifyIndex
	}
	index := putPolicy(`{"v": 1, "default": "allow", "rules": [{"service": "web.shop", "hosts": ["h1"]}]}`)
	testenv.Eventually(t, testenv.ZoneChangeWait, "the policy takes the impostor out", owner)
	testenv.Eventually(t, testenv.ZoneChangeWait, "the serial is the policy's index", func() error {
		if s := w.zone.SOA().Serial; s != uint32(index) {
			return fmt.Errorf("serial %d, want %d", s, index)
		}
		return nil
	})

	// A document that does not validate allows no claim: the owner's goes
	// too, as on a server started under it (TestE2EInvalidPolicy), until a
	// valid one is written.
	before := testenv.MetricValue(invalidRecords.WithLabelValues("invalid"))
	putPolicy(`{"v": 1, "default": "sometimes"}`)
	testenv.Eventually(t, testenv.ZoneChangeWait, "the bad policy reported", func() error {
		if testenv.MetricValue(invalidRecords.WithLabelValues("invalid")) <= before {
			return fmt.Errorf("not counted")
		}
		return nil
	})
	testenv.Eventually(t, testenv.ZoneChangeWait, "the bad policy allows no claim", w.has("web.shop.c.example.org.", dns.TypeSRV))
	if v := testenv.MetricValue(policyValid.WithLabelValues(testOrigin)); v != 0 {
		t.Errorf("policy_valid %v under a policy that does not validate, want 0", v)
	}
	putPolicy(`{"v": 1, "default": "allow", "rules": [{"service": "web.shop", "hosts": ["h1"]}]}`)
	testenv.Eventually(t, testenv.ZoneChangeWait, "a valid policy again: the owner's claim", owner)
	if v := testenv.MetricValue(policyValid.WithLabelValues(testOrigin)); v != 1 {
		t.Errorf("policy_valid %v under a valid policy, want 1", v)
	}

	if _, err := kv.Delete(record.PolicyKey(kvPrefix), nil); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, testenv.ZoneChangeWait, "the policy gone: every claim again", both)
}

// TestWatchPolicyBeforeFirstLoad proves a zone is never served without its
// policy: the first load applies the policy already in Consul.
func TestWatchPolicyBeforeFirstLoad(t *testing.T) {
	c := testenv.StartConsul(t, testenv.ConsulOptions{})
	kv := c.Client().KV()
	doc, _ := json.Marshal(record.Policy{V: 1, Default: record.PolicyDeny, Rules: []record.PolicyRule{{Service: "web", Hosts: []string{"h1"}}}})
	if _, err := kv.Put(&api.KVPair{Key: record.PolicyKey(kvPrefix), Value: doc}, nil); err != nil {
		t.Fatal(err)
	}
	publish(t, kv, mkHost("h9", "192.0.2.99"), ctrOp(t, "h9", mkCtr("f9", "evil", "web", "none", mkPort(80, "tcp", "http", "192.0.2.99", 6666))))
	z := newTestZone(nil)
	wt := newWatcher(kv, kvPrefix, []*Zone{z}, time.Hour, func() {}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), testenv.ZoneStartWait)
	defer cancel()
	if _, err := wt.fullLoad(ctx, false); err != nil {
		t.Fatal(err)
	}
	if ans, _, _, _ := z.Lookup("web."+testOrigin, dns.TypeSRV); len(ans) != 0 {
		t.Errorf("first load served %v, which the policy refuses", ans)
	}
}

// TestZoneAddressClasses proves loopback, link-local, multicast and
// unspecified addresses are never served, from a host document or a port,
// each reported with its class; loopback is served only with
// allow_loopback, and link-local not even then.
func TestZoneAddressClasses(t *testing.T) {
	t.Parallel()
	hostile := func() *hostDocs {
		h := mkHost("h3", "192.0.2.30", "127.0.0.1", "::1", "169.254.169.254", "fe80::1")
		return mkData(h,
			mkCtr("c1", "meta", "meta", "none", mkPort(80, "tcp", "http", "169.254.169.254", 8500)),
			mkCtr("c2", "local", "local", "none", mkPort(80, "tcp", "http", "127.0.0.1", 8501)),
			mkCtr("c3", "multi", "multi", "none", mkPort(80, "tcp", "http", "224.0.0.1", 8502)),
			mkCtr("c4", "fine", "fine", "none", mkPort(80, "tcp", "http", "192.0.2.30", 8503)))
	}
	var log skipLog
	z := newTestZone(log.fn)
	z.put("h3", hostile())
	z.MarkLoaded()
	host := "h3.hosts." + testOrigin
	if got := answerStrings(z, host, dns.TypeA); !slices.Equal(got, rrStrings(host+" 30 IN A 192.0.2.30")) {
		t.Errorf("host A %v, want only 192.0.2.30", got)
	}
	if got := answerStrings(z, host, dns.TypeAAAA); len(got) != 0 {
		t.Errorf("host AAAA %v, want none (::1 and fe80::1 refused)", got)
	}
	for _, svc := range []string{"meta", "local", "multi"} {
		if got := answerStrings(z, svc+"."+testOrigin, dns.TypeSRV); len(got) != 0 {
			t.Errorf("%s SRV %v, want none: its only port is on a refused address", svc, got)
		}
	}
	if got := answerStrings(z, "fine."+testOrigin, dns.TypeSRV); len(got) != 1 {
		t.Errorf("fine SRV %v, want its port", got)
	}
	for _, want := range []string{"loopback_address " + host, "link_local_address " + host,
		"link_local_address meta.h3.hosts." + testOrigin, "loopback_address local.h3.hosts." + testOrigin,
		"multicast_address multi.h3.hosts." + testOrigin} {
		if !slices.Contains(log.all(), want) {
			t.Errorf("not reported: %q (reports: %v)", want, log.all())
		}
	}

	open := newTestZone(nil)
	open.allowLoopback = true
	open.put("h3", hostile())
	open.MarkLoaded()
	if got := answerStrings(open, host, dns.TypeA); len(got) != 2 {
		t.Errorf("allow_loopback: host A %v, want 192.0.2.30 and 127.0.0.1", got)
	}
	if got := answerStrings(open, "local."+testOrigin, dns.TypeSRV); len(got) != 1 {
		t.Errorf("allow_loopback: local SRV %v, want its loopback port", got)
	}
	if got := answerStrings(open, "meta."+testOrigin, dns.TypeSRV); len(got) != 0 {
		t.Errorf("allow_loopback: link-local still served: %v", got)
	}
}

// TestCheck proves Check reports what the zone would leave out, with the
// host and the reason: a refused claim, a loopback port, a duplicate name.
func TestCheck(t *testing.T) {
	t.Parallel()
	policy := &record.Policy{V: 1, Default: record.PolicyDeny, Rules: []record.PolicyRule{{Service: "web", Hosts: []string{"h1"}}}}
	h1, h2 := mkHost("h1", "192.0.2.10"), mkHost("h2", "192.0.2.20")
	containers := map[string][]*record.Container{
		"h1": {mkCtr("a1", "web-1", "web", "none", mkPort(80, "tcp", "http", "192.0.2.10", 1001)),
			mkCtr("a2", "web-1", "web", "none", mkPort(80, "tcp", "http", "192.0.2.10", 1002))},
		"h2": {mkCtr("b1", "web-2", "web", "none", mkPort(80, "tcp", "http", "127.0.0.1", 2001))},
	}
	got := Check(CheckZone{Origin: testOrigin, Policy: policy}, []CheckHost{{Host: h1, Containers: containers["h1"]}, {Host: h2, Containers: containers["h2"]}})
	var short []string
	for _, f := range got {
		short = append(short, f.Host+" "+f.Reason+" "+f.Name)
	}
	want := []string{
		"h1 duplicate web-1.h1.hosts." + testOrigin,
		"h2 loopback_address web-2.h2.hosts." + testOrigin,
		"h2 refused web." + testOrigin,
	}
	if !slices.Equal(short, want) {
		t.Errorf("Check = %v, want %v", short, want)
	}

	// Across hosts: h3's alias on the service h4 serves.
	h3, h4 := mkHost("h3", "192.0.2.30"), mkHost("h4", "192.0.2.40")
	alias := mkCtr("c3", "shop-1", "shop", "none", mkPort(80, "tcp", "http", "192.0.2.30", 3001))
	alias.Aliases = []string{"api"}
	got = Check(CheckZone{Origin: testOrigin}, []CheckHost{{Host: h3, Containers: []*record.Container{alias}},
		{Host: h4, Containers: []*record.Container{mkCtr("d4", "api-1", "api", "none", mkPort(80, "tcp", "http", "192.0.2.40", 4001))}}})
	if !slices.ContainsFunc(got, func(f Finding) bool {
		return f.Host == "h3" && f.Reason == "conflict" && f.Name == "api."+testOrigin
	}) {
		t.Errorf("Check across hosts = %+v, want h3's alias api in conflict", got)
	}
}

// TestZoneAliases proves an alias serves its service's own records under
// the extra name (addresses, SRV, by port number and name), not DNS-SD;
// that a name a service claims stays that service's (another host's alias
// of it is dropped and reported once), that aliases of two services go to
// the first by name, that the policy decides an alias as it does a
// service; and that an alias goes with its container.
func TestZoneAliases(t *testing.T) {
	t.Parallel()
	var log skipLog
	z := newTestZone(log.fn)
	web := shopHost("h1", "192.0.2.10", "a1", "web-1", "web.shop", 8080)
	web.Containers[0].Aliases = []string{"www.shop", "api"}
	z.put("h1", web)
	z.put("h2", shopHost("h2", "192.0.2.20", "b2", "api-1", "api", 9090)) // a service named like h1's alias
	z.MarkLoaded()

	for _, q := range []struct {
		name  string
		qtype uint16
		want  []string
	}{
		{"www.shop.", dns.TypeA, []string{"www.shop.c.example.org. 30 IN A 192.0.2.10"}},
		{"www.shop.", dns.TypeSRV, []string{"www.shop.c.example.org. 30 IN SRV 10 10 8080 h1.hosts.c.example.org."}},
		{"_80._tcp.www.shop.", dns.TypeSRV, []string{"_80._tcp.www.shop.c.example.org. 30 IN SRV 10 10 8080 h1.hosts.c.example.org."}},
		{"_http._tcp.www.shop.", dns.TypeSRV, []string{"_http._tcp.www.shop.c.example.org. 30 IN SRV 10 10 8080 h1.hosts.c.example.org."}},
		{"api.", dns.TypeSRV, []string{"api.c.example.org. 30 IN SRV 10 10 9090 h2.hosts.c.example.org."}}, // the service keeps its name
	} {
		if got := answerStrings(z, q.name+testOrigin, q.qtype); !slices.Equal(got, rrStrings(q.want...)) {
			t.Errorf("%s %s: %v, want %v", q.name, dns.TypeToString[q.qtype], got, q.want)
		}
	}
	if got := answerStrings(z, "_http._tcp."+testOrigin, dns.TypePTR); len(got) != 2 {
		t.Errorf("DNS-SD list %v: want one instance per container, none per alias", got)
	}
	if !log.has("conflict", "api."+testOrigin) {
		t.Errorf("the alias on another host's service not reported: %v", log.all())
	}

	// Aliases of two services on one name: the first service by name wins.
	other := shopHost("h3", "192.0.2.30", "c3", "shop-1", "shop-front", 7070)
	other.Containers[0].Aliases = []string{"www.shop"}
	z.put("h3", other)
	if got := answerStrings(z, "www.shop."+testOrigin, dns.TypeSRV); !slices.Equal(got, rrStrings("www.shop.c.example.org. 30 IN SRV 10 10 7070 h3.hosts.c.example.org.")) {
		t.Errorf("www.shop, alias of shop-front and web.shop: %v, want shop-front's alone", got)
	}
	z.put("h3", nil)
	if got := answerStrings(z, "www.shop."+testOrigin, dns.TypeSRV); !slices.Equal(got, rrStrings("www.shop.c.example.org. 30 IN SRV 10 10 8080 h1.hosts.c.example.org.")) {
		t.Errorf("www.shop after h3 left: %v, want web.shop's again", got)
	}

	// The policy decides an alias as a service.
	z.policy = &record.Policy{V: 1, Default: record.PolicyAllow, Rules: []record.PolicyRule{{Service: "www.shop", Hosts: []string{"h9"}}}}
	z.put("h1", web)
	if got := answerStrings(z, "www.shop."+testOrigin, dns.TypeSRV); len(got) != 0 {
		t.Errorf("an alias the policy gives to another host is served: %v", got)
	}
	if !log.has("refused", "www.shop."+testOrigin) {
		t.Errorf("the refused alias not reported: %v", log.all())
	}
	z.policy = record.OpenPolicy
	z.put("h1", nil)
	if exists(z, "www.shop."+testOrigin) {
		t.Error("the alias outlives its container")
	}
}

// TestZoneTags proves a container's tags are served in its TXT records (by
// host and DNS-SD instance), after its id, image and health.
func TestZoneTags(t *testing.T) {
	t.Parallel()
	z := newTestZone(nil)
	d := shopHost("h1", "192.0.2.10", "a1", "web-1", "web", 8080)
	d.Containers[0].Tags = []string{"prod", "eu"}
	z.put("h1", d)
	z.MarkLoaded()
	for _, name := range []string{"web-1.h1.hosts." + testOrigin, `web-1\.h1._http._tcp.` + testOrigin} {
		ans, _, _, _ := z.Lookup(name, dns.TypeTXT)
		if len(ans) != 1 || !slices.Equal(ans[0].(*dns.TXT).Txt, []string{"service=web", "id=a1a1a1a1a1a1", "image=img:web-1", "health=healthy", "tags=prod,eu"}) {
			t.Errorf("%s TXT %v, want the tags last", name, ans)
		}
	}
}

// TestZoneHostAddresses proves the policy's address rules: a host bound to
// ranges publishes no address outside them, as advertise address or port
// address (each left out, reported once as foreign_address), while its
// addresses inside them and an unbound host's are served as before.
func TestZoneHostAddresses(t *testing.T) {
	t.Parallel()
	var log skipLog
	z := newTestZone(log.fn)
	z.policy = &record.Policy{V: 1, Default: record.PolicyAllow, Addresses: []record.AddressRule{
		{Hosts: []string{"h1"}, CIDRs: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/28")}},
		{Hosts: []string{"h2"}, CIDRs: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}},
	}}
	z.put("h1", shopHost("h1", "192.0.2.10", "a1", "web-1", "web", 8080))
	// h2 advertises one of h1's addresses beside its own, and binds a port on
	// another of h1's: the proxy must not be turned toward h1.
	h2 := mkData(mkHost("h2", "198.51.100.20", "192.0.2.11"),
		mkCtr("b2", "web-2", "web", record.HealthHealthy, mkPort(80, "tcp", "http", "192.0.2.12", 9090)),
		mkCtr("c2", "api-2", "api", record.HealthHealthy, mkPort(80, "tcp", "http", "198.51.100.20", 9191)))
	z.put("h2", h2)
	z.put("h3", shopHost("h3", "203.0.113.30", "d3", "web-3", "web", 7070)) // no rule: unbound
	z.MarkLoaded()

	if got, want := answerStrings(z, "web."+testOrigin, dns.TypeSRV), rrStrings(
		"web.c.example.org. 30 IN SRV 10 10 8080 h1.hosts.c.example.org.",
		"web.c.example.org. 30 IN SRV 10 10 7070 h3.hosts.c.example.org."); !slices.Equal(got, want) {
		t.Errorf("web SRV %v, want h1's and h3's only: h2's port is on h1's address", got)
	}
	if got, want := answerStrings(z, "web."+testOrigin, dns.TypeA), rrStrings(
		"web.c.example.org. 30 IN A 192.0.2.10", "web.c.example.org. 30 IN A 203.0.113.30"); !slices.Equal(got, want) {
		t.Errorf("web A %v, want %v", got, want)
	}
	if got, want := answerStrings(z, "h2.hosts."+testOrigin, dns.TypeA), rrStrings("h2.hosts.c.example.org. 30 IN A 198.51.100.20"); !slices.Equal(got, want) {
		t.Errorf("h2's own name: A %v, want its own address only", got)
	}
	if got := answerStrings(z, "api."+testOrigin, dns.TypeSRV); len(got) != 1 {
		t.Errorf("api SRV %v: h2's port on its own address must stay", got)
	}
	for _, name := range []string{"h2.hosts." + testOrigin, "web-2.h2.hosts." + testOrigin} {
		if !log.has(record.ReasonForeignAddress, name) {
			t.Errorf("%s's foreign address not reported: %v", name, log.all())
		}
	}
	n := len(log.all())
	z.put("h2", h2) // the same documents again: no second report
	if extra := log.all()[n:]; slices.Contains(extra, record.ReasonForeignAddress+" h2.hosts."+testOrigin) {
		t.Errorf("reported again while it holds: %v", extra)
	}
}

// TestZoneClosedPolicy proves what a zone serves under a policy document
// that does not validate: no service name, alias or DNS-SD entry, and no
// address; what is left (the SOA, NS and each container's TXT) lets no
// client dial anything a valid policy would have refused.
func TestZoneClosedPolicy(t *testing.T) {
	t.Parallel()
	var log skipLog
	z := newTestZone(log.fn)
	z.policy = record.ClosedPolicy
	d := shopHost("h1", "192.0.2.10", "a1", "web-1", "web.shop", 8080)
	d.Containers[0].Aliases = []string{"www"}
	z.put("h1", d)
	z.MarkLoaded()
	for _, q := range []struct {
		name  string
		qtype uint16
	}{
		{"web.shop.", dns.TypeSRV}, {"www.", dns.TypeSRV}, {"_http._tcp.", dns.TypePTR},
		{"h1.hosts.", dns.TypeA}, {"web-1.h1.hosts.", dns.TypeA}, {"web-1.h1.hosts.", dns.TypeSRV},
	} {
		if got := answerStrings(z, q.name+testOrigin, q.qtype); len(got) != 0 {
			t.Errorf("%s %s under the closed policy: %v, want nothing", q.name, dns.TypeToString[q.qtype], got)
		}
	}
	if got := answerStrings(z, "web-1.h1.hosts."+testOrigin, dns.TypeTXT); len(got) != 1 {
		t.Errorf("the container's TXT %v, want it (it names no address)", got)
	}
	for _, want := range []string{"refused web.shop." + testOrigin, record.ReasonForeignAddress + " h1.hosts." + testOrigin} {
		if !slices.Contains(log.all(), want) {
			t.Errorf("not reported: %q (reports %v)", want, log.all())
		}
	}
}
