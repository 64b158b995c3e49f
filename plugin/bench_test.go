package berth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/berthdns/berth/record"
	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/file"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
)

// The ServeDNS benchmarks answer from the same shape of data that
// `make bench` serves over the network (bench/, 1,000 services x 3 instances
// over 100 hosts), without a network: they measure the plugin's own cost per
// query, and its allocations, for the four kinds of query in bench's mix.
// BenchmarkServeDNSFilePlugin is the baseline: CoreDNS's file plugin
// answering the same questions from a zone holding exactly the records berth
// serves (berth's own zone transfer, parsed by the file plugin).
// Run them with
//
//	go test -run '^$' -bench ServeDNS -benchmem ./plugin

const benchZone = "c.example.org."

// benchData is hosts x perHost containers, three instances per service on
// three different hosts (the layout bench/ uses).
func benchData(tb testing.TB, hosts, perHost int) []*hostDocs {
	tb.Helper()
	data := make([]*hostDocs, hosts)
	for h := range data {
		addr := netip.AddrFrom4([4]byte{198, 18, byte(h / 250), byte(h%250 + 1)}) // RFC 2544's benchmarking range
		data[h] = &hostDocs{Host: &record.Host{V: 1, Name: fmt.Sprintf("h%04d", h), Addrs: []netip.Addr{addr}, Rev: 1}}
	}
	for c := range perHost {
		for h := range hosts {
			g := c*hosts + h
			sum := sha256.Sum256(fmt.Appendf(nil, "bench-%d", g))
			ctr := &record.Container{V: 1, ID: hex.EncodeToString(sum[:]),
				Name: fmt.Sprintf("svc-%05d-%d", g/3, g%3), Service: fmt.Sprintf("svc-%05d", g/3),
				Image: "registry.example.org/team/app:1.2.3", Health: record.HealthHealthy,
				Priority: 10, Weight: 10,
				Ports: []record.Port{{Port: 80, Proto: "tcp", Name: "http", Addr: data[h].Host.Addrs[0], HostPort: 20000 + c}},
			}
			if err := ctr.Validate(); err != nil {
				tb.Fatal(err)
			}
			data[h].Containers = append(data[h].Containers, ctr)
		}
	}
	return data
}

// benchBerth builds a loaded zone from benchData.
func benchBerth(tb testing.TB, hosts, perHost int) *Berth {
	tb.Helper()
	z := NewZone(benchZone, 5, nil, nil)
	for _, d := range benchData(tb, hosts, perHost) {
		z.put(d.Host.Name, d)
	}
	z.MarkLoaded()
	return &Berth{zones: map[string]*Zone{z.Origin(): z}, names: plugin.Zones{z.Origin()}}
}

// discardWriter drops the reply: what is measured is the plugin alone.
type discardWriter struct{ test.ResponseWriter }

func (*discardWriter) WriteMsg(*dns.Msg) error { return nil }

// packWriter packs the reply into a reused buffer, as the server does
// before sending it, to show what the answer costs on the wire side.
type packWriter struct {
	test.ResponseWriter
	buf []byte
}

func (w *packWriter) WriteMsg(m *dns.Msg) error {
	b, err := m.PackBuffer(w.buf)
	w.buf = b[:cap(b)]
	return err
}

var benchQueries = []struct {
	name  string
	qname string
	qtype uint16
	rcode int
}{
	{"SRV", "_80._tcp.svc-00421." + benchZone, dns.TypeSRV, dns.RcodeSuccess},
	{"A", "svc-00421." + benchZone, dns.TypeA, dns.RcodeSuccess},
	{"TXT", "svc-00421-1.h0064.hosts." + benchZone, dns.TypeTXT, dns.RcodeSuccess},
	{"NXDOMAIN", "nx-123456." + benchZone, dns.TypeA, dns.RcodeNameError},
}

func BenchmarkServeDNS(b *testing.B) {
	bb := benchBerth(b, 100, 30)
	ctx := context.Background()
	for _, q := range benchQueries {
		req := new(dns.Msg)
		req.SetQuestion(q.qname, q.qtype)
		check := &checkWriter{}
		bb.ServeDNS(ctx, check, req)
		if check.m == nil || check.m.Rcode != q.rcode || (q.rcode == dns.RcodeSuccess && len(check.m.Answer) == 0) {
			b.Fatalf("%s: unexpected reply %v", q.name, check.m)
		}
		b.Run(q.name, func(b *testing.B) {
			w := &discardWriter{}
			b.ReportAllocs()
			for b.Loop() {
				bb.ServeDNS(ctx, w, req)
			}
		})
		b.Run(q.name+"+pack", func(b *testing.B) {
			w := &packWriter{buf: make([]byte, dns.MaxMsgSize)}
			b.ReportAllocs()
			for b.Loop() {
				bb.ServeDNS(ctx, w, req)
			}
		})
	}
}

