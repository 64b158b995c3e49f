package berth

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/berthdns/berth/record"
	"github.com/coredns/coredns/plugin/transfer"
	"github.com/miekg/dns"
)

// Test fixtures shared by the plugin's tests.

const (
	testOrigin = "c.example.org."
	testTTL    = 30
)

// testNS is the Corefile's `ns ns1.c.example.org 192.0.2.53 2001:db8::53`
// and `ns ns2.example.net` (out of zone, no address).
var testNS = []NSRecord{
	{Name: "ns1.c.example.org.", Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.53"), netip.MustParseAddr("2001:db8::53")}},
	{Name: "ns2.example.net."},
}

func mkHost(name string, addrs ...string) *record.Host {
	h := &record.Host{V: 1, Name: name, Rev: 1}
	for _, a := range addrs {
		h.Addrs = append(h.Addrs, netip.MustParseAddr(a))
	}
	return h
}

func mkPort(p int, proto, name, addr string, hostPort int) record.Port {
	return record.Port{Port: p, Proto: proto, Name: name, Addr: netip.MustParseAddr(addr), HostPort: hostPort}
}

// mkCtr builds a container whose id is idHex repeated to 64 hex digits.
func mkCtr(idHex, name, service, health string, ports ...record.Port) *record.Container {
	return &record.Container{V: 1, ID: strings.Repeat(idHex, 64/len(idHex)), Name: name, Service: service,
		Image: "img:" + name, Health: health, Priority: 10, Weight: 10, Ports: ports}
}

func mkData(h *record.Host, cs ...*record.Container) *hostDocs {
	cs = slices.Clone(cs)
	slices.SortFunc(cs, func(a, b *record.Container) int { return strings.Compare(a.ID, b.ID) })
	return &hostDocs{Host: h, Containers: cs}
}

// skipLog collects what the zone reports through its skip callback.
type skipLog struct {
	mu    sync.Mutex
	items []string // "reason name"
}

func (s *skipLog) fn(reason, name, why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if why == "" {
		reason += "(without an explanation)"
	}
	s.items = append(s.items, reason+" "+name)
}

func (s *skipLog) has(reason, name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Contains(s.items, reason+" "+name)
}

func (s *skipLog) all() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.items)
}

func newTestZone(skip func(reason, name, why string)) *Zone {
	return NewZone(testOrigin, testTTL, testNS, skip)
}

// put replaces what host contributes to z with data (nil removes it), as
// the watcher would apply Consul's next state: one index past the serial.
func (z *Zone) put(host string, data *hostDocs) {
	z.update(map[string]*hostDocs{host: data}, uint64(z.serial)+1)
}

// exists reports whether name exists in z (with records or as an empty
// non-terminal).
func exists(z *Zone, name string) bool {
	_, _, _, res := z.Lookup(name, dns.TypeA)
	return res == Success || res == NoData
}

func answerStrings(z *Zone, name string, qtype uint16) []string {
	ans, _, _, _ := z.Lookup(name, qtype)
	out := make([]string, 0, len(ans))
	for _, rr := range ans {
		out = append(out, rr.String())
	}
	slices.Sort(out)
	return out
}

func rrStrings(rrs ...string) []string {
	out := make([]string, 0, len(rrs))
	for _, s := range rrs {
		rr, err := dns.NewRR(s)
		if err != nil {
			panic(fmt.Sprintf("%q: %v", s, err))
		}
		out = append(out, rr.String())
	}
	slices.Sort(out)
	return out
}

// shopHost is a host with one healthy instance of service svc (its port 80
// named http) on the host's address addr.
func shopHost(name, addr, idHex, ctrName, svc string, hostPort int) *hostDocs {
	return mkData(mkHost(name, addr), mkCtr(idHex, ctrName, svc, record.HealthHealthy, mkPort(80, "tcp", "http", addr, hostPort)))
}

// TestZoneUpdateReplacesHost proves an update replaces everything the host
// contributed: a changed port shows, a container that left is gone.
func TestZoneUpdateReplacesHost(t *testing.T) {
	t.Parallel()
	z := newTestZone(nil)
	z.put("h1", shopHost("h1", "192.0.2.10", "a1", "web-1", "web", 32768))
	z.MarkLoaded()
	if got, want := answerStrings(z, "web.c.example.org.", dns.TypeSRV), rrStrings("web.c.example.org. 30 IN SRV 10 10 32768 h1.hosts.c.example.org."); !slices.Equal(got, want) {
		t.Fatalf("before: SRV %v, want %v", got, want)
	}
	z.put("h1", shopHost("h1", "192.0.2.10", "a3", "web-3", "web", 40000))
	if got, want := answerStrings(z, "web.c.example.org.", dns.TypeSRV), rrStrings("web.c.example.org. 30 IN SRV 10 10 40000 h1.hosts.c.example.org."); !slices.Equal(got, want) {
		t.Errorf("after: SRV %v, want %v", got, want)
	}
	if exists(z, "web-1.h1.hosts.c.example.org.") {
		t.Error("web-1 left the host but its name still exists")
	}
	if exists(z, `web-1\.h1._http._tcp.c.example.org.`) {
		t.Error("web-1's DNS-SD instance still exists")
	}
	if !exists(z, "web-3.h1.hosts.c.example.org.") || !exists(z, `web-3\.h1._http._tcp.c.example.org.`) {
		t.Error("web-3's names are missing")
	}
}

