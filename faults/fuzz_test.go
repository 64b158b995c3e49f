package faults

import (
	"encoding/binary"
	"encoding/json"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/miekg/dns"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
)

// FuzzKVDocument feeds arbitrary values to the validators the plugin runs
// on every KV document. Whatever is accepted must satisfy the contract, and
// re-encoding an accepted document must decode to the same document.
// Corpus: testdata/fuzz/FuzzKVDocument, plus every hostile document of
// scenario 7.
func FuzzKVDocument(f *testing.F) {
	for _, c := range hostileDocs() {
		f.Add(c.value)
	}
	f.Add(mutate(1, nil))
	// Escapes miekg/dns would decode when packing a TXT string (issue 21, row 6).
	f.Add([]byte(`{"v":1,"id":"` + idOf(1) + `","name":"esc","service":"esc","image":"a\\027b\\000","health":"none",` +
		`"tags":["prod\\044admin"],"ports":[{"port":80,"proto":"tcp","addr":"192.0.2.7","host_port":8080}]}`))
	f.Fuzz(func(t *testing.T, value []byte) {
		key := record.ContainerKey(prefix, "h", idOf(1))
		if c, err := record.DecodeContainer(key, value); err == nil {
			checkContainer(t, c)
			b, err := json.Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			again, err := record.DecodeContainer(key, b)
			if err != nil {
				t.Fatalf("an accepted document does not decode after re-encoding: %v\n%s", err, b)
			}
			if !reflect.DeepEqual(c, again) {
				t.Fatalf("re-encoding changed the document:\n%+v\n%+v", c, again)
			}
		}
		if h, err := record.DecodeHost(record.HostKey(prefix, "h"), value); err == nil {
			if record.ValidLabel(h.Name) != nil || len(h.Addrs) == 0 {
				t.Fatalf("accepted host document %+v", h)
			}
			for _, a := range h.Addrs {
				checkAddr(t, a)
			}
		}
	})
}

func checkContainer(t *testing.T, c *record.Container) {
	t.Helper()
	// Free text reaches the wire as the document's bytes (record.EscapeTXT).
	fields := []string{"image=" + c.Image}
	if len(c.Tags) > 0 {
		fields = append(fields, record.TagsTXT(c.Tags))
	}
	if err := testenv.CheckTXTFields(fields, record.EscapeTXT); err != nil {
		t.Fatal(err)
	}
	if c.V != record.Version || record.ValidLabel(c.Name) != nil || record.ValidService(c.Service) != nil || len(c.Ports) == 0 ||
		c.Priority < 0 || c.Priority > 65535 || c.Weight < 0 || c.Weight > 65535 || len(c.ID) < 12 {
		t.Fatalf("accepted container document %+v", c)
	}
	switch c.Health {
	case record.HealthHealthy, record.HealthUnhealthy, record.HealthStarting, record.HealthNone:
	default:
		t.Fatalf("accepted health %q", c.Health)
	}
	for _, p := range c.Ports {
		if p.Port < 1 || p.Port > 65535 || p.HostPort < 1 || p.HostPort > 65535 ||
			(p.Name != "" && record.ValidLabel(p.Name) != nil) {
			t.Fatalf("accepted port %+v", p)
		}
		checkAddr(t, p.Addr)
	}
}

func checkAddr(t *testing.T, a netip.Addr) {
	t.Helper()
	if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() || a.Zone() != "" || a.Is4In6() {
		t.Fatalf("accepted address %v", a)
	}
}

// FuzzDNSWire sends arbitrary bytes as a DNS message, over UDP and TCP, to
// the real bin/coredns serving a berth zone from a real Consul (started once
// per process). A reply must parse and carry the query's ID, and the server
// must keep answering a correct query. Corpus: testdata/fuzz/FuzzDNSWire.
func FuzzDNSWire(f *testing.F) {
	web := zoneLabels("web-1", "good", "hosts")
	f.Add(wire(1, 0x0100, 1, 0, 0, 0, web, u16(dns.TypeSRV, dns.ClassINET)))
	f.Add(wire(2, 0x0100, 1, 0, 0, 1, web, u16(dns.TypeSRV, dns.ClassINET), optRR([]byte{0}, 4096, 0, nil)))
	f.Add(wire(3, 0x0100, 1, 0, 0, 0, []byte{0xc0, 12}, u16(dns.TypeA, 1)))
	// The servers live as long as f: one Consul and one CoreDNS per
	// fuzzing process, stopped by f's cleanup.
	c := testenv.StartConsul(f, testenv.ConsulOptions{})
	cfg := api.DefaultConfig()
	cfg.Address = c.HTTP
	cl, err := api.NewClient(cfg)
	if err != nil {
		f.Fatal(err)
	}
	seedBaseline(f, cl.KV())
	d := testenv.StartCoreDNS(f, "f.berth.test {\n    berth {\n        consul "+c.HTTP+"\n    }\n}\n")
	addr := d.Addr
	deadline := time.Now().Add(testenv.ZoneStartWait)
	for {
		if r, err := testenv.Exchange("udp", addr, "web-1.good.hosts."+zone, dns.TypeSRV, 0); err == nil && len(r.Answer) == 1 {
			break
		}
		if time.Now().After(deadline) {
			f.Fatalf("fuzz zone not loaded:\n%s", d.Output())
		}
		time.Sleep(testenv.PollInterval)
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		for _, network := range []string{"udp", "tcp"} {
			if len(msg) == 0 && network == "udp" || len(msg) > 65535 {
				continue
			}
			reply, err := rawExchange(network, addr, msg, testenv.ProbeTimeout)
			if err != nil && network == "udp" {
				t.Fatalf("%s: %v", network, err)
			}
			if reply != nil {
				r := new(dns.Msg)
				if err := r.Unpack(reply); err != nil {
					t.Fatalf("%s: reply does not parse: %v", network, err)
				}
				if len(msg) >= 2 && r.Id != binary.BigEndian.Uint16(msg) {
					t.Fatalf("%s: reply ID %d for query ID %d", network, r.Id, binary.BigEndian.Uint16(msg))
				}
				if network == "udp" && len(reply) > 65535 {
					t.Fatal("oversized reply")
				}
			}
		}
		r, err := testenv.Exchange("udp", addr, "web-1.good.hosts."+zone, dns.TypeSRV, 0)
		if err != nil || len(srvPorts(r)) != 1 || srvPorts(r)[0] != 32768 {
			t.Fatalf("the server stopped answering correctly after %x: %v %v", msg, r, err)
		}
	})
}
