package berth_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthdns/berth/internal/testenv"
	berth "github.com/berthdns/berth/plugin"
	"github.com/berthdns/berth/record"
	"github.com/hashicorp/consul/api"
	"github.com/miekg/dns"
)

// The hidden-primary tests run corefile-examples/hidden-primary.Corefile
// with a real BIND 9 as its secondary: named started by the test on a
// loopback port with a configuration folder of its own.

// hiddenPrimary starts Consul (seeded), berth with the hidden-primary
// example whose `to` line names a BIND secondary's port, and that
// secondary; it returns once the secondary has the zone at berth's serial.
func hiddenPrimary(t *testing.T) (*testenv.Consul, *testenv.CoreDNS, *testenv.BINDSecondary) {
	t.Helper()
	testenv.NamedBinary(t)
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	seed(t, consul.Client().KV())
	ports := testenv.FreePorts(t, 3)
	secondary := "127.0.0.1:" + strconv.Itoa(ports[0])
	corefile := example(t, "hidden-primary.Corefile",
		"to 192.0.2.63 192.0.2.64", "to "+secondary,
		"127.0.0.1:9153", "127.0.0.1:"+strconv.Itoa(ports[1]), "127.0.0.1:8181", "127.0.0.1:"+strconv.Itoa(ports[2]))
	primary := testenv.StartCoreDNS(t, corefile, "CONSUL_HTTP_ADDR="+consul.HTTP)
	waitLoaded(t, primary.Addr, e2eZone)
	bind := testenv.StartBINDSecondary(t, e2eZone, primary.Addr, ports[0])
	testenv.Eventually(t, berth.SecondaryChangeWait, "the secondary loads the zone", func() error {
		return sameSerial(t, primary.Addr, bind.Addr)
	})
	return consul, primary, bind
}

// TestHiddenPrimaryBINDSecondary proves a standard secondary follows berth:
// it loads the zone, answers a change made in Consul within seconds (its
// SOA refresh is five minutes: only a NOTIFY explains it) after an IXFR of
// the difference alone, and stays current when berth restarts after a
// burst of 300 changes (the serial is the data's, so the restart does not
// take it back).
func TestHiddenPrimaryBINDSecondary(t *testing.T) {
	consul, primary, bind := hiddenPrimary(t)
	kv := consul.Client().KV()
	if r := exchange(t, "udp", bind.Addr, "_80._tcp.web.shop."+e2eZone, dns.TypeSRV, 0); len(r.Answer) != 1 || r.Answer[0].(*dns.SRV).Port != 32768 {
		t.Fatalf("secondary: SRV of web.shop %v, want port 32768", r.Answer)
	}
	if r := exchange(t, "udp", bind.Addr, e2eZone, dns.TypeSOA, 0); len(r.Answer) != 1 || r.Answer[0].(*dns.SOA).Refresh != 300 {
		t.Fatalf("secondary's SOA %v, want the example's refresh of 300 s", r.Answer)
	}

	// A change: a second web instance on host1.
	before := serialOf(t, primary.Addr)
	axfr := transferIn(t, primary.Addr, 0)
	mark := len(primary.Output())
	addWeb(t, kv, 2, 32769)
	testenv.Eventually(t, berth.SecondaryChangeWait, "the secondary answers the change", srvPorts(bind.Addr, "web.shop."+e2eZone, 32768, 32769))
	after := serialOf(t, primary.Addr)
	// The secondary took an incremental transfer, not the zone: berth's
	// transfer plugin logs each transfer's record count.
	testenv.Eventually(t, testenv.ZoneChangeWait, "the secondary's transfer in berth's log", func() error {
		n := lastOutgoingTransfer(primary.Output()[mark:])
		if n == 0 || n >= len(axfr)/4 {
			return fmt.Errorf("the secondary's transfer had %d records (the zone has %d): not an IXFR", n, len(axfr))
		}
		return nil
	})

	// What berth sends for that change is its difference: one container's
	// records came, none went.
	ixfr := transferIn(t, primary.Addr, before)
	if len(ixfr) < 4 || ixfr[1].Header().Rrtype != dns.TypeSOA {
		t.Fatalf("IXFR from %d: %d records, want an incremental transfer (SOA, SOA, ...)", before, len(ixfr))
	}
	var added []dns.RR
	deleting := true
	for _, rr := range ixfr[2 : len(ixfr)-1] {
		if soa, ok := rr.(*dns.SOA); ok {
			deleting = soa.Serial != after
			continue
		}
		if deleting {
			t.Errorf("IXFR deletes %v; the change only added an instance", rr)
		} else {
			added = append(added, rr)
		}
	}
	for _, rr := range added {
		if s := rr.String(); !strings.Contains(s, "web-2") && !strings.Contains(s, " 32769 ") {
			t.Errorf("IXFR adds %v, which is not web-2's", rr)
		}
	}
	if len(added) == 0 || len(ixfr) > len(axfr)/4 {
		t.Errorf("IXFR: %d records (%d added) against the AXFR's %d", len(ixfr), len(added), len(axfr))
	}

	// A burst of 300 changes, then berth restarts: the secondary must go on
	// following (the old serial ran ahead of the clock in a burst and a
	// restart took it back).
	for i := range 300 {
		addWeb(t, kv, 100+i%20, 33000+i)
	}
	// Berth must have read the burst's last change before it restarts (the
	// secondary being at berth's serial says nothing of that): else the
	// restart reads newer data than berth served, and rightly serves it
	// at a newer serial.
	burst := hostListIndex(t, kv)
	testenv.Eventually(t, berth.SecondaryChangeWait, "berth and the secondary follow the burst", func() error {
		if s := serialOf(t, primary.Addr); s != burst {
			return fmt.Errorf("berth at serial %d, Consul at %d", s, burst)
		}
		return sameSerial(t, primary.Addr, bind.Addr)
	})
	primary.Restart(t)
	waitLoaded(t, primary.Addr, e2eZone)
	if s := serialOf(t, primary.Addr); s != burst {
		t.Fatalf("serial %d after the restart, %d before: the same data must keep its serial", s, burst)
	}
	addWeb(t, kv, 3, 32770)
	testenv.Eventually(t, berth.SecondaryChangeWait, "the secondary answers a change after the restart", srvPorts(bind.Addr, "web-3.host1.hosts."+e2eZone, 32770))
	testenv.Eventually(t, testenv.ZoneChangeWait, "the secondary at berth's serial", func() error { return sameSerial(t, primary.Addr, bind.Addr) })
	if strings.Contains(bind.Log(), "received from primary") && strings.Contains(bind.Log(), "< ours") {
		t.Errorf("the secondary saw the serial go backwards:\n%s", bind.Log())
	}
}

