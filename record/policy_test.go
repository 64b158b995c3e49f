package record

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestPolicyClaim(t *testing.T) {
	p, err := DecodePolicy("berth/policy", []byte(`{"v": 1, "default": "deny", "rules": [
		{"service": "web.shop", "hosts": ["host1", "host2"], "min_priority": 10, "max_weight": 50},
		{"service": "*.shop", "hosts": ["shop-*"]},
		{"service": "*.api.shop", "hosts": ["api-1"]},
		{"service": "*", "hosts": ["admin"]}
	]}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		service, host string
		prio, weight  int
		ok            bool
		wantP, wantW  int
	}{
		{"web.shop", "host1", 10, 10, true, 10, 10},
		{"web.shop", "host2", 0, 65535, true, 10, 50}, // clamped to the rule's bounds
		{"web.shop", "host3", 10, 10, false, 0, 0},    // not listed
		{"web.shop", "shop-1", 10, 10, false, 0, 0},   // the exact rule wins over *.shop
		{"cart.shop", "shop-1", 5, 5, true, 5, 5},
		{"cart.shop", "host1", 5, 5, false, 0, 0},
		{"v2.api.shop", "api-1", 1, 1, true, 1, 1}, // the longest domain wins
		{"v2.api.shop", "shop-1", 1, 1, false, 0, 0},
		{"shop", "shop-1", 1, 1, false, 0, 0},     // "*.shop" is below shop only: "*" applies
		{"shop", "admin", 1, 1, true, 1, 1},       // "*" gives everything else to admin
		{"mail", "host1", 1, 1, false, 0, 0},      // "*" does not list host1
		{"webxshop", "shop-1", 1, 1, false, 0, 0}, // no label boundary: "*" applies
	} {
		p, w, err := p.Claim(c.service, c.host, c.prio, c.weight)
		if ok := err == nil; ok != c.ok || (ok && (p != c.wantP || w != c.wantW)) {
			t.Errorf("%s by %s (%d/%d): %d/%d %v, want ok=%v %d/%d", c.service, c.host, c.prio, c.weight, p, w, err, c.ok, c.wantP, c.wantW)
		}
		if err != nil && !errors.Is(err, ErrClaimRefused) {
			t.Errorf("%s by %s: error %v does not wrap ErrClaimRefused", c.service, c.host, err)
		}
	}

	// Without a rule for the name: the default.
	allow := &Policy{V: 1, Default: PolicyAllow, Rules: []PolicyRule{{Service: "db", Hosts: []string{"db-1"}}}}
	if _, _, err := allow.Claim("web", "anyhost", 10, 10); err != nil {
		t.Errorf("allow default refused an unlisted name: %v", err)
	}
	if _, _, err := allow.Claim("db", "anyhost", 10, 10); err == nil {
		t.Error("a listed name was given to a host its rule does not list")
	}
	if _, _, err := OpenPolicy.Claim("anything.at.all", "h", 0, 0); err != nil {
		t.Errorf("the open policy refused a claim: %v", err)
	}
}

func TestPolicyInvalid(t *testing.T) {
	for _, c := range []struct{ doc, want string }{
		{`{"v": 1, "default": "maybe"}`, `default is "maybe"`},
		{`{"v": 1, "default": "deny", "rules": [{"service": "Web.Shop", "hosts": ["h"]}]}`, "not a sanitized"},
		{`{"v": 1, "default": "deny", "rules": [{"service": "*.", "hosts": ["h"]}]}`, "empty"},
		{`{"v": 1, "default": "deny", "rules": [{"service": "web", "hosts": []}]}`, "no hosts"},
		{`{"v": 1, "default": "deny", "rules": [{"service": "web", "hosts": ["bad host"]}]}`, "host"},
		{`{"v": 1, "default": "deny", "rules": [{"service": "web", "hosts": ["h"], "min_priority": 70000}]}`, "outside 0-65535"},
		{`{"v": 1, "default": "deny", "rules": [{"service": "web", "hosts": ["h"]}, {"service": "web", "hosts": ["g"]}]}`, "has a rule already"},
		{`{"v": 2, "default": "deny"}`, "unsupported"},
		{`not json`, "not a JSON object"},
	} {
		if _, err := DecodePolicy("k", []byte(c.doc)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to say %q", c.doc, err, c.want)
		}
	}
}

// TestPolicyAddresses proves the address rules bind hosts to their ranges
// by the most specific rule (the host's own name, then the longest prefix,
// then "*"), that a host no rule covers is unbound, that a rule without
// ranges binds its hosts to no address, and that every refusal wraps
// ErrForeignAddress.
func TestPolicyAddresses(t *testing.T) {
	p, err := DecodePolicy("berth/policy", []byte(`{"v": 1, "default": "allow", "rules": [],
		"addresses": [
			{"hosts": ["host1"], "cidrs": ["192.0.2.0/28", "2001:db8:1::/64"]},
			{"hosts": ["shop-*"], "cidrs": ["198.51.100.0/24"]},
			{"hosts": ["shop-eu-*"], "cidrs": ["203.0.113.0/24"]},
			{"hosts": ["quarantine"], "cidrs": []}
		]}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		host, addr string
		ok         bool
	}{
		{"host1", "192.0.2.10", true},
		{"host1", "::ffff:192.0.2.10", true}, // judged as the IPv4 address it holds
		{"host1", "2001:db8:1::10", true},
		{"host1", "192.0.2.20", false},       // outside its /28
		{"host1", "198.51.100.7", false},     // shop-*'s range, not host1's
		{"shop-1", "198.51.100.7", true},     // by prefix
		{"shop-eu-1", "203.0.113.5", true},   // the longest prefix wins
		{"shop-eu-1", "198.51.100.7", false}, // ... and the shorter one's range is not added
		{"quarantine", "192.0.2.10", false},  // no range: no address
		{"host2", "192.0.2.10", true},        // no rule covers host2: unbound, as without a policy
		{"host10", "198.51.100.7", true},     // "host1" is a name, not a prefix
	} {
		err := p.Address(c.host, netip.MustParseAddr(c.addr))
		if ok := err == nil; ok != c.ok {
			t.Errorf("%s publishing %s: %v, want ok=%v", c.host, c.addr, err, c.ok)
		}
		if err != nil && !errors.Is(err, ErrForeignAddress) {
			t.Errorf("%s publishing %s: error %v does not wrap ErrForeignAddress", c.host, c.addr, err)
		}
	}
	star := &Policy{V: 1, Default: PolicyAllow, Addresses: []AddressRule{
		{Hosts: []string{"*"}, CIDRs: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}},
		{Hosts: []string{"host9"}, CIDRs: []netip.Prefix{netip.MustParsePrefix("198.51.100.9/32")}}}}
	if err := star.Address("anyhost", netip.MustParseAddr("198.51.100.9")); err == nil {
		t.Error(`"*" bound no host`)
	}
	if err := star.Address("host9", netip.MustParseAddr("198.51.100.9")); err != nil {
		t.Errorf("the host's own rule lost to \"*\": %v", err)
	}
	if err := OpenPolicy.Address("h", netip.MustParseAddr("192.0.2.1")); err != nil {
		t.Errorf("the open policy refused an address: %v", err)
	}
}

