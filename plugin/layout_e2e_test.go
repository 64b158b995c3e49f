package berth_test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berthdns/berth/exporter"
	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
	"github.com/hashicorp/consul/api"
	"github.com/miekg/dns"
)

// These tests prove the contract change of KV layout 2 (README.md#consul-kv)
// with the real pieces: the exporter's own Publisher writes the hosts, the
// built bin/coredns serves them, a real Consul agent holds them.

// fleet is a small fleet written through exporter.Publisher: services of
// three instances on three neighbouring hosts, one with an alias.
type fleet struct {
	client   *api.Client
	prefix   string
	hosts    int
	sessions []string
}

const fleetPerHost = 4

func (f *fleet) hostName(h int) string       { return fmt.Sprintf("node-%02d", h) }
func (f *fleet) hostAddr(h int) netip.Addr   { return netip.AddrFrom4([4]byte{192, 0, 2, byte(h + 1)}) }
func (f *fleet) service(h, c int) (int, int) { g := c*f.hosts + h; return g / 3, g % 3 }

// docs is host h's desired state.
func (f *fleet) docs(h int) map[string]*record.Container {
	out := map[string]*record.Container{}
	for c := range fleetPerHost {
		s, r := f.service(h, c)
		ctr := &record.Container{V: record.Version, ID: fmt.Sprintf("%064x", 0x10000+h*100+c),
			Name: fmt.Sprintf("svc-%d-%d", s, r), Service: fmt.Sprintf("svc-%d", s), Image: "app:1",
			Health: record.HealthHealthy, Priority: 10, Weight: 10, Tags: []string{"t" + fmt.Sprint(s%4)},
			Ports: []record.Port{{Port: 80, Proto: "tcp", Name: "http", Addr: f.hostAddr(h), HostPort: 30000 + c}}}
		if s%5 == 0 {
			ctr.Aliases = []string{fmt.Sprintf("alias-%d", s)}
		}
		out[ctr.ID] = ctr
	}
	return out
}

// publish writes host h in mode, as an exporter (re)started with
// --kv-layout mode does.
func (f *fleet) publish(t *testing.T, h int, mode record.WriteMode) {
	t.Helper()
	if f.sessions == nil {
		f.sessions = make([]string, f.hosts)
	}
	if f.sessions[h] == "" {
		id, _, err := f.client.Session().CreateNoChecks(&api.SessionEntry{Name: exporter.SessionName(f.hostName(h)),
			Behavior: api.SessionBehaviorDelete, TTL: "3600s", LockDelay: time.Millisecond}, nil) // not a wait: the session's settings
		if err != nil {
			t.Fatal(err)
		}
		f.sessions[h] = id
	}
	pub, err := exporter.NewPublisher(f.client, f.prefix, f.hostName(h), exporter.WithKVLayout(mode))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Publish(context.Background(), f.sessions[h], []netip.Addr{f.hostAddr(h)}, f.docs(h)); err != nil {
		t.Fatalf("publish %s in layout %s: %v", f.hostName(h), mode, err)
	}
}

func berthCorefile(prefix string) string {
	return "c.example.org {\n    berth {\n        prefix " + prefix + "\n    }\n    transfer {\n        to *\n    }\n}\n"
}

// zoneRecords is the zone by AXFR from addr, every record but the SOA, as
// sorted text.
func zoneRecords(t *testing.T, addr string) []string {
	t.Helper()
	m := new(dns.Msg)
	m.SetAxfr(e2eZone)
	env, err := (&dns.Transfer{}).In(m, addr)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for e := range env {
		if e.Error != nil {
			t.Fatal(e.Error)
		}
		for _, rr := range e.RR {
			if rr.Header().Rrtype != dns.TypeSOA {
				out = append(out, rr.String())
			}
		}
	}
	slices.Sort(out)
	return out
}

// TestLayoutsSideBySide proves layout 2 is the same contract: one fleet
// written by the exporter's Publisher in layout 1 under one prefix and in
// layout 2 under another, served by two CoreDNS servers, gives the same
// zone record for record (AXFR compared; the SOA serials differ, being
// Consul's indexes of two prefixes).
func TestLayoutsSideBySide(t *testing.T) {
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	client := consul.Client()
	old := &fleet{client: client, prefix: "berth-v1", hosts: 12}
	cur := &fleet{client: client, prefix: "berth-v2", hosts: 12}
	for h := range old.hosts {
		old.publish(t, h, record.WriteV1)
		cur.publish(t, h, record.WriteV2)
	}
	for _, f := range []*fleet{old, cur} {
		keys, _, err := client.KV().Keys(record.HostsPrefix(f.prefix), "", nil)
		if err != nil {
			t.Fatal(err)
		}
		shardKeys, _, err := client.KV().Keys(record.ShardsPrefix(f.prefix), "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if f == old && (len(keys) != 12 || len(shardKeys) != 0) || f == cur && (len(keys) != 0 || len(shardKeys) != 12) {
			t.Fatalf("prefix %s: %d layout 1 keys and %d layout 2 keys", f.prefix, len(keys), len(shardKeys))
		}
	}
	ns1 := testenv.StartCoreDNS(t, berthCorefile(old.prefix), "CONSUL_HTTP_ADDR="+consul.HTTP)
	ns2 := testenv.StartCoreDNS(t, berthCorefile(cur.prefix), "CONSUL_HTTP_ADDR="+consul.HTTP)
	waitLoaded(t, ns1.Addr, e2eZone)
	waitLoaded(t, ns2.Addr, e2eZone)
	a, b := zoneRecords(t, ns1.Addr), zoneRecords(t, ns2.Addr)
	if len(a) < 12*fleetPerHost*4 {
		t.Fatalf("the layout 1 zone has only %d records", len(a))
	}
	if !slices.Equal(a, b) {
		for _, rr := range a {
			if !slices.Contains(b, rr) {
				t.Errorf("only in layout 1's zone: %s", rr)
			}
		}
		for _, rr := range b {
			if !slices.Contains(a, rr) {
				t.Errorf("only in layout 2's zone: %s", rr)
			}
		}
	}
	t.Logf("%d records, the same in both layouts", len(a))
}