// TestZoneRemoveHost proves that removing a host removes its names and the
// empty non-terminals only it created (they become NXDOMAIN), keeps the
// ENTs other hosts still need, and brings the record count back.
func TestZoneRemoveHost(t *testing.T) {
	t.Parallel()
	z := newTestZone(nil)
	base := z.Records()
	z.put("h1", shopHost("h1", "192.0.2.10", "a1", "api-1", "api.shop", 1000))
	z.put("h2", shopHost("h2", "192.0.2.20", "b2", "web-2", "web.shop", 2000))
	z.MarkLoaded()
	for _, name := range []string{"shop.c.example.org.", "hosts.c.example.org.", "_tcp.api.shop.c.example.org.", "_tcp.c.example.org.", "_udp.c.example.org."} {
		if !exists(z, name) {
			t.Fatalf("setup: %s does not exist", name)
		}
	}

	z.put("h1", nil)
	gone := []string{
		"h1.hosts.c.example.org.", "api-1.h1.hosts.c.example.org.", "api.shop.c.example.org.",
		"_tcp.api.shop.c.example.org.", "_80._tcp.api.shop.c.example.org.", "_http._tcp.api.shop.c.example.org.",
		`api-1\.h1._http._tcp.c.example.org.`,
	}
	for _, name := range gone {
		if exists(z, name) {
			t.Errorf("after h1 left, %s still exists (want NXDOMAIN)", name)
		}
	}
	kept := []string{"shop.c.example.org.", "hosts.c.example.org.", "web.shop.c.example.org.", "_tcp.web.shop.c.example.org.", "_http._tcp.c.example.org."}
	for _, name := range kept {
		if !exists(z, name) {
			t.Errorf("after h1 left, %s no longer exists, though h2 still needs it", name)
		}
	}
	if got, want := answerStrings(z, "_http._tcp.c.example.org.", dns.TypePTR), rrStrings(`_http._tcp.c.example.org. 30 IN PTR web-2\.h2._http._tcp.c.example.org.`); !slices.Equal(got, want) {
		t.Errorf("after h1 left, _http._tcp PTR %v, want %v", got, want)
	}

	z.put("h2", nil)
	for _, name := range []string{"shop.c.example.org.", "hosts.c.example.org.", "_tcp.c.example.org.", "_udp.c.example.org.",
		"_dns-sd._udp.c.example.org.", "_services._dns-sd._udp.c.example.org.", "web.shop.c.example.org."} {
		if exists(z, name) {
			t.Errorf("after both hosts left, %s still exists", name)
		}
	}
	for _, name := range []string{testOrigin, "ns1.c.example.org."} {
		if !exists(z, name) {
			t.Errorf("after both hosts left, Corefile name %s is gone", name)
		}
	}
	if z.Records() != base {
		t.Errorf("Records() = %d after every host left, want the %d of an empty zone", z.Records(), base)
	}
}

// TestZoneLookupResults proves Lookup's typed result for each case: before
// the first load, a name with the type, an empty non-terminal, a name with
// other types only, and a name that does not exist.
func TestZoneLookupResults(t *testing.T) {
	t.Parallel()
	z := newTestZone(nil)
	z.put("h1", shopHost("h1", "192.0.2.10", "a1", "web-1", "web.shop", 1000))
	if _, _, _, res := z.Lookup("web.shop."+testOrigin, dns.TypeSRV); res != NotLoaded {
		t.Errorf("before the first load: %v, want NotLoaded", res)
	}
	z.MarkLoaded()
	for _, c := range []struct {
		name  string
		qtype uint16
		want  Result
		ns    bool
	}{
		{"web.shop." + testOrigin, dns.TypeSRV, Success, false},
		{"shop." + testOrigin, dns.TypeA, NoData, true},
		{"web.shop." + testOrigin, dns.TypeAAAA, NoData, true},
		{"nope." + testOrigin, dns.TypeA, NameError, true},
		{testOrigin, dns.TypeSOA, Success, false},
	} {
		ans, ns, _, res := z.Lookup(c.name, c.qtype)
		if res != c.want || (len(ns) == 1) != c.ns || (res == Success) != (len(ans) > 0) {
			t.Errorf("%s %s: result %v, %d answers, authority %v; want %v with the SOA in authority %v",
				c.name, dns.TypeToString[c.qtype], res, len(ans), ns, c.want, c.ns)
		}
	}
}

// TestZoneSerial proves the serial is Consul's index of the data: it
// follows the index, changes whenever the records do, and never goes back
// when the index does (a restored snapshot, a stale read).
func TestZoneSerial(t *testing.T) {
	t.Parallel()
	z := newTestZone(nil)
	web := func(port int) *hostDocs { return shopHost("h1", "192.0.2.10", "a1", "web-1", "web", port) }
	step := func(desc string, data *hostDocs, index uint64, want uint32) {
		t.Helper()
		z.update(map[string]*hostDocs{"h1": data}, index)
		if got := z.SOA().Serial; got != want {
			t.Errorf("%s at index %d: serial %d, want %d", desc, index, got, want)
		}
	}
	step("first load", web(1000), 5000, 5000)
	z.MarkLoaded()
	step("a change", web(1001), 5007, 5007)
	step("the same data at a later index", web(1001), 5009, 5009)
	step("the same data at the same index", web(1001), 5009, 5009)
	step("the same data at an older index", web(1001), 4000, 5009)
	step("a change at an older index", web(1002), 4001, 5010)
	step("the same data at the next older index", web(1002), 4002, 5010)
	step("a change at an older index again", web(1003), 4003, 5011)
	step("the index overtakes the serial", web(1003), 5012, 5012)

	// A restart: a new zone on the same Consul state serves the same serial.
	again := newTestZone(nil)
	again.update(map[string]*hostDocs{"h1": web(1003)}, 5012)
	if a, b := again.SOA().Serial, z.SOA().Serial; a != b {
		t.Errorf("a second server on the same data serves serial %d, the first %d", a, b)
	}

	// RFC 1982: an index past 2^32 wraps, and the wrapped serial is newer.
	z = newTestZone(nil)
	step("near the wrap", web(1000), 1<<32-10, 1<<32-10)
	step("across the wrap", web(1001), 1<<32+3, 3)
}

