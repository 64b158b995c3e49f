package ctl

import (
	"fmt"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/berthdns/berth/internal/testenv"
)

// berth resolve against the real bin/coredns serving the fixture from the
// same Consul agent.
func TestResolve(t *testing.T) {
	f := startFixture(t)
	dnsd := testenv.StartCoreDNS(t, "c.example.org {\n    berth\n    errors\n}\n", "CONSUL_HTTP_ADDR="+f.consul.HTTP)
	testenv.Eventually(t, testenv.ZoneStartWait, "web.shop served", func() error {
		r, err := testenv.Exchange("udp", dnsd.Addr, "_80._tcp.web.shop.c.example.org.", dns.TypeSRV, 1232)
		if err != nil {
			return err
		}
		if len(r.Answer) != 2 {
			return fmt.Errorf("%d answers", len(r.Answer))
		}
		return nil
	})

	// Two priorities: the order is the resolver's, and fixed.
	table := `_80._tcp.web.shop.c.example.org.: 2 targets, in the order a client tries them (random within a priority: another run may differ)
ORDER  TARGET                      PORT   PRIORITY  WEIGHT  ADDRS
1      host1.hosts.c.example.org.  32768  10        10      192.0.2.10
2      host2.hosts.c.example.org.  32770  20        10      192.0.2.20
`
	expect(t, []string{"resolve", "web.shop:80", "--dns", dnsd.Addr}, 0, table, "")
	expect(t, []string{"resolve", "--dns", dnsd.Addr, "web.shop.c.example.org.:http"}, 0, table, "")
	expect(t, []string{"resolve", "--dns", dnsd.Addr, "-o", "json", "web.shop:80"}, 0, `{
  "name": "web.shop.c.example.org.",
  "port": 80,
  "network": "tcp",
  "srv": "_80._tcp.web.shop.c.example.org.",
  "ordered": true,
  "lookups": [],
  "targets": [
    {
      "host": "host1.hosts.c.example.org.",
      "port": 32768,
      "priority": 10,
      "weight": 10,
      "addrs": [
        "192.0.2.10"
      ]
    },
    {
      "host": "host2.hosts.c.example.org.",
      "port": 32770,
      "priority": 20,
      "weight": 10,
      "addrs": [
        "192.0.2.20"
      ]
    }
  ]
}
`, "")
	// A bare name: every port of every instance.
	expect(t, []string{"resolve", "--dns", dnsd.Addr, "web.shop"}, 0,
		`web.shop.c.example.org.: 2 targets, every port's, by priority then weight (a client asks for one port: berth resolve NAME:PORT)
ORDER  TARGET                      PORT   PRIORITY  WEIGHT  ADDRS
1      host1.hosts.c.example.org.  32768  10        10      192.0.2.10
2      host2.hosts.c.example.org.  32770  20        10      192.0.2.20
`, "")
	// The refused claim is not in the zone: nothing but the name as given.
	expect(t, []string{"resolve", "--dns", dnsd.Addr, "pay.bank:443"}, 0,
		`asked _443._tcp.pay.bank.c.example.org. SRV: no such host
asked _https._tcp.pay.bank.c.example.org. SRV: no such host
no SRV records: a client dials pay.bank.c.example.org:443 as given
`, "")
	expect(t, []string{"resolve", "--dns", dnsd.Addr, "pay.bank"}, 1,
		"asked pay.bank.c.example.org. SRV: NXDOMAIN\nnothing to dial for pay.bank.c.example.org.\n", "")
	expect(t, []string{"resolve"}, 2, "", "berth resolve: give one NAME or NAME:PORT (the container port a client asks for)\n")
	expect(t, []string{"resolve", "--network", "sctp", "x:1"}, 2, "", "berth resolve: --network \"sctp\": tcp or udp\n")

	// A DNS server that does not answer: an error, exit 1.
	dead := "127.0.0.1:" + fmt.Sprint(testenv.FreePort(t))
	code, out, _ := run("resolve", "--dns", dead, "web.shop:80")
	if code != 1 || !strings.HasPrefix(out, "error: resolver: dial tcp web.shop.c.example.org.:80: ") {
		t.Errorf("a dead server: exit %d, stdout %q", code, out)
	}
}
