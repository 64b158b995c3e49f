package berth

import (
	"strings"
	"testing"

	"github.com/coredns/caddy"
	"github.com/miekg/dns"

	"github.com/berthdns/berth/record"
)

// TestZoneMetadataAndDenyList proves the cloud metadata services outside
// link-local are never served, from a host document or a port, each
// reported as metadata_address, and that deny_addresses refuses the
// operator's ranges (denied_address) while the rest is served.
func TestZoneMetadataAndDenyList(t *testing.T) {
	t.Parallel()
	var log skipLog
	z := newTestZone(log.fn)
	z.denied = mustDeny(t, "198.51.100.0/24", "2001:db8:bad::/48")
	z.put("h4", mkData(mkHost("h4", "192.0.2.40", "100.100.100.200", "2001:db8:bad::1"),
		mkCtr("a1", "ali", "ali", "none", mkPort(80, "tcp", "http", "100.100.100.200", 8500)),
		mkCtr("a2", "aws6", "aws6", "none", mkPort(80, "tcp", "http", "fd00:ec2::254", 8501)),
		mkCtr("a3", "mgmt", "mgmt", "none", mkPort(80, "tcp", "http", "198.51.100.7", 8502)),
		mkCtr("a4", "fine", "fine", "none", mkPort(80, "tcp", "http", "192.0.2.40", 8503))))
	z.MarkLoaded()
	host := "h4.hosts." + testOrigin
	if got := answerStrings(z, host, dns.TypeA); strings.Join(got, "|") != host+"\t30\tIN\tA\t192.0.2.40" {
		t.Errorf("host A %v, want only 192.0.2.40", got)
	}
	if got := answerStrings(z, host, dns.TypeAAAA); len(got) != 0 {
		t.Errorf("host AAAA %v, want none (2001:db8:bad::1 is denied)", got)
	}
	for _, svc := range []string{"ali", "aws6", "mgmt"} {
		if got := answerStrings(z, svc+"."+testOrigin, dns.TypeSRV); len(got) != 0 {
			t.Errorf("%s SRV %v, want none: its only port is on a refused address", svc, got)
		}
	}
	if got := answerStrings(z, "fine."+testOrigin, dns.TypeSRV); len(got) != 1 {
		t.Errorf("fine SRV %v, want its port", got)
	}
	for _, want := range []string{"metadata_address " + host, "denied_address " + host,
		"metadata_address ali.h4.hosts." + testOrigin, "metadata_address aws6.h4.hosts." + testOrigin,
		"denied_address mgmt.h4.hosts." + testOrigin} {
		if !log.has(strings.Fields(want)[0], strings.Fields(want)[1]) {
			t.Errorf("not reported: %q (reports: %v)", want, log.all())
		}
	}
}

func mustDeny(t *testing.T, items ...string) record.DenyList {
	t.Helper()
	c := caddy.NewTestController("dns", "berth c.example.org {\n deny_addresses "+strings.Join(items, " ")+"\n}")
	cfg, err := parse(c)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.denied
}

// deny_addresses takes CIDRs and addresses, on repeated lines, and refuses
// anything else naming it.
func TestParseDenyAddresses(t *testing.T) {
	t.Setenv("CONSUL_HTTP_ADDR", "")
	c := caddy.NewTestController("dns", "berth c.example.org {\n deny_addresses 10.0.0.0/8 192.0.2.7\n deny_addresses 2001:db8::/32\n}")
	cfg, err := parse(c)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(cfg.denied); got != 3 {
		t.Errorf("deny_addresses: %d ranges %v, want 3", got, cfg.denied)
	}
	for corefile, want := range map[string]string{
		"berth c.example.org {\n deny_addresses\n}":             "Wrong argument count",
		"berth c.example.org {\n deny_addresses 10.0.0.0/33\n}": `"10.0.0.0/33" is neither a CIDR nor an IP address`,
		"berth c.example.org {\n deny_addresses example.org\n}": `"example.org"`,
	} {
		if _, err := parse(caddy.NewTestController("dns", corefile)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error with %q", corefile, err, want)
		}
	}
}
