package berth_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/miekg/dns"
)

// TestDNSSECValidated runs corefile-examples/dnssec.Corefile with a key the
// test makes with BIND's dnssec-keygen, and validates berth's answers with
// BIND's delv against that key as the trust anchor: a service's SRV
// records, a name that does not exist, and a record that appears after a
// change in Consul.
func TestDNSSECValidated(t *testing.T) {
	keygen := lookTool(t, "dnssec-keygen")
	delv := lookTool(t, "delv")
	dir := t.TempDir()
	cmd := exec.Command(keygen, "-q", "-K", dir, "-a", "ECDSAP256SHA256", "-f", "KSK", "-n", "ZONE", strings.TrimSuffix(e2eZone, "."))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("dnssec-keygen: %v\n%s", err, out)
	}
	keyName := strings.TrimSpace(string(out)) // Kc.example.org.+013+NNNNN
	pub, err := os.ReadFile(filepath.Join(dir, keyName+".key"))
	if err != nil {
		t.Fatal(err)
	}
	var dnskey *dns.DNSKEY
	for _, line := range strings.Split(string(pub), "\n") {
		if rr, err := dns.NewRR(line); err == nil && rr != nil {
			dnskey, _ = rr.(*dns.DNSKEY)
		}
	}
	if dnskey == nil {
		t.Fatalf("no DNSKEY in %s:\n%s", keyName, pub)
	}
	anchors := filepath.Join(dir, "anchors.conf")
	if err := os.WriteFile(anchors, []byte("trust-anchors {\n\t"+e2eZone+" static-key "+
		strconv.Itoa(int(dnskey.Flags))+" "+strconv.Itoa(int(dnskey.Protocol))+" "+strconv.Itoa(int(dnskey.Algorithm))+
		" \""+dnskey.PublicKey+"\";\n};\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	kv := consul.Client().KV()
	seed(t, kv)
	dnsd := testenv.StartCoreDNS(t, example(t, "dnssec.Corefile", "/etc/coredns/keys/Kc.example.org.+013+00000", filepath.Join(dir, keyName)),
		"CONSUL_HTTP_ADDR="+consul.HTTP)
	waitLoaded(t, dnsd.Addr, e2eZone)

	// validate runs delv for name/qtype and returns its output, which says
	// "fully validated" only when every signature checked out against the
	// anchor.
	validate := func(name, qtype string) string {
		t.Helper()
		out, err := exec.Command(delv, "@127.0.0.1", "-p", strconv.Itoa(dnsd.Port), "-a", anchors,
			"+root="+strings.TrimSuffix(e2eZone, "."), "+tcp", name, qtype).CombinedOutput()
		if err != nil && !strings.Contains(string(out), "resolution failed") {
			t.Fatalf("delv %s %s: %v\n%s", name, qtype, err, out)
		}
		return string(out)
	}
	srv := validate("_80._tcp.web.shop."+e2eZone, "SRV")
	if !strings.Contains(srv, "; fully validated") || !strings.Contains(srv, "10 10 32768 host1.hosts."+e2eZone) {
		t.Errorf("SRV of web.shop not validated:\n%s", srv)
	}
	if nx := validate("nope."+e2eZone, "A"); !strings.Contains(nx, "fully validated") || !strings.Contains(nx, "negative response") {
		t.Errorf("a name that does not exist: not a validated negative answer:\n%s", nx)
	}
	// The same answer checked against an anchor for another name is not
	// validated: the checks above can fail.
	out, _ = exec.Command(delv, "@127.0.0.1", "-p", strconv.Itoa(dnsd.Port), "-a", anchors,
		"+root=example.net", "+tcp", "_80._tcp.web.shop."+e2eZone, "SRV").CombinedOutput()
	if strings.Contains(string(out), "; fully validated") {
		t.Errorf("validated without the zone's anchor:\n%s", out)
	}

	addWeb(t, kv, 7, 32777)
	testenv.Eventually(t, testenv.ZoneChangeWait, "the new instance is served", srvPorts(dnsd.Addr, "web-7.host1.hosts."+e2eZone, 32777))
	if fresh := validate("web-7.host1.hosts."+e2eZone, "SRV"); !strings.Contains(fresh, "; fully validated") || !strings.Contains(fresh, " 32777 ") {
		t.Errorf("a record added after the start is not validated:\n%s", fresh)
	}
}

// lookTool finds a command of Debian's BIND packages (make test installs
// them), or skips/fails the test through Unavailable.
func lookTool(t *testing.T, name string) string {
	t.Helper()
	for _, p := range []string{name, "/usr/sbin/" + name, "/usr/bin/" + name} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	testenv.Unavailable(t, "%s (Debian's bind9-utils / bind9-dnsutils; make test installs them)", name)
	return ""
}