// probe is one question the migration test asks over and over, with the
// number of answer records it must have.
type probe struct {
	name  string
	qtype uint16
	want  int
}

// While TestLayoutMigration moves hosts between layouts a prober queries
// the zone without pause and counts every failed answer. probeStep and
// probeAfter are not waits for a condition but how long the prober samples:
// after each step (a few of its rounds on loopback), and after the last
// one (the plugin's notice of it, one change round of a few milliseconds
// when nothing fails, sampled many times over).
const (
	probeStep  = 30 * time.Millisecond
	probeAfter = 500 * time.Millisecond
)

// TestLayoutMigration proves a fleet moves from layout 1 to layout 2 host by
// host without losing an answer: while the hosts' exporters are restarted
// one after another with a new --kv-layout (half through "both", half
// straight to 2, two of them back to 1 and forward again), a prober asks
// CoreDNS for every host, every service and every container without pause
// and must never get a wrong answer. At the end no host is left in layout 1
// and the zone is what it was, record for record.
func TestLayoutMigration(t *testing.T) {
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	f := &fleet{client: consul.Client(), prefix: "berth", hosts: 16}
	for h := range f.hosts {
		f.publish(t, h, record.WriteV1)
	}
	ns := testenv.StartCoreDNS(t, berthCorefile(f.prefix), "CONSUL_HTTP_ADDR="+consul.HTTP)
	waitLoaded(t, ns.Addr, e2eZone)
	before := zoneRecords(t, ns.Addr)

	var probes []probe
	for h := range f.hosts {
		probes = append(probes, probe{f.hostName(h) + ".hosts." + e2eZone, dns.TypeA, 1})
		for _, c := range f.docs(h) {
			probes = append(probes, probe{c.Name + "." + f.hostName(h) + ".hosts." + e2eZone, dns.TypeTXT, 1})
		}
	}
	for s := range f.hosts * fleetPerHost / 3 {
		probes = append(probes, probe{fmt.Sprintf("_http._tcp.svc-%d.%s", s, e2eZone), dns.TypeSRV, 3})
	}
	var (
		asked, failed atomic.Int64
		mu            sync.Mutex
		failures      []string
		stop          = make(chan struct{})
		done          = make(chan struct{})
	)
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			p := probes[i%len(probes)]
			r, err := testenv.Exchange("udp", ns.Addr, p.name, p.qtype, 0)
			asked.Add(1)
			if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != p.want {
				failed.Add(1)
				mu.Lock()
				if len(failures) < 10 {
					failures = append(failures, fmt.Sprintf("%s %s: %v %v", p.name, dns.TypeToString[p.qtype], err, r))
				}
				mu.Unlock()
			}
		}
	}()
	step := func(h int, mode record.WriteMode) {
		f.publish(t, h, mode)
		time.Sleep(probeStep) // let the prober ask around each step
	}
	for h := range f.hosts {
		if h%2 == 0 {
			step(h, record.WriteBoth)
		}
		step(h, record.WriteV2)
		if h == 3 || h == 8 {
			step(h, record.WriteV1) // a rollback, and forward again
			step(h, record.WriteV2)
		}
	}
	time.Sleep(probeAfter)
	close(stop)
	<-done

	if failed.Load() > 0 {
		t.Errorf("%d of %d answers were wrong during the migration; the first: %v", failed.Load(), asked.Load(), failures)
	}
	if asked.Load() < int64(2*len(probes)) {
		t.Errorf("only %d questions asked during the migration (%d probes): the prober did not cover it", asked.Load(), len(probes))
	}
	keys, _, err := f.client.KV().Keys(record.HostsPrefix(f.prefix), "", nil)
	if err != nil || len(keys) != 0 {
		t.Errorf("layout 1 keys left after the migration: %v %v", keys, err)
	}
	shardKeys, _, err := f.client.KV().Keys(record.ShardsPrefix(f.prefix), "", nil)
	if err != nil || len(shardKeys) != f.hosts {
		t.Errorf("layout 2 holds %d keys, want one per host (%d): %v", len(shardKeys), f.hosts, err)
	}
	if after := zoneRecords(t, ns.Addr); !slices.Equal(before, after) {
		t.Errorf("the zone changed in the migration: %d records before, %d after", len(before), len(after))
	}
	t.Logf("%d questions during the migration of %d hosts, %d wrong", asked.Load(), f.hosts, failed.Load())
}