// TestZoneIXFR proves an IXFR from a journaled serial gets exactly the
// records that went and came (RFC 1995's sequence of differences), one
// from the current serial only the SOA, and one from an unknown serial or
// a difference bigger than half the zone the whole zone.
func TestZoneIXFR(t *testing.T) {
	t.Parallel()
	z := newTestZone(nil)
	for i := range 10 { // web-h0 on h0 ... web-h9 on h9, one service
		h := fmt.Sprintf("h%d", i)
		z.put(h, shopHost(h, fmt.Sprintf("192.0.2.%d", 10+i), fmt.Sprintf("a%d", i), "web-"+h, "web", 1000))
	}
	z.MarkLoaded()
	b := &Berth{zones: map[string]*Zone{testOrigin: z}, names: []string{testOrigin}}
	collect := func(serial uint32) []dns.RR {
		t.Helper()
		ch, err := b.Transfer(testOrigin, serial)
		if err != nil {
			t.Fatalf("Transfer: %v", err)
		}
		var rrs []dns.RR
		for batch := range ch {
			rrs = append(rrs, batch...)
		}
		return rrs
	}
	_, axfr := z.snapshot()
	s0 := z.SOA().Serial

	// One port of one container changes: its SRV records go and come.
	z.put("h1", shopHost("h1", "192.0.2.11", "a1", "web-h1", "web", 1234))
	s1 := z.SOA().Serial
	ixfr := collect(s0)
	soas := []int{}
	for i, rr := range ixfr {
		if rr.Header().Rrtype == dns.TypeSOA {
			soas = append(soas, i)
		}
	}
	if len(soas) != 4 || soas[0] != 0 || soas[3] != len(ixfr)-1 {
		t.Fatalf("IXFR %d -> %d: want SOA, SOA(old), deleted, SOA(new), added, SOA; got %v", s0, s1, ixfr)
	}
	serialAt := func(i int) uint32 { return ixfr[i].(*dns.SOA).Serial }
	if serialAt(0) != s1 || serialAt(soas[1]) != s0 || serialAt(soas[2]) != s1 || serialAt(soas[3]) != s1 {
		t.Errorf("IXFR serials %d %d %d %d, want %d %d %d %d", serialAt(0), serialAt(soas[1]), serialAt(soas[2]), serialAt(soas[3]), s1, s0, s1, s1)
	}
	deleted, added := ixfr[soas[1]+1:soas[2]], ixfr[soas[2]+1:soas[3]]
	if len(deleted) == 0 || len(deleted) != len(added) {
		t.Fatalf("IXFR deleted %v, added %v: want the same number of SRV records each way", deleted, added)
	}
	for _, rr := range deleted {
		if srv, ok := rr.(*dns.SRV); !ok || srv.Port == 1234 {
			t.Errorf("deleted %v: want only SRV records of the old port", rr)
		}
	}
	for _, rr := range added {
		if srv, ok := rr.(*dns.SRV); !ok || srv.Port != 1234 {
			t.Errorf("added %v: want only SRV records of port 1234", rr)
		}
	}
	// Applied to the old zone, the difference gives the new one.
	want := map[string]int{}
	for _, rr := range axfr {
		want[rr.String()]++
	}
	for _, rr := range deleted {
		want[rr.String()]--
	}
	for _, rr := range added {
		want[rr.String()]++
	}
	_, now := z.snapshot()
	got := map[string]int{}
	for _, rr := range now {
		got[rr.String()]++
	}
	for k, n := range want {
		if n == 0 {
			delete(want, k)
		}
	}
	if !maps.Equal(got, want) {
		t.Errorf("old zone + IXFR differences != new zone (%d records vs %d)", len(want), len(got))
	}

	// Two more changes: from s0 the IXFR has three differences in order.
	z.put("h1", shopHost("h1", "192.0.2.11", "a1", "web-h1", "web", 1235))
	z.put("h1", shopHost("h1", "192.0.2.11", "a1", "web-h1", "web", 1236))
	if n := countSOA(collect(s0)); n != 2+2*3 {
		t.Errorf("IXFR over three changes has %d SOA records, want 8", n)
	}
	if n := countSOA(collect(s1)); n != 2+2*2 {
		t.Errorf("IXFR over two changes has %d SOA records, want 6", n)
	}
	if rrs := collect(z.SOA().Serial); len(rrs) != 1 {
		t.Errorf("IXFR from the current serial gave %d records, want the SOA", len(rrs))
	}
	if rrs := collect(z.SOA().Serial + 5); len(rrs) != 1 {
		t.Errorf("IXFR from a newer serial gave %d records, want the SOA", len(rrs))
	}
	if rrs := collect(s0 - 1); countSOA(rrs) != 2 || len(rrs) != int(z.Records())+2 {
		t.Errorf("IXFR from an unknown serial gave %d records (%d SOA), want the AXFR's %d", len(rrs), countSOA(rrs), z.Records()+2)
	}
	// Most hosts leaving: the whole zone is smaller than the differences.
	for _, h := range []string{"h0", "h2", "h3", "h4", "h5", "h6", "h7", "h8"} {
		z.put(h, nil)
	}
	if rrs := collect(s0); countSOA(rrs) != 2 {
		t.Errorf("IXFR bigger than half the zone: %d SOA records, want an AXFR (2)", countSOA(rrs))
	}
}

func countSOA(rrs []dns.RR) int {
	n := 0
	for _, rr := range rrs {
		if rr.Header().Rrtype == dns.TypeSOA {
			n++
		}
	}
	return n
}

