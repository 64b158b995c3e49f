package proxy

import "testing"

func TestPolicy(t *testing.T) {
	p, err := NewPolicy([]string{"c.example.org."}, []string{"Example.COM", ".internal.test", "10.0.0.0/8", "192.0.2.7", "2001:db8::/32"})
	if err != nil {
		t.Fatal(err)
	}
	for host, allowed := range map[string]bool{
		"web.shop.c.example.org":   true,  // in the zone
		"WEB.shop.c.example.org.":  true,  // case and trailing dot do not matter
		"c.example.org":            true,  // the apex itself
		"evilc.example.org":        false, // a suffix match must end at a dot
		"example.com":              true,
		"www.example.com":          true,
		"example.com.evil.net":     false,
		"db.internal.test":         true,
		"google.com":               false,
		"10.1.2.3":                 true,
		"11.1.2.3":                 false,
		"192.0.2.7":                true,
		"192.0.2.8":                false,
		"[2001:db8::1]":            true,
		"2001:db9::1":              false,
		"::ffff:10.0.0.1":          true, // IPv4-mapped is judged as IPv4
		"":                         false,
		"bad name.c.example.org":   false,
		"../../etc.c.example.org/": false,
	} {
		err := p.Check(host)
		if allowed && err != nil {
			t.Errorf("Check(%q) = %v, want allowed", host, err)
		}
		if !allowed && err == nil {
			t.Errorf("Check(%q) allowed, want refused", host)
		}
	}
	if !p.InZones("web.shop.c.example.org") || p.InZones("www.example.com") {
		t.Error("InZones must be true for the zone only, not for allowed suffixes")
	}
}

func TestPolicyRefusesToAllowNothing(t *testing.T) {
	if _, err := NewPolicy(nil, nil); err == nil {
		t.Error("a policy with no zones and no allow list was accepted")
	}
	for _, bad := range []string{"10.0.0.0/33", "not a name", "a/b"} {
		if _, err := NewPolicy([]string{"c.example.org"}, []string{bad}); err == nil {
			t.Errorf("allow entry %q accepted", bad)
		}
	}
}

// The zones and allowed suffixes are matched by record.InZone, the test the
// plugin uses: at a label boundary, whatever the case or trailing dot.
func TestPolicyZoneBoundaries(t *testing.T) {
	p, err := NewPolicy([]string{"C.Example.Org"}, []string{"internal.test."})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Zones(); len(got) != 1 || got[0] != "c.example.org." {
		t.Errorf("Zones() = %q, want the canonical [c.example.org.]", got)
	}
	for host, in := range map[string]bool{
		"c.example.org": true, "X.C.EXAMPLE.ORG.": true, "evilc.example.org": false,
		"c.example.org.evil": false, "example.org": false,
	} {
		if p.InZones(host) != in {
			t.Errorf("InZones(%q) = %v, want %v", host, !in, in)
		}
	}
	if p.Check("db.internal.test") != nil || p.Check("xinternal.test") == nil {
		t.Error("allowed suffix internal.test must admit db.internal.test and refuse xinternal.test")
	}
}
