package berth

import (
	"context"
	"testing"

	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/pkg/fall"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
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