// BenchmarkServeDNSParallel runs the four kinds of query from every P at
// once: the index's read lock is the only thing they share.
func BenchmarkServeDNSParallel(b *testing.B) {
	bb := benchBerth(b, 100, 30)
	ctx := context.Background()
	reqs := make([]*dns.Msg, len(benchQueries))
	for i, q := range benchQueries {
		reqs[i] = new(dns.Msg)
		reqs[i].SetQuestion(q.qname, q.qtype)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		w := &discardWriter{}
		i := 0
		for pb.Next() {
			bb.ServeDNS(ctx, w, reqs[i%len(reqs)])
			i++
		}
	})
}

// BenchmarkServeDNSFilePlugin is the baseline for BenchmarkServeDNS: the
// file plugin of the same CoreDNS release, same records, same questions.
func BenchmarkServeDNSFilePlugin(b *testing.B) {
	bb := benchBerth(b, 100, 30)
	z := bb.zones[benchZone]
	soa, rrs := z.snapshot()
	var text strings.Builder
	text.WriteString(soa.String() + "\n")
	for _, rr := range rrs {
		text.WriteString(rr.String() + "\n")
	}
	fz, err := file.Parse(strings.NewReader(text.String()), benchZone, "bench.zone", 0)
	if err != nil {
		b.Fatal(err)
	}
	f := file.File{Zones: file.Zones{Z: map[string]*file.Zone{benchZone: fz}, Names: []string{benchZone}}}
	ctx := context.Background()
	for _, q := range benchQueries {
		req := new(dns.Msg)
		req.SetQuestion(q.qname, q.qtype)
		check := &checkWriter{}
		f.ServeDNS(ctx, check, req)
		if check.m == nil || check.m.Rcode != q.rcode || (q.rcode == dns.RcodeSuccess && len(check.m.Answer) == 0) {
			b.Fatalf("%s: unexpected reply %v", q.name, check.m)
		}
		b.Run(q.name, func(b *testing.B) {
			w := &discardWriter{}
			b.ReportAllocs()
			for b.Loop() {
				f.ServeDNS(ctx, w, req)
			}
		})
	}
}

type checkWriter struct {
	test.ResponseWriter
	m *dns.Msg
}

func (w *checkWriter) WriteMsg(m *dns.Msg) error { w.m = m; return nil }

// BenchmarkZoneLoad builds the index from the index's side host after
// host, one update each (the watcher's first load is in batches now:
// BenchmarkZoneLoadBatch). Comparing the sizes shows how the cost grows
// with the number of hosts (30 containers each).
func BenchmarkZoneLoad(b *testing.B) {
	for _, hosts := range []int{50, 150} {
		b.Run(fmt.Sprintf("hosts=%d", hosts), func(b *testing.B) {
			data := benchData(b, hosts, 30)
			b.ReportAllocs()
			for b.Loop() {
				z := NewZone(benchZone, 5, nil, nil)
				for _, d := range data {
					z.put(d.Host.Name, d)
				}
			}
		})
	}
}

// BenchmarkZoneLoadBatch is the first full load as the watcher makes it
// now: the hosts' data in batches of loadChunk hosts (loadMemZone), on
// bench's dataset (memDataset). ns/host is the index's share of the first
// load per host.
func BenchmarkZoneLoadBatch(b *testing.B) {
	for _, instances := range []int{3000, 30000} {
		b.Run(fmt.Sprintf("instances=%d", instances), func(b *testing.B) {
			hosts, perHost := memShape(instances)
			data := memDataset(b, hosts, perHost)
			b.ReportAllocs()
			for b.Loop() {
				loadMemZone(data)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*hosts), "ns/host")
		})
	}
}

// BenchmarkZoneUpdate is one host's change (one container's host port) in
// a loaded zone: what every change announced by a host document costs the
// watcher, by zone size.
func BenchmarkZoneUpdate(b *testing.B) {
	for _, hosts := range []int{100, 300} {
		b.Run(fmt.Sprintf("hosts=%d", hosts), func(b *testing.B) {
			data := benchData(b, hosts, 30)
			z := NewZone(benchZone, 5, nil, nil)
			for _, d := range data {
				z.put(d.Host.Name, d)
			}
			h := data[hosts/2]
			b.ReportAllocs()
			port := 0
			for b.Loop() {
				port++
				c := *h.Containers[0]
				c.Ports = []record.Port{c.Ports[0]}
				c.Ports[0].HostPort = 30000 + port%1000
				next := &hostDocs{Host: h.Host, Containers: append([]*record.Container{&c}, h.Containers[1:]...)}
				z.put(h.Host.Name, next)
			}
		})
	}
}