// TestTwoPrimariesOneSerial proves two berth servers on one Consul serve one
// serial for the same data, Consul's index of the host list, through
// changes.
func TestTwoPrimariesOneSerial(t *testing.T) {
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	kv := consul.Client().KV()
	seed(t, kv)
	ns1 := testenv.StartCoreDNS(t, example(t, "minimal.Corefile"), "CONSUL_HTTP_ADDR="+consul.HTTP)
	addWeb(t, kv, 2, 32769)
	ns2 := testenv.StartCoreDNS(t, example(t, "minimal.Corefile"), "CONSUL_HTTP_ADDR="+consul.HTTP)
	waitLoaded(t, ns1.Addr, e2eZone)
	waitLoaded(t, ns2.Addr, e2eZone)
	for round := range 5 {
		addWeb(t, kv, 10+round, 34000+round)
		want := hostListIndex(t, kv)
		testenv.Eventually(t, testenv.ZoneChangeWait, fmt.Sprintf("round %d: both at Consul's index %d", round, want), func() error {
			a, b := serialOf(t, ns1.Addr), serialOf(t, ns2.Addr)
			if a != want || b != want {
				return fmt.Errorf("ns1 serves %d, ns2 %d", a, b)
			}
			return nil
		})
	}
}

// addWeb writes container web-<n> of service web.shop on host1 with host
// port hostPort, and host1's document with a new rev, in one transaction as
// an exporter does.
func addWeb(t *testing.T, kv *api.KV, n, hostPort int) {
	t.Helper()
	addr := netip.MustParseAddr("192.0.2.10")
	id := fmt.Sprintf("%064x", 0xa000+n)
	ctr, err := json.Marshal(record.Container{V: 1, ID: id, Name: "web-" + strconv.Itoa(n), Service: "web.shop",
		Image: "nginx:1.27", Health: record.HealthHealthy, Priority: 10, Weight: 10,
		Ports: []record.Port{{Port: 80, Proto: "tcp", Name: "http", Addr: addr, HostPort: hostPort}}})
	if err != nil {
		t.Fatal(err)
	}
	host, err := json.Marshal(record.Host{V: 1, Name: "host1", Addrs: []netip.Addr{addr}, Rev: uint64(time.Now().UnixNano())})
	if err != nil {
		t.Fatal(err)
	}
	ok, resp, _, err := kv.Txn(api.KVTxnOps{
		{Verb: api.KVSet, Key: record.ContainerKey("berth", "host1", id), Value: ctr},
		{Verb: api.KVSet, Key: record.HostKey("berth", "host1"), Value: host},
	}, nil)
	if err != nil || !ok {
		t.Fatalf("consul txn: ok=%v err=%v %+v", ok, err, resp)
	}
}

// hostListIndex is Consul's index of layout 1's host list, which is the
// serial berth serves once it has read every change (see Zone.nextSerial).
func hostListIndex(t *testing.T, kv *api.KV) uint32 {
	t.Helper()
	_, meta, err := kv.List(record.HostsPrefix("berth"), nil)
	if err != nil {
		t.Fatal(err)
	}
	return uint32(meta.LastIndex)
}

func serialOf(t *testing.T, addr string) uint32 {
	t.Helper()
	r := exchange(t, "tcp", addr, e2eZone, dns.TypeSOA, 0)
	if len(r.Answer) != 1 {
		t.Fatalf("SOA from %s: %v", addr, r)
	}
	return r.Answer[0].(*dns.SOA).Serial
}