// TestJournalBounds proves the journal keeps the newest differences within
// its bounds, always chained from one serial to the next.
func TestJournalBounds(t *testing.T) {
	t.Parallel()
	var j journal
	rr := &dns.TXT{Hdr: dns.RR_Header{Name: "x.", Rrtype: dns.TypeTXT, Class: dns.ClassINET}, Txt: []string{"x"}}
	for i := range uint32(journalMaxDeltas + 10) {
		j.add(zoneDelta{from: i, to: i + 1, add: []dns.RR{rr}}, 1<<30)
	}
	if len(j.deltas) != journalMaxDeltas || j.deltas[0].from != 10 {
		t.Fatalf("journal holds %d deltas from %d, want %d from 10", len(j.deltas), j.deltas[0].from, journalMaxDeltas)
	}
	if _, ok := j.since(9); ok {
		t.Error("a dropped serial is still in the journal")
	}
	if ds, ok := j.since(100); !ok || ds[0].from != 100 || ds[len(ds)-1].to != journalMaxDeltas+10 {
		t.Error("since(100) does not run from 100 to the current serial")
	}
	big := make([]dns.RR, journalMaxRecords-5)
	for i := range big {
		big[i] = rr
	}
	last := uint32(journalMaxDeltas + 10)
	j.add(zoneDelta{from: last, to: last + 1, del: big}, 1<<30)
	if j.records > journalMaxRecords || j.deltas[len(j.deltas)-1].to != last+1 {
		t.Errorf("journal holds %d records in %d deltas, over its bound of %d", j.records, len(j.deltas), journalMaxRecords)
	}
	j.add(zoneDelta{from: 7, to: 8}, 1<<30) // a gap: start over
	if len(j.deltas) != 1 || j.deltas[0].from != 7 {
		t.Errorf("after a gap the journal holds %d deltas", len(j.deltas))
	}
	// A zone of 100 records: differences beyond 50 records would only ever
	// be sent as an AXFR, so they go.
	for i := range uint32(40) {
		j.add(zoneDelta{from: 8 + i, to: 9 + i, add: []dns.RR{rr, rr}}, 100)
	}
	if j.records > 50 || j.records < 49 || j.deltas[len(j.deltas)-1].to != 48 {
		t.Errorf("journal of a zone of 100 records holds %d records in %d deltas, want 50 at most, up to serial 48", j.records, len(j.deltas))
	}
}

// TestZoneSharedService proves two hosts sharing a service each keep their
// records when the other leaves.
func TestZoneSharedService(t *testing.T) {
	t.Parallel()
	z := newTestZone(nil)
	z.put("h1", shopHost("h1", "192.0.2.10", "a1", "web-1", "web", 1000))
	z.put("h2", shopHost("h2", "192.0.2.20", "b2", "web-2", "web", 2000))
	z.MarkLoaded()
	if got := answerStrings(z, "web.c.example.org.", dns.TypeA); !slices.Equal(got, rrStrings("web.c.example.org. 30 IN A 192.0.2.10", "web.c.example.org. 30 IN A 192.0.2.20")) {
		t.Fatalf("both hosts: A %v", got)
	}
	z.put("h1", nil)
	checks := []struct {
		name  string
		qtype uint16
		want  []string
	}{
		{"web.c.example.org.", dns.TypeA, rrStrings("web.c.example.org. 30 IN A 192.0.2.20")},
		{"web.c.example.org.", dns.TypeSRV, rrStrings("web.c.example.org. 30 IN SRV 10 10 2000 h2.hosts.c.example.org.")},
		{"_http._tcp.web.c.example.org.", dns.TypeSRV, rrStrings("_http._tcp.web.c.example.org. 30 IN SRV 10 10 2000 h2.hosts.c.example.org.")},
		{"_http._tcp.c.example.org.", dns.TypePTR, rrStrings(`_http._tcp.c.example.org. 30 IN PTR web-2\.h2._http._tcp.c.example.org.`)},
		{"_services._dns-sd._udp.c.example.org.", dns.TypePTR, rrStrings("_services._dns-sd._udp.c.example.org. 30 IN PTR _http._tcp.c.example.org.")},
	}
	for _, c := range checks {
		if got := answerStrings(z, c.name, c.qtype); !slices.Equal(got, c.want) {
			t.Errorf("after h1 left: %s %s = %v, want %v", c.name, dns.TypeToString[c.qtype], got, c.want)
		}
	}
	_, _, extra, _ := z.Lookup("web.c.example.org.", dns.TypeSRV)
	for _, rr := range extra {
		if strings.HasPrefix(rr.Header().Name, "h1.") {
			t.Errorf("after h1 left, web SRV glue still has %v", rr)
		}
	}
}

// labelsOf builds a dotted name of exactly n octets from labels of at most
// 63 octets.
func labelsOf(n int, c byte) string {
	var labels []string
	for n > 0 {
		l := min(63, n)
		if n-l == 1 { // would leave a single octet for a dot and nothing else
			l--
		}
		labels = append(labels, strings.Repeat(string(c), l))
		n -= l + 1
	}
	return strings.Join(labels, ".")
}

