package record

import (
	"errors"
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
