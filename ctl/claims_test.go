package ctl

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/berthdns/berth/internal/testenv"
)

// lsServed is each endpoint of `berth ls SERVICE -o json` as
// "instance: yes" or "instance: no: reasons", sorted.
func lsServed(t *testing.T, service string, flags ...string) []string {
	t.Helper()
	code, out, errOut := run(append([]string{"ls", service, "-o", "json"}, flags...)...)
	if code != 0 {
		t.Fatalf("berth ls %s: exit %d: %s", service, code, errOut)
	}
	var services []Service
	if err := json.Unmarshal([]byte(out), &services); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range services {
		for _, i := range s.Instances {
			for _, e := range i.Endpoints {
				v := i.Name + ": yes"
				if !e.Served {
					v = i.Name + ": no: " + strings.Join(e.NotServed, ",")
				}
				got = append(got, v)
			}
		}
	}
	slices.Sort(got)
	return got
}

// TestLsConflictIsThePlugins proves berth ls decides conflicts with the
// plugin's own rule (berth.Check): a service whose name another service's
// alias also claims is served when its claim is the older, and ls says so
// (on c3f5282 it said "no: conflict", taking the alias's finding for the
// service's); the alias's own service is served under its name.
func TestLsConflictIsThePlugins(t *testing.T) {
	f := startFixture(t)
	f.publish(t, f.host2, ctr(idPay1, "portal-1", "portal", "healthy", 10, 8443, "tcp", "", "192.0.2.20", 32790))
	alias := ctr(strings.Repeat("9", 64), "x-1", "aaa", "healthy", 10, 8080, "tcp", "", "192.0.2.20", 32791)
	alias.Aliases = []string{"portal"}
	f.publish(t, f.host2, alias) // a newer claim of portal, by a service that sorts first
	if got := lsServed(t, "portal"); len(got) != 2 || got[0] != "portal-1: yes" || got[1] != "x-1: yes" {
		t.Errorf("berth ls portal: %q, want portal-1 served (its own name) and x-1 served (its service aaa)", got)
	}
	if got := lsServed(t, "aaa"); len(got) != 1 || got[0] != "x-1: yes" {
		t.Errorf("berth ls aaa: %q, want x-1 served", got)
	}
	code, out, _ := run("check")
	if code != 1 || !strings.Contains(out, "conflict          host2  portal.c.example.org.") || !strings.Contains(out, "alias of aaa") {
		t.Errorf("berth check: exit %d, want the alias of aaa on portal reported as a conflict:\n%s", code, out)
	}
}

// TestCheckZoneOwnedNames proves berth check reports a claim on a name the
// zone owns: the default ns.dns.<zone>, and with --ns the Corefile's
// nameserver names, with or without addresses.
func TestCheckZoneOwnedNames(t *testing.T) {
	f := startFixture(t)
	ns := ctr(strings.Repeat("7", 64), "ns-1", "ns.dns", "healthy", 10, 53, "udp", "", "192.0.2.20", 53)
	ns1 := ctr(strings.Repeat("8", 64), "ns1-1", "ns1", "healthy", 10, 53, "udp", "", "192.0.2.20", 5353)
	f.publish(t, f.host2, ns, ns1)
	const owned = "the zone owns this name"
	_, out, _ := run("check")
	if !strings.Contains(out, "conflict          host2  ns.dns.c.example.org.") || !strings.Contains(out, owned) ||
		strings.Contains(out, "ns1.c.example.org.") {
		t.Errorf("berth check without --ns: want the claim of ns.dns alone reported:\n%s", out)
	}
	_, out, _ = run("check", "--ns", "ns1.c.example.org", "--ns", "ns2.example.net")
	if !strings.Contains(out, "conflict          host2  ns1.c.example.org.") || strings.Contains(out, "ns.dns.c.example.org.") {
		t.Errorf("berth check --ns ns1.c.example.org: want the claim of ns1 alone reported:\n%s", out)
	}
	if got := lsServed(t, "ns1", "--ns", "ns1.c.example.org"); len(got) != 1 || got[0] != "ns1-1: no: conflict" {
		t.Errorf("berth ls ns1 --ns ns1.c.example.org: %q, want ns1-1 not served (conflict)", got)
	}
	if got := lsServed(t, "ns1"); len(got) != 1 || got[0] != "ns1-1: yes" {
		t.Errorf("berth ls ns1: %q, want ns1-1 served: without --ns, ns1 is no nameserver's", got)
	}
}

// TestLsShowsTheWiresBytes proves `berth ls` shows a free-text field as
// the bytes the plugin puts on the wire: an image with the escapes
// miekg/dns decodes ("\027", "\044") reaches DNS clients as written, the
// same text berth ls prints (on c3f5282 the wire carried ESC and ",").
func TestLsShowsTheWiresBytes(t *testing.T) {
	f := startFixture(t)
	c := ctr(idWeb1, "web-1", "web.shop", "healthy", 10, 80, "tcp", "http", "192.0.2.10", 32768)
	c.Image = `app\027x\044y:1`
	f.publish(t, f.host1, c)
	dnsd := testenv.StartCoreDNS(t, fxZone+" {\n    berth\n}\n", "CONSUL_HTTP_ADDR="+f.consul.HTTP)
	name := "web-1.host1.hosts." + fxZone + "."
	var wire []string
	// lsWireWait: the plugin's first load follows Consul's first answer,
	// or a retry after at most its backoff's cap (8 s, plugin/watch.go);
	// twice that for a 2-core machine shared by five builds.
	const lsWireWait = 16 * time.Second
	testenv.Eventually(t, lsWireWait, "the container's TXT is served", func() error {
		r, err := testenv.Exchange("udp", dnsd.Addr, name, dns.TypeTXT, 0)
		if err != nil || len(r.Answer) != 1 {
			return fmt.Errorf("TXT %s: %v %v", name, r, err)
		}
		wire, err = testenv.TXTWire(r.Answer[0].(*dns.TXT))
		return err
	})
	code, out, _ := run("ls", "web.shop", "-o", "json")
	var services []Service
	if err := json.Unmarshal([]byte(out), &services); err != nil || code != 0 || len(services) != 1 {
		t.Fatalf("berth ls web.shop: exit %d, %v\n%s", code, err, out)
	}
	shown := ""
	for _, i := range services[0].Instances {
		if i.Name == "web-1" {
			shown = i.Image
		}
	}
	if !slices.Contains(wire, "image="+shown) || shown != c.Image {
		t.Errorf("berth ls shows image %q, the wire carries %q: want the document's %q in both", shown, wire, c.Image)
	}
}