// TestPolicyAddressesInvalid proves address rules that could be misread
// are refused with the rule named.
func TestPolicyAddressesInvalid(t *testing.T) {
	for _, c := range []struct{ addresses, want string }{
		{`[{"hosts": [], "cidrs": ["192.0.2.0/24"]}]`, "addresses[0]: no hosts"},
		{`[{"hosts": ["Bad Host"], "cidrs": []}]`, `addresses[0]: host "Bad Host"`},
		{`[{"hosts": ["h1"], "cidrs": ["192.0.2.10/24"]}]`, "host bits set; write 192.0.2.0/24"},
		{`[{"hosts": ["h1"], "cidrs": ["::ffff:192.0.2.0/120"]}]`, "IPv4-mapped"},
		{`[{"hosts": ["h1"], "cidrs": [""]}]`, "not a CIDR"},
		{`[{"hosts": ["h1"], "cidrs": ["192.0.2.10"]}]`, "no '/'"},
		{`[{"hosts": ["h1"], "cidrs": ["fe80::/64%eth0"]}]`, "netip.ParsePrefix"},
		{`[{"hosts": ["h1"], "cidrs": []}, {"hosts": ["h2", "h1"], "cidrs": []}]`, `addresses[1]: host "h1" has an address rule already`},
	} {
		doc := `{"v": 1, "default": "allow", "rules": [], "addresses": ` + c.addresses + `}`
		if _, err := DecodePolicy("k", []byte(doc)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to say %q", c.addresses, err, c.want)
		}
	}
}

// TestClosedPolicy proves the policy of a document that does not validate
// allows no claim and no address, says why, and is itself a policy a valid
// document can state (it allows nothing a valid document could not).
func TestClosedPolicy(t *testing.T) {
	if _, _, err := ClosedPolicy.Claim("web", "h1", 10, 10); !errors.Is(err, ErrClaimRefused) || !strings.Contains(err.Error(), "does not validate") {
		t.Errorf("closed policy: claim %v, want refused because the document does not validate", err)
	}
	if err := ClosedPolicy.Address("h1", netip.MustParseAddr("192.0.2.10")); !errors.Is(err, ErrForeignAddress) || !strings.Contains(err.Error(), "does not validate") {
		t.Errorf("closed policy: address %v, want refused because the document does not validate", err)
	}
	if err := ClosedPolicy.Validate(); err != nil {
		t.Errorf("the closed policy is not one a valid document can state: %v", err)
	}
	if !ClosedPolicy.Closed() || OpenPolicy.Closed() || (*Policy)(nil).Closed() {
		t.Error("Closed() is true only for ClosedPolicy")
	}
}