// TestZoneSkipsNames proves names that cannot be published are left out and
// reported through the skip callback with their reason, while the rest of
// the host is served.
func TestZoneSkipsNames(t *testing.T) {
	t.Parallel()
	// A service whose name with the zone ("." + 13 octets) is n octets long.
	svcOf := func(n int) string { return labelsOf(n-1-len("c.example.org"), 's') }
	tests := []struct {
		name      string
		data      *hostDocs
		reason    string // "" = published, nothing reported
		skipped   string // the name reported and absent
		published []string
	}{
		{
			// Its _7._tcp name ("_7._tcp." + 253 = 261 octets) does not fit.
			name:      "service name of 253 octets with the zone is published, its _<P>._<proto> name skipped",
			data:      mkData(mkHost("h1", "192.0.2.10"), mkCtr("a1", "c", svcOf(253), "none", mkPort(7, "tcp", "", "192.0.2.10", 7))),
			reason:    "too_long",
			skipped:   "_7._tcp." + svcOf(253) + "." + testOrigin,
			published: []string{svcOf(253) + "." + testOrigin, "c.h1.hosts." + testOrigin},
		},
		{
			name:      "service name of 254 octets with the zone is skipped",
			data:      mkData(mkHost("h1", "192.0.2.10"), mkCtr("a1", "c", svcOf(254), "none", mkPort(7, "tcp", "", "192.0.2.10", 7))),
			reason:    "too_long",
			skipped:   svcOf(254) + "." + testOrigin,
			published: []string{"c.h1.hosts." + testOrigin},
		},
		{
			name:      "service name of 255 octets with the zone is skipped",
			data:      mkData(mkHost("h1", "192.0.2.10"), mkCtr("a1", "c", svcOf(255), "none", mkPort(7, "tcp", "", "192.0.2.10", 7))),
			reason:    "too_long",
			skipped:   svcOf(255) + "." + testOrigin,
			published: []string{"c.h1.hosts." + testOrigin},
		},
		{
			name: "service name of 300 octets with the zone is skipped",
			data: mkData(mkHost("h1", "192.0.2.10"), mkCtr("a1", "c", labelsOf(286, 's'), "none", mkPort(7, "tcp", "", "192.0.2.10", 7)),
				mkCtr("b1", "d", "ok", "none", mkPort(8, "tcp", "", "192.0.2.10", 8))),
			reason:    "too_long",
			skipped:   labelsOf(286, 's') + "." + testOrigin,
			published: []string{"c.h1.hosts." + testOrigin, "ok." + testOrigin},
		},
		{
			name: "DNS-SD instance label of 64 octets is skipped",
			data: mkData(mkHost(strings.Repeat("h", 30), "192.0.2.10"), mkCtr("a1", strings.Repeat("c", 33), "web", "none", mkPort(80, "tcp", "http", "192.0.2.10", 80)),
				mkCtr("b1", "short", "web", "none", mkPort(80, "tcp", "http", "192.0.2.10", 81))),
			reason:  "too_long",
			skipped: strings.Repeat("c", 33) + `\.` + strings.Repeat("h", 30) + `._http._tcp.` + testOrigin,
			published: []string{
				strings.Repeat("c", 33) + "." + strings.Repeat("h", 30) + ".hosts." + testOrigin, // the container itself
				"web." + testOrigin,
				`short\.` + strings.Repeat("h", 30) + `._http._tcp.` + testOrigin,
			},
		},
		{
			name: "DNS-SD instance label of exactly 63 octets is published",
			data: mkData(mkHost(strings.Repeat("h", 30), "192.0.2.10"), mkCtr("a1", strings.Repeat("c", 32), "web", "none", mkPort(80, "tcp", "http", "192.0.2.10", 80))),
			published: []string{
				strings.Repeat("c", 32) + `\.` + strings.Repeat("h", 30) + `._http._tcp.` + testOrigin,
			},
		},
		{
			name: "duplicate container names within a host: the second is skipped",
			data: mkData(mkHost("h1", "192.0.2.10"),
				mkCtr("a1", "web", "web", "none", mkPort(80, "tcp", "http", "192.0.2.10", 1001)),
				mkCtr("b1", "web", "web", "none", mkPort(80, "tcp", "http", "192.0.2.10", 1002))),
			reason:    "duplicate",
			skipped:   "", // the name stays (the first container's), checked below
			published: []string{"web.h1.hosts." + testOrigin},
		},
		{
			// The claim is refused whole (zoneOwns): no _domain._udp.ns1 either.
			name:      "a service named like the Corefile's ns does not override it",
			data:      mkData(mkHost("h1", "192.0.2.10"), mkCtr("a1", "c", "ns1", "none", mkPort(53, "udp", "domain", "192.0.2.10", 53))),
			reason:    "conflict",
			published: []string{"ns1." + testOrigin, "c.h1.hosts." + testOrigin},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var log skipLog
			z := newTestZone(log.fn)
			z.put("h", tc.data)
			z.MarkLoaded()
			got := log.all()
			switch {
			case tc.reason == "" && len(got) > 0:
				t.Errorf("reported %v, want nothing", got)
			case tc.reason != "" && tc.skipped != "" && !log.has(tc.reason, tc.skipped):
				t.Errorf("reported %v, want %q for %s", got, tc.reason, tc.skipped)
			case tc.reason != "" && !slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, tc.reason+" ") }):
				t.Errorf("reported %v, want reason %q", got, tc.reason)
			}
			if tc.skipped != "" && exists(z, strings.ToLower(tc.skipped)) {
				t.Errorf("%s was reported as skipped but exists", tc.skipped)
			}
			for _, name := range tc.published {
				if !exists(z, name) {
					t.Errorf("%s is missing", name)
				}
			}
			for _, s := range got {
				if name := strings.SplitN(s, " ", 2)[1]; len(name) > 0 {
					if _, ok := z.names[name]; ok && tc.reason != "conflict" && tc.reason != "duplicate" {
						t.Errorf("reported %s, yet it is in the zone", name)
					}
				}
			}
		})
	}
}

// TestZoneSkipsLongContainerName proves a container whose name with the
// zone is over 253 octets is reported and left out, its host served.
func TestZoneSkipsLongContainerName(t *testing.T) {
	t.Parallel()
	var log skipLog
	origin := labelsOf(150, 'z') + "."
	z := NewZone(origin, testTTL, nil, log.fn)
	host := strings.Repeat("h", 63) // h.hosts.<origin>: 63+1+5+1+150 = 220 octets
	ctr := strings.Repeat("c", 40)  // 261 octets
	z.put(host, mkData(mkHost(host, "192.0.2.10"), mkCtr("a1", ctr, "web", "none", mkPort(80, "tcp", "http", "192.0.2.10", 80))))
	z.MarkLoaded()
	ctrName := ctr + "." + host + ".hosts." + origin
	if !log.has("too_long", ctrName) {
		t.Errorf("reported %v, want too_long %s", log.all(), ctrName)
	}
	if exists(z, ctrName) {
		t.Error("the container's over-long name exists")
	}
	if !exists(z, host+".hosts."+origin) {
		t.Error("the host's own name is missing")
	}
}