func sameSerial(t *testing.T, primary, secondary string) error {
	r := exchange(t, "tcp", secondary, e2eZone, dns.TypeSOA, 0)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		return fmt.Errorf("secondary: SOA %s", dns.RcodeToString[r.Rcode])
	}
	if p, s := serialOf(t, primary), r.Answer[0].(*dns.SOA).Serial; p != s {
		return fmt.Errorf("primary at serial %d, secondary at %d", p, s)
	}
	return nil
}

// srvPorts is a condition: name's SRV answer from addr has exactly ports.
func srvPorts(addr, name string, ports ...int) func() error {
	return func() error {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeSRV)
		r, _, err := (&dns.Client{Net: "tcp", Timeout: testenv.QueryTimeout}).Exchange(m, addr)
		if err != nil {
			return err
		}
		got := map[int]bool{}
		for _, rr := range r.Answer {
			got[int(rr.(*dns.SRV).Port)] = true
		}
		for _, p := range ports {
			if !got[p] {
				return fmt.Errorf("%s SRV from %s: ports %v, want %v", name, addr, got, ports)
			}
		}
		if len(got) != len(ports) {
			return fmt.Errorf("%s SRV from %s: ports %v, want %v", name, addr, got, ports)
		}
		return nil
	}
}

// transferIn makes an AXFR (serial 0) or an IXFR from serial.
func transferIn(t *testing.T, addr string, serial uint32) []dns.RR {
	t.Helper()
	m := new(dns.Msg)
	if serial == 0 {
		m.SetAxfr(e2eZone)
	} else {
		m.SetIxfr(e2eZone, serial, "ns.", "hostmaster.")
	}
	env, err := (&dns.Transfer{}).In(m, addr)
	if err != nil {
		t.Fatal(err)
	}
	var rrs []dns.RR
	for e := range env {
		if e.Error != nil {
			t.Fatalf("transfer from serial %d: %v", serial, e.Error)
		}
		rrs = append(rrs, e.RR...)
	}
	return rrs
}

var outgoing = regexp.MustCompile(`Outgoing transfer of (\d+) records`)

// lastOutgoingTransfer is the record count of the last transfer CoreDNS's
// transfer plugin logged.
func lastOutgoingTransfer(log string) int {
	all := outgoing.FindAllStringSubmatch(log, -1)
	if len(all) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(all[len(all)-1][1])
	return n
}

// TestNotifyCoalesced proves berth notifies its secondaries at start-up and
// after changes, and that a burst of changes is coalesced: far fewer
// NOTIFYs than changes (at most one per 250 ms round and one more), yet the
// last change is notified: a NOTIFY arrives after it at whose time berth
// serves the final serial. The secondary is a DNS server of the test's own
// that counts NOTIFYs.
func TestNotifyCoalesced(t *testing.T) {
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	kv := consul.Client().KV()
	seed(t, kv)
	var (
		mu       sync.Mutex
		notifies []time.Time
	)
	sec := &dns.Server{Addr: "127.0.0.1:0", Net: "udp", Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		if r.Opcode == dns.OpcodeNotify {
			mu.Lock()
			notifies = append(notifies, time.Now())
			mu.Unlock()
		}
		m := new(dns.Msg)
		m.SetReply(r)
		w.WriteMsg(m)
	})}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sec.PacketConn = pc
	go sec.ActivateAndServe()
	t.Cleanup(func() { sec.Shutdown() })
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(notifies) }

	corefile := example(t, "hidden-primary.Corefile", "to 192.0.2.63 192.0.2.64", "to "+pc.LocalAddr().String(),
		"prometheus 127.0.0.1:9153", "", "ready 127.0.0.1:8181", "")
	primary := testenv.StartCoreDNS(t, corefile, "CONSUL_HTTP_ADDR="+consul.HTTP)
	waitLoaded(t, primary.Addr, e2eZone)
	testenv.Eventually(t, testenv.ZoneChangeWait, "a NOTIFY at start-up", func() error {
		if count() == 0 {
			return fmt.Errorf("none")
		}
		return nil
	})

	const changes = 200
	before := count()
	start := time.Now()
	for i := range changes {
		addWeb(t, kv, 200+i, 35000+i)
	}
	last := time.Now()
	final := hostListIndex(t, kv)
	testenv.Eventually(t, testenv.ZoneChangeWait+berth.NotifyGap, "a NOTIFY after the last change, at the final serial", func() error {
		mu.Lock()
		n := len(notifies)
		at := notifies[n-1]
		mu.Unlock()
		if !at.After(last) {
			return fmt.Errorf("the last NOTIFY came before the last change")
		}
		if s := serialOf(t, primary.Addr); s != final {
			return fmt.Errorf("berth at serial %d, Consul at %d", s, final)
		}
		return nil
	})
	sent := count() - before
	rounds := int(time.Since(start)/berth.NotifyGap) + 2
	if sent >= changes || sent > rounds {
		t.Errorf("%d changes sent %d NOTIFYs in %v; want them coalesced to at most one per 250 ms (%d)", changes, sent, time.Since(start), rounds)
	}
	t.Logf("%d changes in %v: %d NOTIFYs", changes, last.Sub(start).Round(time.Millisecond), sent)
}
