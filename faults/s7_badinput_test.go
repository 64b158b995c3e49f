package faults

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/miekg/dns"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
)

// Scenario 7. Injects: hostile KV documents written straight into Consul
// (invalid JSON, huge values, wrong types, names with dots, escapes and
// non-ASCII, ports 0 and 70000, addresses that are not addresses, host
// documents that claim another host, garbage over valid documents),
// hostile container labels read by the exporter, and DNS queries of every
// type and class, malformed names and packets and EDNS0 edge sizes over UDP
// and TCP. Must hold: CoreDNS and the exporter never crash; nothing hostile
// is ever answered (the whole zone, read by AXFR, holds only records of
// valid documents); the last valid version of an overwritten document keeps
// being served; every rejected document is counted in
// coredns_berth_invalid_records_total; every answer parses, matches its
// query and fits its transport.
func TestFault7BadInput(t *testing.T) {
	w := newWorld(t)
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	w.useConsul(consul.HTTP)
	kv := w.consul.KV()
	seedBaseline(t, kv)
	w.startCoreDNS("")
	waitSRV(t, w, "web-1.good.hosts."+zone, 32768)

	var kvRejected, kvCounted int
	t.Run("KVDocuments", func(t *testing.T) { kvRejected, kvCounted = badDocuments(t, w, kv) })
	var skipped, published int
	t.Run("ContainerLabels", func(t *testing.T) { skipped, published = hostileLabels(t, w) })
	st := &dnsStats{}
	t.Run("DNSQueries", func(t *testing.T) { st = hostileQueries(t, w) })

	if w.dns.Exited() {
		t.Fatalf("CoreDNS exited:\n%s", w.dns.Output())
	}
	fault(t, 7, "kv_rejected", kvRejected, "kv_rejections_counted", kvCounted,
		"labels_published", published, "labels_skipped_counted", skipped,
		"dns_queries", st.queries.Load(), "dns_bad_answers", st.bad.Load(), "dns_no_reply", st.noReply.Load(),
		"dns_rcodes", st.rcodeSummary(), "coredns_crashes", boolInt(w.dns.Exited()))
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

var (
	goodAddr = netip.MustParseAddr("192.0.2.10")
	bigAddr  = netip.MustParseAddr("192.0.2.20")
)

func idOf(n int) string { return fmt.Sprintf("%064x", n) }

// seedBaseline writes host "good" (web-1 and db-1) and host "big" (60
// instances of service big, an answer too large for 512 bytes).
func seedBaseline(t testing.TB, kv *api.KV) {
	t.Helper()
	testenv.PutJSON(t, kv, record.ContainerKey(prefix, "good", idOf(0xa1)), goodDoc(0xa1, "web-1", "web.shop", 32768))
	testenv.PutJSON(t, kv, record.ContainerKey(prefix, "good", idOf(0xb1)), goodDoc(0xb1, "db-1", "db.shop", 32769))
	testenv.PutJSON(t, kv, record.HostKey(prefix, "good"), record.Host{V: 1, Name: "good", Addrs: []netip.Addr{goodAddr}, Rev: 1})
	for i := range 60 {
		testenv.PutJSON(t, kv, record.ContainerKey(prefix, "big", idOf(0x1000+i)), record.Container{V: 1, ID: idOf(0x1000 + i),
			Name: "big-" + strconv.Itoa(i), Service: "big", Image: "app", Health: record.HealthNone, Priority: 10, Weight: 10,
			Ports: []record.Port{{Port: 8080, Proto: "tcp", Addr: bigAddr, HostPort: 40000 + i}}})
	}
	testenv.PutJSON(t, kv, record.HostKey(prefix, "big"), record.Host{V: 1, Name: "big", Addrs: []netip.Addr{bigAddr}, Rev: 1})
}

func goodDoc(n int, name, service string, hostPort int) record.Container {
	return record.Container{V: 1, ID: idOf(n), Name: name, Service: service, Image: "nginx:1.27",
		Health: record.HealthHealthy, Priority: 10, Weight: 10,
		Ports: []record.Port{{Port: 80, Proto: "tcp", Name: "http", Addr: goodAddr, HostPort: hostPort}}}
}

func waitSRV(t *testing.T, w *world, name string, ports ...int) {
	t.Helper()
	sort.Ints(ports)
	var got []int
	if _, ok := waitFor(testenv.ZoneChangeWait, func() bool {
		got, _, _ = w.dnsPorts(name)
		return equalInts(got, ports)
	}); !ok {
		t.Fatalf("%s: SRV ports %v, want %v", name, got, ports)
	}
}

// docCase is one hostile (or surprising but valid) document.
type docCase struct {
	name   string
	key    string // relative to the prefix; default containers/good/<id>
	value  []byte
	reject bool   // the plugin must skip and count it
	ignore bool   // not a document the plugin reads at all (wrong key shape)
	serve  string // for a valid case: a name that must answer afterwards
}

// mutate returns a valid container document (id n, name evilN unless the
// mutation sets it) as a JSON object with f applied.
func mutate(n int, f func(m map[string]any)) []byte {
	m := map[string]any{"v": 1, "id": idOf(n), "name": fmt.Sprintf("evil%d", n), "service": fmt.Sprintf("evil%d.shop", n),
		"image": "img", "health": "healthy", "paused": false, "priority": 10, "weight": 10,
		"ports": []any{map[string]any{"port": 80, "proto": "tcp", "name": "http", "addr": "192.0.2.66", "host_port": 31000 + n}}}
	if f != nil {
		f(m)
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

func port0(m map[string]any) map[string]any { return m["ports"].([]any)[0].(map[string]any) }

func hostileDocs() []docCase {
	var cs []docCase
	n := 0x100
	add := func(name string, reject bool, f func(m map[string]any)) {
		n++
		cs = append(cs, docCase{name: name, key: "containers/good/" + idOf(n), value: mutate(n, f), reject: reject})
	}
	raw := func(name string, v []byte) {
		n++
		cs = append(cs, docCase{name: name, key: "containers/good/" + idOf(n), value: v, reject: true})
	}
	raw("not JSON", []byte("{"))
	raw("null", []byte("null"))
	raw("array", []byte("[]"))
	raw("string", []byte(`"x"`))
	raw("number", []byte("42"))
	raw("empty value", nil)
	raw("BOM", append([]byte("\xef\xbb\xbf"), mutate(1, nil)...))
	raw("invalid UTF-8", []byte("{\"v\":1,\"name\":\"\xff\xfe\"}"))
	raw("deep nesting", []byte(`{"v":1,"x":`+strings.Repeat("[", 20000)+strings.Repeat("]", 20000)+`}`))
	raw("trailing garbage", append(mutate(2, nil), []byte(" {}")...))
	raw("duplicate key, last invalid", []byte(strings.Replace(string(mutate(3, nil)), `"name":"evil3"`, `"name":"evil3","name":"Evil.3"`, 1)))
	add("no v", true, func(m map[string]any) { delete(m, "v") })
	add("v as string", true, func(m map[string]any) { m["v"] = "1" })
	add("v 2", true, func(m map[string]any) { m["v"] = 2 })
	add("v 0", true, func(m map[string]any) { m["v"] = 0 })
	add("v 1.5", true, func(m map[string]any) { m["v"] = 1.5 })
	add("huge value", true, func(m map[string]any) { m["pad"] = strings.Repeat("x", record.MaxDocumentSize+1) })
	add("ports as string", true, func(m map[string]any) { m["ports"] = "80" })
	add("ports null", true, func(m map[string]any) { m["ports"] = nil })
	add("ports empty", true, func(m map[string]any) { m["ports"] = []any{} })
	add("port as string", true, func(m map[string]any) { port0(m)["port"] = "80" })
	add("port float", true, func(m map[string]any) { port0(m)["port"] = 80.5 })
	add("port 0", true, func(m map[string]any) { port0(m)["port"] = 0 })
	add("port 70000", true, func(m map[string]any) { port0(m)["port"] = 70000 })
	add("port -1", true, func(m map[string]any) { port0(m)["port"] = -1 })
	add("port 2^64", true, func(m map[string]any) { port0(m)["port"] = json.Number("18446744073709551617") })
	add("host_port 0", true, func(m map[string]any) { port0(m)["host_port"] = 0 })
	add("host_port 70000", true, func(m map[string]any) { port0(m)["host_port"] = 70000 })
	add("proto icmp", true, func(m map[string]any) { port0(m)["proto"] = "icmp" })
	add("proto TCP", true, func(m map[string]any) { port0(m)["proto"] = "TCP" })
	add("port name with dot", true, func(m map[string]any) { port0(m)["name"] = "a.b" })
	add("port name _x", true, func(m map[string]any) { port0(m)["name"] = "_x" })
	add("name with dots", true, func(m map[string]any) { m["name"] = "evil.x" })
	add("name upper case", true, func(m map[string]any) { m["name"] = "Evil" })
	add("name NUL", true, func(m map[string]any) { m["name"] = "evil\x00x" })
	add("name escape", true, func(m map[string]any) { m["name"] = `evil\.x` })
	add("name non-ASCII", true, func(m map[string]any) { m["name"] = "évil" })
	add("name _x", true, func(m map[string]any) { m["name"] = "_evil" })
	add("name 64 octets", true, func(m map[string]any) { m["name"] = "evil" + strings.Repeat("x", 60) })
	add("name empty", true, func(m map[string]any) { m["name"] = "" })
	add("name number", true, func(m map[string]any) { m["name"] = 7 })
	add("name leading dash", true, func(m map[string]any) { m["name"] = "-evil" })
	add("service a..b", true, func(m map[string]any) { m["service"] = "evil..b" })
	add("service trailing dot", true, func(m map[string]any) { m["service"] = "evil." })
	add("service ends in hosts", true, func(m map[string]any) { m["service"] = "evil.hosts" })
	add("service 300 octets", true, func(m map[string]any) { m["service"] = strings.Repeat("evil.", 60) })
	add("service with slash", true, func(m map[string]any) { m["service"] = "../../hosts/evil" })
	add("service non-ASCII", true, func(m map[string]any) { m["service"] = "ëvil.shop" })
	add("addr not an address", true, func(m map[string]any) { port0(m)["addr"] = "not-an-address" })
	add("addr host name", true, func(m map[string]any) { port0(m)["addr"] = "example.com" })
	add("addr 999.1.1.1", true, func(m map[string]any) { port0(m)["addr"] = "999.1.1.1" })
	add("addr 0.0.0.0", true, func(m map[string]any) { port0(m)["addr"] = "0.0.0.0" })
	add("addr ::", true, func(m map[string]any) { port0(m)["addr"] = "::" })
	add("addr multicast", true, func(m map[string]any) { port0(m)["addr"] = "224.0.0.1" })
	add("addr with zone", true, func(m map[string]any) { port0(m)["addr"] = "fe80::1%eth0" })
	add("addr empty", true, func(m map[string]any) { port0(m)["addr"] = "" })
	add("addr number", true, func(m map[string]any) { port0(m)["addr"] = 3221225985 })
	add("addr CIDR", true, func(m map[string]any) { port0(m)["addr"] = "192.0.2.1/24" })
	add("health dead", true, func(m map[string]any) { m["health"] = "dead" })
	add("priority 70000", true, func(m map[string]any) { m["priority"] = 70000 })
	add("weight -1", true, func(m map[string]any) { m["weight"] = -1 })
	add("paused as string", true, func(m map[string]any) { m["paused"] = "yes" })
	add("image with newline", true, func(m map[string]any) { m["image"] = "img\nx" })
	add("image 300 octets", true, func(m map[string]any) { m["image"] = strings.Repeat("i", 300) })
	n++
	upper := "abcdef" + idOf(n)[6:]
	cs = append(cs, docCase{name: "id upper case", key: "containers/good/" + upper, reject: true,
		value: mutate(n, func(m map[string]any) { m["id"] = strings.ToUpper(upper) })})
	add("id not the key's", true, func(m map[string]any) { m["id"] = idOf(0xa1) })
	add("id short", true, func(m map[string]any) { m["id"] = "abc" })
	// Surprising but valid: must be served, normalized.
	n++
	cs = append(cs, docCase{name: "mapped IPv6 address", key: "containers/good/" + idOf(n), serve: "mapped.good.hosts." + zone,
		value: mutate(n, func(m map[string]any) {
			m["name"], m["service"] = "mapped", "mapped.shop"
			port0(m)["addr"] = "::ffff:192.0.2.77"
		})})
	n++
	cs = append(cs, docCase{name: "unknown fields", key: "containers/good/" + idOf(n), serve: "extra.good.hosts." + zone,
		value: mutate(n, func(m map[string]any) {
			m["name"], m["service"] = "extra", "extra.shop"
			m["future"] = map[string]any{"x": []int{1}}
		})})
	// Keys of the wrong shape: never read as documents.
	cs = append(cs,
		docCase{name: "deeper key", key: "containers/good/" + idOf(0x1ff) + "/deeper", value: mutate(0x1ff, nil), ignore: true},
		// Consul cleans the path: this lands at <prefix>/hosts/evil, as a
		// host document without addrs, and must be rejected as one.
		docCase{name: "dot-dot key", key: "containers/../hosts/evil", value: mutate(0x1fe, nil), reject: true},
		docCase{name: "container of a host without document", key: "containers/nohost/" + idOf(0x1fd), value: mutate(0x1fd, nil), ignore: true},
	)
	// Host documents.
	host := func(name, key string, reject bool, v []byte) {
		cs = append(cs, docCase{name: name, key: "hosts/" + key, value: v, reject: reject})
	}
	hdoc := func(name string, f func(m map[string]any)) []byte {
		m := map[string]any{"v": 1, "name": name, "addrs": []string{"192.0.2.99"}, "rev": 1}
		if f != nil {
			f(m)
		}
		b, _ := json.Marshal(m)
		return b
	}
	host("host: not JSON", "evilh1", true, []byte("{"))
	host("host: claims another host's name", "evilh2", true, hdoc("good", nil))
	host("host: no addrs", "evilh3", true, hdoc("evilh3", func(m map[string]any) { m["addrs"] = []string{} }))
	host("host: addr not an address", "evilh4", true, hdoc("evilh4", func(m map[string]any) { m["addrs"] = []string{"nope"} }))
	host("host: addr 0.0.0.0", "evilh5", true, hdoc("evilh5", func(m map[string]any) { m["addrs"] = []string{"0.0.0.0"} }))
	host("host: upper case", "Evilh6", true, hdoc("Evilh6", nil))
	host("host: deeper key", "evilh7/x", true, hdoc("x", nil))
	host("host: v 2", "evilh8", true, hdoc("evilh8", func(m map[string]any) { m["v"] = 2 }))
	host("host: rev -1", "evilh9", true, hdoc("evilh9", func(m map[string]any) { m["rev"] = -1 }))
	host("host: huge", "evilh10", true, hdoc("evilh10", func(m map[string]any) { m["pad"] = strings.Repeat("x", 70000) }))
	host("host: name with dot", "evilh11", true, hdoc("evil.h11", nil))
	return cs
}

// badDocuments writes the hostile documents and checks the plugin skips and
// counts each, answers nothing of them, and loses nothing valid.
func badDocuments(t *testing.T, w *world, kv *api.KV) (rejected, counted int) {
	cases := hostileDocs()
	before, err := scrape("http://" + w.promAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		// The record package is the plugin's validator: check that it
		// agrees with what this case expects.
		if !c.ignore && strings.HasPrefix(c.key, "containers/") {
			_, id, _ := strings.Cut(strings.TrimPrefix(c.key, "containers/good/"), "/")
			_ = id
			d, err := record.DecodeContainer(prefix+"/"+c.key, c.value)
			if err == nil && d.ID != strings.TrimPrefix(c.key, "containers/good/") {
				err = errors.New("id does not match key")
			}
			if (err != nil) != c.reject {
				t.Errorf("%s: record.DecodeContainer error %v, but the case expects reject=%v", c.name, err, c.reject)
			}
		}
		if _, err := kv.Put(&api.KVPair{Key: prefix + "/" + c.key, Value: c.value}, nil); err != nil {
			t.Fatalf("%s: put: %v", c.name, err)
		}
		if c.reject {
			rejected++
		}
	}
	// Bump good's rev so that the plugin re-reads its containers.
	bump := func(rev uint64) {
		b, _ := json.Marshal(record.Host{V: 1, Name: "good", Addrs: []netip.Addr{goodAddr}, Rev: rev})
		if _, err := kv.Put(&api.KVPair{Key: record.HostKey(prefix, "good"), Value: b}, nil); err != nil {
			t.Fatal(err)
		}
	}
	bump(2)
	for _, c := range cases {
		if c.serve != "" {
			waitSRV(t, w, c.serve, 31000+int(mustHexTail(c.key)))
		}
	}
	// Garbage over valid documents: the last valid version stays served.
	for _, k := range []string{record.ContainerKey(prefix, "good", idOf(0xa1)), record.HostKey(prefix, "big")} {
		if _, err := kv.Put(&api.KVPair{Key: k, Value: []byte(`{"v":1,"name":"Garbage!"}`)}, nil); err != nil {
			t.Fatal(err)
		}
		rejected++
	}
	bump(3)

	var after map[string]float64
	if _, ok := waitFor(testenv.ZoneChangeWait, func() bool {
		after, err = scrape("http://" + w.promAddr + "/metrics")
		counted = int(delta(before, after, `coredns_berth_invalid_records_total{reason="invalid"}`) +
			delta(before, after, `coredns_berth_invalid_records_total{reason="version"}`))
		return err == nil && counted >= rejected
	}); !ok {
		t.Errorf("rejections counted: %d, want %d (hostile documents written)", counted, rejected)
	}
	// Let a few more watch rounds pass, then count again: each rejection
	// is counted once, not once per reload.
	time.Sleep(recountAfter)
	after, _ = scrape("http://" + w.promAddr + "/metrics")
	counted = int(delta(before, after, `coredns_berth_invalid_records_total{reason="invalid"}`) +
		delta(before, after, `coredns_berth_invalid_records_total{reason="version"}`))
	if counted != rejected {
		t.Errorf("rejections counted: %d, want exactly %d", counted, rejected)
	}
	t.Logf("%d hostile documents rejected, %d counted; by reason: invalid %v, version %v", rejected, counted,
		delta(before, after, `coredns_berth_invalid_records_total{reason="invalid"}`),
		delta(before, after, `coredns_berth_invalid_records_total{reason="version"}`))

	// Nothing lost, nothing hostile answered.
	waitSRV(t, w, "web-1.good.hosts."+zone, 32768)
	waitSRV(t, w, "db-1.good.hosts."+zone, 32769)
	if r, err := testenv.Exchange("udp", w.dns.Addr, "big."+zone, dns.TypeSRV, 4096); err != nil || len(r.Answer) != 60 {
		t.Errorf("big: want 60 SRV after its host document was overwritten with garbage, got %v %v", r, err)
	}
	for _, name := range []string{"evilh2.hosts." + zone, "x.hosts." + zone, "evil.hosts." + zone, "nohost.hosts." + zone} {
		if r, err := testenv.Exchange("udp", w.dns.Addr, name, dns.TypeA, 0); err != nil || wantNX(r) != nil {
			t.Errorf("%s: want NXDOMAIN, got %v %v", name, r, err)
		}
	}
	r, err := testenv.Exchange("udp", w.dns.Addr, "good.hosts."+zone, dns.TypeA, 0)
	if err != nil || wantA(goodAddr.String())(r) != nil {
		t.Errorf("good.hosts: want only %s (a host document claiming its name must not change it), got %v %v", goodAddr, r, err)
	}
	checkZone(t, w, map[string]bool{goodAddr.String(): true, bigAddr.String(): true, "192.0.2.66": true, "192.0.2.77": true})
	return rejected, counted
}

// hostileName matches the names of the hostile documents (evil<n>,
// evilh<n>), none of which may ever be answered.
var hostileName = regexp.MustCompile(`evil(h)?[0-9]`)

func mustHexTail(key string) int64 {
	i := strings.LastIndexByte(key, '/')
	n, _ := strconv.ParseInt(key[i+1:], 16, 64)
	return n
}

func delta(before, after map[string]float64, series string) float64 {
	return after[series] - before[series]
}

// axfr reads the whole zone.
func axfr(t *testing.T, addr string) []dns.RR {
	t.Helper()
	m := new(dns.Msg)
	m.SetAxfr(zone)
	tr := &dns.Transfer{}
	env, err := tr.In(m, addr)
	if err != nil {
		t.Fatalf("AXFR: %v", err)
	}
	var rrs []dns.RR
	for e := range env {
		if e.Error != nil {
			t.Fatalf("AXFR: %v", e.Error)
		}
		rrs = append(rrs, e.RR...)
	}
	return rrs
}

// settledZone's two transfers are settleApart apart, a span in which a
// plugin still applying a change moves the serial (its rounds follow a
// change in milliseconds; testenv.ZoneChangeWait bounds one), and it tries
// settleChecks times: as many spans as fill ZoneChangeWait, a zone that
// moves for longer than one change round being still written to.
const (
	settleApart  = time.Second
	settleChecks = int(testenv.ZoneChangeWait / settleApart)
)

// recountAfter is how long the bad-document case lets the watcher reload
// before it counts the rejections again: not a wait for a condition but a
// span that must hold several watch rounds, each a few milliseconds when
// nothing changes, in which nothing may be counted twice.
const recountAfter = time.Second

// settledZone is the zone by AXFR once it holds still: KV can be complete
// while the plugin is still applying the last host's change, so wait until
// two transfers a second apart carry the same SOA serial.
func settledZone(t *testing.T, addr string) []dns.RR {
	t.Helper()
	serial := func(rrs []dns.RR) uint32 {
		if len(rrs) == 0 {
			t.Fatal("AXFR: empty transfer")
		}
		soa, ok := rrs[0].(*dns.SOA)
		if !ok {
			t.Fatalf("AXFR: starts with %v, not the SOA", rrs[0])
		}
		return soa.Serial
	}
	prev := axfr(t, addr)
	for range settleChecks {
		time.Sleep(settleApart)
		cur := axfr(t, addr)
		if serial(cur) == serial(prev) {
			return cur
		}
		prev = cur
	}
	t.Fatalf("the zone still changes after %v (serial %d)", time.Duration(settleChecks)*settleApart, serial(prev))
	return nil
}

// checkZone reads the settled zone by AXFR and checks every record: owner
// names of sanitized labels only (or _label, or the DNS-SD instance label
// x\.y), no name of a hostile document, addresses from addrs only,
// printable TXT.
func checkZone(t *testing.T, w *world, addrs map[string]bool) {
	t.Helper()
	rrs := settledZone(t, w.dns.Addr)
	bad := 0
	for _, rr := range rrs {
		name := rr.Header().Name
		why := ""
		if !dns.IsSubDomain(zone, name) {
			why = "outside the zone"
		}
		for _, l := range dns.SplitDomainName(strings.TrimSuffix(name, zone)) {
			l = strings.TrimPrefix(l, "_")
			for _, part := range strings.Split(l, `\.`) {
				if record.ValidLabel(part) != nil {
					why = fmt.Sprintf("label %q is not sanitized", l)
				}
			}
		}
		if hostileName.MatchString(name) {
			why = "name of a hostile document"
		}
		switch rr := rr.(type) {
		case *dns.A:
			if !addrs[rr.A.String()] {
				why = "address " + rr.A.String() + " of no valid document"
			}
		case *dns.AAAA:
			if !addrs[rr.AAAA.String()] {
				why = "address " + rr.AAAA.String() + " of no valid document"
			}
		case *dns.TXT:
			for _, s := range rr.Txt {
				for _, r := range s {
					if r < 0x20 || r > 0x7e {
						why = fmt.Sprintf("TXT %q not printable ASCII", s)
					}
				}
			}
		}
		if why != "" {
			bad++
			if bad <= 10 {
				t.Errorf("zone record %s: %s", rr, why)
			}
		}
	}
	t.Logf("AXFR: %d records checked, %d bad", len(rrs), bad)
}

// hostileLabels runs containers with hostile labels and names under an
// exporter, and checks that each is either published with a valid document
// under this host's own keys or skipped and counted, and that the zone
// holds only sanitized names.
func hostileLabels(t *testing.T, w *world) (skipped, published int) {
	longSvc := strings.Repeat("a.", 130) + "b"
	cases := []map[string]string{
		{"berth.service": "../../hosts/evil"},
		{"berth.service": "x.hosts"},
		{"berth.service": "hosts"},
		{"berth.service": "_sip._udp"},
		{"berth.service": longSvc},
		{"berth.service": "ÜNÏCÖDÉ.shop"},
		{"berth.service": "\x00\n\t"},
		{"berth.service": "a/b/c"},
		{"berth.service": "%2e%2e%2fhosts"},
		{"berth.service": " "},
		{"berth.service": "a\\.b"},
		{"berth.service": strings.Repeat("x", 64) + ".shop"},
		{"berth.port.80.name": "../x"},
		{"berth.port.80.name": strings.Repeat("p", 80)},
		{"berth.port.80.name": "_"},
		{"berth.priority": "-1"},
		{"berth.priority": "65536"},
		{"berth.weight": "abc"},
		{"berth.weight": "99999999999999999999"},
		{"berth.enable": "maybe"},
		{"com.docker.compose.service": "../evil", "com.docker.compose.project": "hosts"},
		{"com.docker.compose.service": "x", "com.docker.compose.project": strings.Repeat("p.", 150)},
	}
	exp := w.startExporter("127.0.0.1:"+strconv.Itoa(testenv.FreePort(t)), "--session-ttl", "10s")
	listen := strings.TrimPrefix(exp.Env[len(exp.Env)-1], "BERTH_LISTEN=")
	made := 0
	for i, labels := range cases {
		c, err := w.createContainer(fmt.Sprintf("lbl%d", i), labels)
		if err != nil {
			t.Logf("case %d %q: the engine refused the container: %v", i, labels, err)
			continue
		}
		if err := w.start(c); err != nil {
			t.Fatal(err)
		}
		made++
	}
	// A container name with dots and upper case (the engine allows them).
	if c, err := w.createContainer("Dots.In.Name", nil); err == nil {
		if err := w.start(c); err != nil {
			t.Fatal(err)
		}
		made++
	}

	var m map[string]float64
	var err error
	if _, ok := waitFor(w.servedWait(), func() bool {
		m, err = scrape("http://" + listen + "/metrics")
		return err == nil && int(m["berth_exporter_containers_seen"]) == made &&
			int(m["berth_exporter_containers_published"]+m["berth_exporter_containers_skipped"]) == made
	}); !ok {
		t.Fatalf("exporter saw %v/published %v/skipped %v of %d containers (%v)", m["berth_exporter_containers_seen"],
			m["berth_exporter_containers_published"], m["berth_exporter_containers_skipped"], made, err)
	}
	published, skipped = int(m["berth_exporter_containers_published"]), int(m["berth_exporter_containers_skipped"])
	for k, v := range m {
		if strings.HasPrefix(k, "berth_exporter_containers_skipped{") && v > 0 {
			t.Logf("%s %v", k, v)
		}
	}
	// Every key the exporter wrote is its own, and every document valid.
	var pairs api.KVPairs
	if _, ok := waitFor(w.servedWait(), func() bool {
		pairs, _, err = w.consul.KV().List(record.ContainersPrefix(prefix, w.host), nil)
		return err == nil && len(pairs) == published
	}); !ok {
		t.Fatalf("KV holds %d documents of %s, the exporter says %d published (%v)", len(pairs), w.host, published, err)
	}
	all, _, err := w.consul.KV().Keys(prefix+"/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range all {
		if strings.Contains(k, w.host) && k != record.HostKey(prefix, w.host) && !strings.HasPrefix(k, record.HostRevPrefix(prefix, w.host)) {
			if h, _, ok := record.HostFromContainerKey(prefix, k); !ok || h != w.host {
				t.Errorf("exporter wrote key %q outside its own records", k)
			}
		}
	}
	for _, p := range pairs {
		if _, err := record.DecodeContainer(p.Key, p.Value); err != nil {
			t.Errorf("exporter wrote an invalid document: %v", err)
		}
	}
	t.Logf("%d hostile containers: %d published, %d skipped and counted", made, published, skipped)
	// The zone: only sanitized names, addresses of valid documents.
	if _, ok := waitFor(w.servedWait(), func() bool {
		r, err := testenv.Exchange("udp", w.dns.Addr, hostName(w.host), dns.TypeA, 0)
		return err == nil && r.Rcode == dns.RcodeSuccess
	}); !ok {
		t.Fatal("the exporter's host is not in DNS")
	}
	checkZone(t, w, map[string]bool{goodAddr.String(): true, bigAddr.String(): true, "192.0.2.66": true,
		"192.0.2.77": true, w.net.Gateway.String(): true})
	if !exp.Running() {
		t.Error("the exporter exited")
	}
	return skipped, published
}

// dnsStats counts what the hostile queries got back.
type dnsStats struct {
	queries, bad, noReply atomic.Int64
	mu                    sync.Mutex
	rcodes                map[string]int
	samples               []string
}

func (s *dnsStats) rcode(r int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rcodes == nil {
		s.rcodes = map[string]int{}
	}
	name := dns.RcodeToString[r]
	if name == "" {
		name = strconv.Itoa(r)
	}
	s.rcodes[name]++
}

func (s *dnsStats) badf(format string, args ...any) {
	s.bad.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.samples) < 20 {
		s.samples = append(s.samples, fmt.Sprintf(format, args...))
	}
}

func (s *dnsStats) rcodeSummary() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var parts []string
	for k, v := range s.rcodes {
		parts = append(parts, fmt.Sprintf("%s:%d", k, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}