// TestZoneDuplicateContainerName proves that of two containers with the same
// name on one host the first by ID is served and the second reported.
func TestZoneDuplicateContainerName(t *testing.T) {
	t.Parallel()
	var log skipLog
	z := newTestZone(log.fn)
	z.put("h1", mkData(mkHost("h1", "192.0.2.10"),
		mkCtr("b1", "web", "web", "none", mkPort(80, "tcp", "http", "192.0.2.10", 1002)),
		mkCtr("a1", "web", "web", "none", mkPort(80, "tcp", "http", "192.0.2.10", 1001))))
	z.MarkLoaded()
	if !log.has("duplicate", "web.h1.hosts."+testOrigin) {
		t.Errorf("reported %v, want duplicate web.h1.hosts.%s", log.all(), testOrigin)
	}
	want := rrStrings("web.h1.hosts.c.example.org. 30 IN SRV 10 10 1001 h1.hosts.c.example.org.")
	if got := answerStrings(z, "web.h1.hosts.c.example.org.", dns.TypeSRV); !slices.Equal(got, want) {
		t.Errorf("SRV %v, want only the first container's %v", got, want)
	}
	if got := answerStrings(z, "web.c.example.org.", dns.TypeSRV); !slices.Equal(got, rrStrings("web.c.example.org. 30 IN SRV 10 10 1001 h1.hosts.c.example.org.")) {
		t.Errorf("service SRV %v, want only the first container's port", got)
	}
}

// TestZoneNSConflict proves the Corefile's ns name with addresses is in the
// zone and a service of the same name neither overrides nor removes it, even
// when that service later leaves.
func TestZoneNSConflict(t *testing.T) {
	t.Parallel()
	var log skipLog
	z := newTestZone(log.fn)
	z.MarkLoaded()
	wantA := rrStrings("ns1.c.example.org. 30 IN A 192.0.2.53")
	wantAAAA := rrStrings("ns1.c.example.org. 30 IN AAAA 2001:db8::53")
	if got := answerStrings(z, "ns1.c.example.org.", dns.TypeA); !slices.Equal(got, wantA) {
		t.Fatalf("ns1 A %v, want %v", got, wantA)
	}
	z.put("h1", mkData(mkHost("h1", "192.0.2.10"), mkCtr("a1", "c", "ns1", "none", mkPort(53, "udp", "domain", "198.51.100.1", 53))))
	if !log.has("conflict", "ns1.c.example.org.") {
		t.Errorf("reported %v, want conflict ns1.c.example.org.", log.all())
	}
	if got := answerStrings(z, "ns1.c.example.org.", dns.TypeA); !slices.Equal(got, wantA) {
		t.Errorf("with the service: ns1 A %v, want the Corefile's %v", got, wantA)
	}
	if got := answerStrings(z, "ns1.c.example.org.", dns.TypeAAAA); !slices.Equal(got, wantAAAA) {
		t.Errorf("with the service: ns1 AAAA %v, want %v", got, wantAAAA)
	}
	if got := answerStrings(z, "ns1.c.example.org.", dns.TypeSRV); len(got) != 0 {
		t.Errorf("with the service: ns1 SRV %v, want none", got)
	}
	z.put("h1", nil)
	if got := answerStrings(z, "ns1.c.example.org.", dns.TypeA); !slices.Equal(got, wantA) {
		t.Errorf("after the service left: ns1 A %v, want %v", got, wantA)
	}
	// The apex NS and its glue are untouched.
	ans, _, extra, _ := z.Lookup(testOrigin, dns.TypeNS)
	if len(ans) != 2 || len(extra) != 2 {
		t.Errorf("apex NS %v glue %v, want 2 NS and 2 glue records", ans, extra)
	}
}

// TestZoneDefaultNS proves a zone without ns lines names ns.dns.<zone> in its
// SOA and NS, and that name has no records of its own (it has no address).
func TestZoneDefaultNS(t *testing.T) {
	t.Parallel()
	z := NewZone("C.Example.ORG", 60, nil, nil)
	z.MarkLoaded()
	if z.Origin() != testOrigin {
		t.Errorf("Origin() = %q, want %q (lower case, fully qualified)", z.Origin(), testOrigin)
	}
	soa := z.SOA()
	if soa.Ns != "ns.dns."+testOrigin || soa.Mbox != "hostmaster."+testOrigin || soa.Minttl != 60 || soa.Hdr.Ttl != 60 {
		t.Errorf("SOA %v", soa)
	}
	if got := answerStrings(z, testOrigin, dns.TypeNS); !slices.Equal(got, rrStrings("c.example.org. 60 IN NS ns.dns.c.example.org.")) {
		t.Errorf("NS %v", got)
	}
	if exists(z, "ns.dns."+testOrigin) {
		t.Error("ns.dns exists without any address")
	}
}

// TestZoneRecords proves Records() counts every indexed record (all but the
// SOA) as the zone changes.
func TestZoneRecords(t *testing.T) {
	t.Parallel()
	z := newTestZone(nil)
	z.MarkLoaded()
	check := func(when string) {
		t.Helper()
		_, rrs := z.snapshot()
		if z.Records() != int64(len(rrs)) {
			t.Errorf("%s: Records() = %d, but the zone holds %d records", when, z.Records(), len(rrs))
		}
	}
	// 2 NS at the apex, A and AAAA of ns1.
	if z.Records() != 4 {
		t.Errorf("empty zone: Records() = %d, want 4 (2 NS, ns1 A and AAAA)", z.Records())
	}
	check("empty zone")
	z.put("h1", shopHost("h1", "192.0.2.10", "a1", "web-1", "web", 1000))
	// h1 A; web-1 A, SRV, TXT; web A, SRV; _80._tcp.web SRV; _http._tcp.web
	// SRV; _services PTR; _http._tcp PTR; instance SRV, TXT.
	if z.Records() != 4+12 {
		t.Errorf("one host: Records() = %d, want 16", z.Records())
	}
	check("one host")
	z.put("h2", shopHost("h2", "192.0.2.20", "b2", "web-2", "web", 2000))
	check("two hosts")
	z.put("h1", shopHost("h1", "192.0.2.10", "a1", "web-1", "api", 1000))
	check("h1 changed service")
	z.put("h2", nil)
	check("h2 left")
	z.put("h1", nil)
	check("h1 left")
	if z.Records() != 4 {
		t.Errorf("all left: Records() = %d, want 4", z.Records())
	}
}

