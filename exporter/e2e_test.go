package exporter

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/berthdns/berth/internal/testenv"
)

// TestEndToEnd runs the whole pipeline: a container on each engine, the
// exporter, Consul, and the project's CoreDNS with the berth plugin. The SRV
// answer for _80._tcp.<service> carries the container's host port and a
// target whose address, dialled at that port, reaches the container.
func TestEndToEnd(t *testing.T) {
	t.Parallel()
	forEachEngine(t, testEndToEnd)
}

func testEndToEnd(t *testing.T, engine string) {
	r := newEngineRig(t, engine, testenv.ConsulOptions{})
	const zone = "c.example.org."
	service := "e2e-" + r.run + ".shop"
	id := r.runContainer(runOpts{name: "e2e", labels: map[string]string{LabelService: service},
		env: []string{"TESTSVC_NAME=e2e-" + r.run}})
	r.startExporter(r.config())
	r.waitDoc("published", id, testenv.ExporterStartWait, present)
	port := r.hostPort(id, "80/tcp")

	// The test advertises 127.0.0.1: loopback is published on both sides
	// by explicit opt-in only (the exporter's is in r.config()).
	dnsSrv := testenv.StartCoreDNS(t, fmt.Sprintf("%s {\n  berth {\n    consul %s\n    allow_loopback\n  }\n}\n", zone, r.consul.HTTP))

	name := "_80._tcp." + service + "." + zone
	var srv *dns.SRV
	var addr net.IP
	deadline := time.Now().Add(testenv.ZoneStartWait)
	for srv == nil {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeSRV)
		in, err := dns.Exchange(m, dnsSrv.Addr)
		if err == nil && in.Rcode == dns.RcodeSuccess && len(in.Answer) > 0 {
			for _, rr := range in.Answer {
				if s, ok := rr.(*dns.SRV); ok {
					srv = s
				}
			}
			for _, rr := range in.Extra {
				if a, ok := rr.(*dns.A); ok && srv != nil && strings.EqualFold(a.Hdr.Name, srv.Target) {
					addr = a.A
				}
			}
		}
		if srv == nil && time.Now().After(deadline) {
			t.Fatalf("no SRV answer for %s: %v %v", name, in, err)
		}
		if srv == nil {
			time.Sleep(testenv.PollInterval)
		}
	}
	t.Logf("SRV %s", srv)
	if int(srv.Port) != port {
		t.Errorf("SRV port %d, want the host port %d", srv.Port, port)
	}
	if want := r.host + ".hosts." + zone; !strings.EqualFold(srv.Target, want) {
		t.Errorf("SRV target %s, want %s", srv.Target, want)
	}
	if addr == nil {
		// The plugin may leave the additional section out; ask for the
		// target's address then.
		m := new(dns.Msg)
		m.SetQuestion(srv.Target, dns.TypeA)
		in, err := dns.Exchange(m, dnsSrv.Addr)
		if err != nil || len(in.Answer) == 0 {
			t.Fatalf("A %s: %v %v", srv.Target, in, err)
		}
		addr = in.Answer[0].(*dns.A).A
	}

	resp, err := http.Get("http://" + net.JoinHostPort(addr.String(), strconv.Itoa(int(srv.Port))) + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "hello from e2e-" + r.run; !strings.Contains(string(body), want) {
		t.Errorf("GET through DNS: %q, want %q", body, want)
	}
}
