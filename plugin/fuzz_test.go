package berth

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/pkg/fall"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
)

// FuzzServeDNS proves that any message a client can send is served without
// a panic on a populated zone, and that whatever the plugin writes packs.
// Bytes that do not unpack to a message with one question are not a query
// CoreDNS would hand to a plugin. Seeds: packed queries for every kind of
// name in the fixture zone (testdata/fuzz/FuzzServeDNS) plus those below.
func FuzzServeDNS(f *testing.F) {
	seeds := []struct {
		name  string
		qtype uint16
	}{
		{testOrigin, dns.TypeSOA}, {testOrigin, dns.TypeNS}, {testOrigin, dns.TypeANY},
		{"web.shop.c.example.org.", dns.TypeSRV}, {"WEB.shop.c.example.org.", dns.TypeA},
		{`web-1\.h1._http._tcp.c.example.org.`, dns.TypeTXT}, {"_services._dns-sd._udp.c.example.org.", dns.TypePTR},
		{"nope.c.example.org.", dns.TypeAAAA}, {"shop.c.example.org.", dns.TypeMX}, {"example.com.", dns.TypeA},
		{testOrigin, dns.TypeAXFR}, {testOrigin, dns.TypeIXFR},
	}
	for _, s := range seeds {
		m := new(dns.Msg)
		m.SetQuestion(s.name, s.qtype)
		m.SetEdns0(1232, true)
		buf, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(buf)
	}
	b := newTestBerth(f)
	b.Fall = fall.F{}
	fb := *b
	fb.Fall = fall.Root
	f.Fuzz(func(t *testing.T, data []byte) {
		r := new(dns.Msg)
		if err := r.Unpack(data); err != nil || len(r.Question) != 1 {
			return
		}
		for _, h := range []*Berth{b, &fb} {
			rec := dnstest.NewRecorder(&test.ResponseWriter{})
			rcode, err := h.ServeDNS(context.Background(), rec, r.Copy())
			if err != nil {
				t.Fatalf("ServeDNS(%v): error %v", r.Question[0], err)
			}
			if rec.Msg == nil {
				continue // SERVFAIL/REFUSED returned for the server to write, or next plugin
			}
			if rcode != dns.RcodeSuccess {
				t.Errorf("wrote a response and returned rcode %d", rcode)
			}
			if _, err := rec.Msg.Pack(); err != nil {
				t.Fatalf("response to %v does not pack: %v\n%v", r.Question[0], err, rec.Msg)
			}
			if rec.Msg.Rcode == dns.RcodeNameError && len(rec.Msg.Answer) > 0 {
				t.Fatalf("NXDOMAIN with an answer: %v", rec.Msg)
			}
		}
	})
}

// FuzzContainerTXT proves the TXT strings a container's documents give
// carry on the wire exactly the bytes of the document's fields, whatever
// they hold (escapes that miekg/dns would decode, "prod\044admin", "\027"
// included): every image and tag the record package accepts is compiled,
// looked up, packed and read back from the wire (testenv.TXTWire).
func FuzzContainerTXT(f *testing.F) {
	f.Add("nginx:1.27", "a,b")
	f.Add(`img\027x\013\010\000`, `prod\044admin`)
	f.Add(`\\\`, `\`)
	f.Add("é\u202e", "")
	f.Fuzz(func(t *testing.T, image, tags string) {
		c := mkCtr("a1", "web-1", "web", "none", mkPort(80, "tcp", "http", "192.0.2.10", 8080))
		c.Image = image
		if tags != "" {
			c.Tags = strings.Split(tags, ",")
		}
		if c.Validate() != nil {
			return
		}
		z := newTestZone(nil)
		z.put("h1", mkData(mkHost("h1", "192.0.2.10"), c))
		z.MarkLoaded()
		want := []string{"service=web", "id=" + c.ShortID(), "image=" + c.Image, "health=none"}
		if len(c.Tags) > 0 {
			want = append(want, record.TagsTXT(c.Tags))
		}
		for _, name := range []string{"web-1.h1.hosts." + testOrigin, `web-1\.h1._http._tcp.` + testOrigin} {
			ans, _, _, _ := z.Lookup(name, dns.TypeTXT)
			if len(ans) != 1 {
				t.Fatalf("TXT %s: %v, want one record", name, ans)
			}
			m := new(dns.Msg)
			m.SetQuestion(name, dns.TypeTXT)
			m.Answer = ans
			packed, err := m.Pack()
			if err != nil {
				t.Fatalf("TXT %s does not pack: %v", name, err)
			}
			back := new(dns.Msg)
			if err := back.Unpack(packed); err != nil {
				t.Fatal(err)
			}
			got, err := testenv.TXTWire(back.Answer[0].(*dns.TXT))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("TXT %s on the wire %q, want the document's %q", name, got, want)
			}
		}
	})
}