// TestZoneLookupAtomic proves a query sees one host update whole or not at
// all, never a mix, while the watcher updates (run with -race).
func TestZoneLookupAtomic(t *testing.T) {
	t.Parallel()
	z := newTestZone(nil)
	v1 := mkData(mkHost("h1", "192.0.2.10"), mkCtr("a1", "w", "web", "none", mkPort(80, "tcp", "http", "192.0.2.10", 1001), mkPort(81, "tcp", "", "192.0.2.10", 1002)))
	v2 := mkData(mkHost("h1", "192.0.2.10"), mkCtr("a1", "w", "web", "none", mkPort(80, "tcp", "http", "192.0.2.10", 2001), mkPort(81, "tcp", "", "192.0.2.10", 2002)))
	z.put("h1", v1)
	z.MarkLoaded()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var bad atomic.Value
	var reads atomic.Int64
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				ans, _, _, res := z.Lookup("web.c.example.org.", dns.TypeSRV)
				reads.Add(1)
				if res != Success || len(ans) != 2 {
					bad.Store(fmt.Sprintf("result=%v answer=%v", res, ans))
					return
				}
				p0, p1 := ans[0].(*dns.SRV).Port/1000, ans[1].(*dns.SRV).Port/1000
				if p0 != p1 {
					bad.Store(fmt.Sprintf("mixed versions: %v", ans))
					return
				}
			}
		}()
	}
	for i := range 500 {
		if i%2 == 0 {
			z.put("h1", v2)
		} else {
			z.put("h1", v1)
		}
	}
	cancel()
	wg.Wait()
	if b := bad.Load(); b != nil {
		t.Errorf("a query saw a partial update: %v", b)
	}
	if reads.Load() == 0 {
		t.Error("no query ran during the updates")
	}
}

// TestTransfer proves AXFR gives the SOA first and last and every record
// once, and an IXFR from the current serial gets only the SOA.
func TestTransfer(t *testing.T) {
	t.Parallel()
	b := newTestBerth(t)
	z := b.zones[testOrigin]
	collect := func(serial uint32) []dns.RR {
		t.Helper()
		ch, err := b.Transfer("C.EXAMPLE.ORG.", serial) // zone names are case-insensitive
		if err != nil {
			t.Fatalf("Transfer: %v", err)
		}
		var rrs []dns.RR
		for batch := range ch {
			rrs = append(rrs, batch...)
		}
		return rrs
	}

	rrs := collect(0)
	if len(rrs) < 3 {
		t.Fatalf("AXFR gave %d records", len(rrs))
	}
	first, okFirst := rrs[0].(*dns.SOA)
	last, okLast := rrs[len(rrs)-1].(*dns.SOA)
	if !okFirst || !okLast || first.Serial != z.SOA().Serial || last.Serial != first.Serial {
		t.Fatalf("AXFR does not start and end with the current SOA: first %v, last %v", rrs[0], rrs[len(rrs)-1])
	}
	seen := map[string]bool{}
	for _, rr := range rrs[1 : len(rrs)-1] {
		if rr.Header().Rrtype == dns.TypeSOA {
			t.Errorf("SOA in the middle of the AXFR: %v", rr)
		}
		if seen[rr.String()] {
			t.Errorf("record twice in the AXFR: %v", rr)
		}
		seen[rr.String()] = true
		if !dns.IsSubDomain(testOrigin, rr.Header().Name) {
			t.Errorf("record outside the zone in the AXFR: %v", rr)
		}
	}
	if int64(len(seen)) != z.Records() {
		t.Errorf("AXFR has %d records besides the SOA, Records() says %d", len(seen), z.Records())
	}
	// Every record a query can give is in the transfer.
	for _, q := range []struct {
		name  string
		qtype uint16
	}{
		{testOrigin, dns.TypeNS}, {"ns1.c.example.org.", dns.TypeA}, {"h1.hosts.c.example.org.", dns.TypeAAAA},
		{"web-1.h1.hosts.c.example.org.", dns.TypeTXT}, {"sick-1.h1.hosts.c.example.org.", dns.TypeSRV},
		{"web.shop.c.example.org.", dns.TypeSRV}, {"_http._tcp.web.shop.c.example.org.", dns.TypeSRV},
		{"_services._dns-sd._udp.c.example.org.", dns.TypePTR}, {`web-2\.h2._http._tcp.c.example.org.`, dns.TypeSRV},
	} {
		ans, _, _, _ := z.Lookup(q.name, q.qtype)
		if len(ans) == 0 {
			t.Errorf("fixture: %s has no %s", q.name, dns.TypeToString[q.qtype])
		}
		for _, rr := range ans {
			if !seen[rr.String()] {
				t.Errorf("AXFR lacks %v", rr)
			}
		}
	}

	if ixfr := collect(z.SOA().Serial); len(ixfr) != 1 || ixfr[0].Header().Rrtype != dns.TypeSOA {
		t.Errorf("IXFR from the current serial gave %v, want only the SOA", ixfr)
	}
	if ixfr := collect(z.SOA().Serial - 1); len(ixfr) != len(rrs) {
		t.Errorf("IXFR from an older serial gave %d records, want the full %d", len(ixfr), len(rrs))
	}

	if _, err := b.Transfer("example.com.", 0); err != transfer.ErrNotAuthoritative {
		t.Errorf("Transfer of a zone not served: %v, want ErrNotAuthoritative", err)
	}
	unloaded := &Berth{zones: map[string]*Zone{testOrigin: newTestZone(nil)}}
	if _, err := unloaded.Transfer(testOrigin, 0); err != transfer.ErrNotAuthoritative {
		t.Errorf("Transfer before the first load: %v, want ErrNotAuthoritative", err)
	}
}

// TestSerialNewer proves RFC 1982 serial comparison, across the wrap.
func TestSerialNewer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		a, b uint32
		want bool
	}{
		{2, 1, true}, {1, 2, false}, {1, 1, false},
		{0, 0xffffffff, true}, {0xffffffff, 0, false}, {5, 0xfffffff0, true},
	}
	for _, tc := range tests {
		if got := serialNewer(tc.a, tc.b); got != tc.want {
			t.Errorf("serialNewer(%d, %d) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

// TestZoneReportsSkipOnce proves a name left out is reported once while it
// stays left out, however often its host changes, and again when it comes
// back after being fixed; the same for a name that conflicts with the
// Corefile's.
func TestZoneReportsSkipOnce(t *testing.T) {
	t.Parallel()
	var log skipLog
	z := newTestZone(log.fn)
	z.MarkLoaded()
	// A service of 232 octets: 246 in the zone, fine; its SRV names are
	// over 253 (_80._tcp. adds 9 octets).
	long := labelsOf(232, 's')
	withPort := func(hostPort int, svc string) *hostDocs {
		return mkData(mkHost("h1", "192.0.2.10"),
			mkCtr("a1", "web", "web", "none", mkPort(80, "tcp", "http", "192.0.2.10", hostPort)),
			mkCtr("b1", "odd", svc, "none", mkPort(80, "tcp", "http", "192.0.2.10", 2000)),
			mkCtr("c1", "dns", "ns1", "none", mkPort(53, "udp", "domain", "192.0.2.10", 53)))
	}
	count := func(reason, name string) int {
		n := 0
		for _, item := range log.all() {
			if item == reason+" "+name {
				n++
			}
		}
		return n
	}
	tooLong := "_80._tcp." + long + "." + testOrigin
	for i := range 3 { // the host changes three times; the bad names stay
		z.put("h1", withPort(1000+i, long))
	}
	if n := count("too_long", tooLong); n != 1 {
		t.Errorf("too_long %s reported %d times over three updates, want once; all: %v", tooLong, n, log.all())
	}
	if n := count("conflict", "ns1."+testOrigin); n != 1 {
		t.Errorf("conflict ns1 reported %d times over three updates, want once", n)
	}
	z.put("h1", withPort(1003, "fine"))
	z.put("h1", withPort(1004, long))
	if n := count("too_long", tooLong); n != 2 {
		t.Errorf("too_long %s reported %d times after it was fixed and broken again, want twice", tooLong, n)
	}
	z.put("h1", nil)
	z.put("h1", withPort(1005, long))
	if n := count("conflict", "ns1."+testOrigin); n != 2 {
		t.Errorf("conflict ns1 reported %d times after the host left and came back, want twice", n)
	}
}

// TestZoneLazyJoin proves a large shared name (the DNS-SD list of every
// http instance, 400 here) is joined on first use and answers exactly what
// an eager merge would: every instance once, changed with its host, the
// serial unchanged by a recompile that changes nothing, and all of it in a
// zone transfer.
func TestZoneLazyJoin(t *testing.T) {
	t.Parallel()
	z := newTestZone(nil)
	const hosts, perHost = 20, 20
	svcType := "_http._tcp." + testOrigin
	listedHost := func(h, firstPort int) *hostDocs {
		name := fmt.Sprintf("h%02d", h)
		addr := fmt.Sprintf("192.0.2.%d", h+1)
		var cs []*record.Container
		for c := range perHost {
			cs = append(cs, mkCtr(fmt.Sprintf("%02x%02x", h, c), fmt.Sprintf("w%02d", c), fmt.Sprintf("s%02d", c), "none",
				mkPort(80, "tcp", "http", addr, firstPort+c)))
		}
		return mkData(mkHost(name, addr), cs...)
	}
	want := map[string]bool{}
	batch := map[string]*hostDocs{}
	for h := range hosts {
		batch[fmt.Sprintf("h%02d", h)] = listedHost(h, 10000)
		for c := range perHost {
			want[fmt.Sprintf(`w%02d\.h%02d.%s`, c, h, svcType)] = true
		}
	}
	z.update(batch, uint64(z.serial)+1)
	z.MarkLoaded()
	ptrs := func() map[string]bool {
		ans, _, _, _ := z.Lookup(svcType, dns.TypePTR)
		got := map[string]bool{}
		for _, rr := range ans {
			if got[rr.(*dns.PTR).Ptr] {
				t.Errorf("PTR %s twice", rr.(*dns.PTR).Ptr)
			}
			got[rr.(*dns.PTR).Ptr] = true
		}
		return got
	}
	z.mu.RLock()
	lazy := z.names[svcType].lazy != nil
	z.mu.RUnlock()
	if !lazy {
		t.Fatalf("%s (%d records) is not joined lazily", svcType, hosts*perHost)
	}
	if got := ptrs(); !maps.Equal(got, want) {
		t.Fatalf("PTR: %d records, want %d", len(got), len(want))
	}
	serial := z.SOA().Serial
	z.update(map[string]*hostDocs{"h03": listedHost(3, 10000)}, uint64(serial)) // compiled anew, same records, same index
	if s := z.SOA().Serial; s != serial {
		t.Errorf("serial %d -> %d for a recompile that changed nothing", serial, s)
	}
	// h03 loses a container: its instance leaves the list, the others stay.
	less := listedHost(3, 10000)
	less.Containers = less.Containers[1:]
	z.put("h03", less)
	delete(want, fmt.Sprintf(`w00\.h03.%s`, svcType))
	// Concurrent first uses join once; each sees the whole list.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if ans, _, _, _ := z.Lookup(svcType, dns.TypePTR); len(ans) != len(want) {
				t.Errorf("concurrent first use: %d PTRs, want %d", len(ans), len(want))
			}
		})
	}
	wg.Wait()
	if got := ptrs(); !maps.Equal(got, want) {
		t.Errorf("after h03 lost w00: %d records, want %d", len(got), len(want))
	}
	if s := z.SOA().Serial; s == serial {
		t.Error("serial unchanged by a real change")
	}
	if n := z.Records(); n <= int64(len(want)) {
		t.Errorf("records indexed %d, want more than the %d PTRs", n, len(want))
	}
	_, records := z.snapshot()
	inXfr := 0
	for _, rr := range records {
		if rr.Header().Name == svcType && rr.Header().Rrtype == dns.TypePTR {
			inXfr++
		}
	}
	if inXfr != len(want) {
		t.Errorf("zone transfer has %d PTRs of %s, want %d", inXfr, svcType, len(want))
	}
}
