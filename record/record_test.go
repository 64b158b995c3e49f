package record

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// TestLabel proves that hostile names sanitize to one valid label, or to ""
// when nothing publishable is left (README.md#words).
func TestLabel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string
	}{
		{"web-1", "web-1"},
		{"Web_1", "web-1"},               // upper case and underscore
		{"my.container", "my-container"}, // a dot would make two labels
		{"_http", "http"},                // no leading underscore survives
		{"a__b--c", "a-b-c"},             // runs fold to one dash
		{"--edge--", "edge"},             // dashes cut at both ends
		{"ünïcødé", "n-c-d"},             // non-ASCII letters become dashes
		{"日本語", ""},                      // nothing ASCII left: not publishable
		{"!!!", ""},                      // only punctuation: not publishable
		{"...", ""},                      // only dots: not publishable
		{"", ""},                         // empty stays empty
		{"a\x00b\nc", "a-b-c"},           // control characters
		{"a b\tc", "a-b-c"},              // white space
		{"😀app😀", "app"},                 // emoji cut at the edges
		{strings.Repeat("a", 100), strings.Repeat("a", 63)}, // cut to 63 octets
		// The cut lands on a dash: it is trimmed rather than left trailing.
		{strings.Repeat("a", 62) + "_" + strings.Repeat("b", 30), strings.Repeat("a", 62)},
	}
	for _, tc := range tests {
		got := Label(tc.in)
		if got != tc.want {
			t.Errorf("Label(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if got != "" {
			if err := ValidLabel(got); err != nil {
				t.Errorf("Label(%q) = %q, which ValidLabel rejects: %v", tc.in, got, err)
			}
		}
		if again := Label(got); again != got {
			t.Errorf("Label is not idempotent on %q: %q then %q", tc.in, got, again)
		}
	}
}

// TestServiceName proves dotted service names are sanitized label by label
// and labels that sanitize to nothing are dropped.
func TestServiceName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string
	}{
		{"api.shop", "api.shop"},
		{"API.Shop", "api.shop"},
		{"my_app.my_project", "my-app.my-project"},
		{"a..b", "a.b"},                    // empty label dropped
		{".a.", "a"},                       // leading and trailing dots dropped
		{"_http._tcp.web", "http.tcp.web"}, // underscores cannot sneak in DNS-SD labels
		{"!!!.???", ""},                    // nothing left: not publishable
		{"", ""},
		{"ünï.shop", "n.shop"},
		{strings.Repeat("x", 70) + ".shop", strings.Repeat("x", 63) + ".shop"},
		// Sanitizing does not reject the reserved label; ValidService does.
		{"web.hosts", "web.hosts"},
	}
	for _, tc := range tests {
		if got := ServiceName(tc.in); got != tc.want {
			t.Errorf("ServiceName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestValidLabel proves only already-sanitized labels are accepted.
func TestValidLabel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in string
		ok bool
	}{
		{"web-1", true},
		{"0", true},
		{strings.Repeat("a", 63), true},
		{strings.Repeat("a", 64), false}, // over 63 octets
		{"", false},
		{"Web", false},
		{"-web", false},
		{"web-", false},
		{"a--b", false},
		{"a.b", false},
		{"_http", false},
		{"é", false},
	}
	for _, tc := range tests {
		err := ValidLabel(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ValidLabel(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}

// TestValidService proves the service name rules: sanitized labels, at most
// 253 octets, and "hosts" reserved as the last label only.
func TestValidService(t *testing.T) {
	t.Parallel()
	// 63+1+63+1+63+1+61 = 253 octets.
	long253 := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 61)
	tests := []struct {
		in      string
		errWant string // "" = valid
	}{
		{"web", ""},
		{"api.shop", ""},
		{"hosts.web", ""}, // "hosts" is reserved only as the last label
		{"web.hosts-x", ""},
		{long253, ""},
		{"hosts", "reserved"},
		{"web.hosts", "reserved"},
		{"", "empty"},
		{long253 + "d", "over 253"},
		{"a..b", "empty label"},
		{".web", "empty label"},
		{"web.", "empty label"},
		{"Web", "not a sanitized"},
		{"_http._tcp.web", "not a sanitized"},
		{"a_b.shop", "not a sanitized"},
		{strings.Repeat("a", 64) + ".shop", "not a sanitized"},
	}
	for _, tc := range tests {
		err := ValidService(tc.in)
		switch {
		case tc.errWant == "" && err != nil:
			t.Errorf("ValidService(%q) = %v, want valid", tc.in, err)
		case tc.errWant != "" && err == nil:
			t.Errorf("ValidService(%q) = nil, want an error containing %q", tc.in, tc.errWant)
		case tc.errWant != "" && !strings.Contains(err.Error(), tc.errWant):
			t.Errorf("ValidService(%q) = %v, want an error containing %q", tc.in, err, tc.errWant)
		}
	}
}

// TestCheckLength proves the 253-octet limit counts the zone and the dot
// joining it, with or without the zone's trailing dot.
func TestCheckLength(t *testing.T) {
	t.Parallel()
	zone := "c.example.org" // 13 octets
	fits := strings.Repeat("a", 253-1-len(zone))
	tests := []struct {
		name, zone string
		ok         bool
	}{
		{fits, zone, true},
		{fits, zone + ".", true}, // a trailing dot on the zone does not count
		{fits + "a", zone, false},
		{fits + "a", zone + ".", false},
		{strings.Repeat("a", 253), "", true}, // no zone: the name alone
		{strings.Repeat("a", 254), "", false},
		{"web", "", true},
	}
	for _, tc := range tests {
		err := CheckLength(tc.name, tc.zone)
		if (err == nil) != tc.ok {
			t.Errorf("CheckLength(%d octets, %q) = %v, want ok=%v", len(tc.name), tc.zone, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "over 253") {
			t.Errorf("CheckLength error %q does not say the limit", err)
		}
	}
}

// TestKeys proves the KV layout of README.md#consul-kv, with the trailing slash that
// keeps host "a" from matching host "ab".
func TestKeys(t *testing.T) {
	t.Parallel()
	checks := []struct{ got, want string }{
		{HostKey("berth", "h1"), "berth/hosts/h1"},
		{HostsPrefix("berth"), "berth/hosts/"},
		{ContainersPrefix("berth", "h1"), "berth/containers/h1/"},
		{AllContainersPrefix("berth"), "berth/containers/"},
		{ContainerKey("berth", "h1", "abc"), "berth/containers/h1/abc"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	if strings.HasPrefix(ContainerKey("berth", "ab", "x"), ContainersPrefix("berth", "a")) {
		t.Error(`host "a"'s container prefix matches host "ab"'s keys`)
	}
}

// TestHostFromContainerKey proves the key split is strict: exactly
// <prefix>/containers/<host>/<id>, purely lexical (no path resolution), and
// everything else is not one of our documents.
func TestHostFromContainerKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		key      string
		host, id string
		ok       bool
	}{
		{"berth/containers/h1/8ab479f3933f", "h1", "8ab479f3933f", true},
		{"berth/containers/h1/", "", "", false},                          // no id
		{"berth/containers/h1", "", "", false},                           // no slash after the host
		{"berth/containers//8ab479f3933f", "", "", false},                // empty host
		{"berth/containers/h1//8ab479f3933f", "", "", false},             // extra slash: id "/8ab..."
		{"berth/containers/h1/8ab479f3933f/", "", "", false},             // trailing slash: deeper key
		{"berth/containers/h1/x/8ab479f3933f", "", "", false},            // deeper key
		{"berth/containers/h1/../h2/8ab479f3933f", "", "", false},        // "../" does not climb: id has a slash
		{"berth/containers/../8ab479f3933f", "..", "8ab479f3933f", true}, // ".." is taken literally as a host name ...
		{"berth//containers/h1/8ab479f3933f", "", "", false},             // doubled slash in the prefix part
		{"other/containers/h1/8ab479f3933f", "", "", false},              // another prefix
		{"berth/hosts/h1", "", "", false},
		{"berthx/containers/h1/8ab479f3933f", "", "", false},
		{"", "", "", false},
	}
	for _, tc := range tests {
		host, id, ok := HostFromContainerKey("berth", tc.key)
		if host != tc.host || id != tc.id || ok != tc.ok {
			t.Errorf("HostFromContainerKey(%q) = (%q, %q, %v), want (%q, %q, %v)", tc.key, host, id, ok, tc.host, tc.id, tc.ok)
		}
	}
	// ... and can therefore never match a host: no host document may be named "..".
	if ValidLabel("..") == nil {
		t.Error(`".." is a valid label, so a host document could claim the key above`)
	}
}

const validContainer = `{"v": 1,
 "id": "8ab479f3933f751cbfabf70afe759d96f3d0d92d97c0f2d50ddbd6094cc77b33",
 "name": "web-1", "service": "web.shop", "image": "nginx:1.27",
 "health": "healthy", "paused": false, "priority": 10, "weight": 10,
 "ports": [{"port": 80, "proto": "tcp", "name": "http",
            "addr": "192.0.2.10", "host_port": 32768}]}`

const validHost = `{"v": 1, "name": "host1", "addrs": ["192.0.2.10", "2001:db8::10"],
 "rev": 42, "exporter": "berth-exporter 0.1.0"}`

// mutate applies f to the valid container document as a generic JSON map,
// so that each case changes one field and nothing else.
func mutate(t *testing.T, doc string, f func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func port0(m map[string]any) map[string]any {
	return m["ports"].([]any)[0].(map[string]any)
}

// TestDecodeContainer proves the example document of the spec decodes to
// the expected value.
func TestDecodeContainer(t *testing.T) {
	t.Parallel()
	c, err := DecodeContainer("berth/containers/host1/x", []byte(validContainer))
	if err != nil {
		t.Fatal(err)
	}
	want := Container{V: 1, ID: "8ab479f3933f751cbfabf70afe759d96f3d0d92d97c0f2d50ddbd6094cc77b33",
		Name: "web-1", Service: "web.shop", Image: "nginx:1.27", Health: "healthy",
		Priority: 10, Weight: 10,
		Ports: []Port{{Port: 80, Proto: "tcp", Name: "http", Addr: netip.MustParseAddr("192.0.2.10"), HostPort: 32768}}}
	if c.V != want.V || c.ID != want.ID || c.Name != want.Name || c.Service != want.Service || c.Image != want.Image ||
		c.Health != want.Health || c.Paused || c.Priority != 10 || c.Weight != 10 || len(c.Ports) != 1 || c.Ports[0] != want.Ports[0] {
		t.Errorf("decoded %+v, want %+v", *c, want)
	}
	if c.ShortID() != "8ab479f3933f" {
		t.Errorf("ShortID = %q", c.ShortID())
	}
}

// TestDecodeContainerDefaults proves priority and weight default to 10 when
// absent, while an explicit 0 is kept (absent is not the same as zero).
func TestDecodeContainerDefaults(t *testing.T) {
	t.Parallel()
	absent := mutate(t, validContainer, func(m map[string]any) { delete(m, "priority"); delete(m, "weight") })
	c, err := DecodeContainer("k", absent)
	if err != nil {
		t.Fatal(err)
	}
	if c.Priority != DefaultPriority || c.Weight != DefaultWeight || DefaultPriority != 10 || DefaultWeight != 10 {
		t.Errorf("absent priority/weight decoded as %d/%d, want 10/10", c.Priority, c.Weight)
	}
	zero := mutate(t, validContainer, func(m map[string]any) { m["priority"] = 0; m["weight"] = 0 })
	c, err = DecodeContainer("k", zero)
	if err != nil {
		t.Fatal(err)
	}
	if c.Priority != 0 || c.Weight != 0 {
		t.Errorf("explicit 0/0 decoded as %d/%d", c.Priority, c.Weight)
	}
	null := mutate(t, validContainer, func(m map[string]any) { m["priority"] = nil; m["weight"] = nil })
	if c, err = DecodeContainer("k", null); err != nil || c.Priority != 10 || c.Weight != 10 {
		t.Errorf("null priority/weight: %v, %+v; want the defaults 10/10", err, c)
	}
	// Unknown fields are ignored (README.md#consul-kv).
	extra := mutate(t, validContainer, func(m map[string]any) { m["future"] = map[string]any{"x": 1}; port0(m)["future"] = true })
	if _, err := DecodeContainer("k", extra); err != nil {
		t.Errorf("unknown fields rejected: %v", err)
	}
}

// TestDecodeContainerRejects proves every bad field is rejected with an
// error that names the field (and the key), so the log says what to fix.
func TestDecodeContainerRejects(t *testing.T) {
	t.Parallel()
	const key = "berth/containers/host1/8ab479f3933f"
	tests := []struct {
		name    string
		value   []byte
		errWant string
	}{
		{"not JSON", []byte(`{"v":1,`), "not a JSON object"},
		{"JSON array", []byte(`[1,2]`), "not a JSON object"},
		{"JSON null", []byte(`null`), `no "v" field`},
		{"no version", mutate(t, validContainer, func(m map[string]any) { delete(m, "v") }), `no "v" field`},
		{"version 2", mutate(t, validContainer, func(m map[string]any) { m["v"] = 2 }), "unsupported document version 2"},
		{"version 0", mutate(t, validContainer, func(m map[string]any) { m["v"] = 0 }), "unsupported document version 0"},
		{"version string", mutate(t, validContainer, func(m map[string]any) { m["v"] = "1" }), "not a JSON object"},
		{"too large", []byte(`{"v":1,"image":"` + strings.Repeat("x", MaxDocumentSize) + `"}`), "larger than"},
		{"id short", mutate(t, validContainer, func(m map[string]any) { m["id"] = "8ab479f3933" }), "id:"},
		{"id upper", mutate(t, validContainer, func(m map[string]any) { m["id"] = "8AB479F3933F" }), "id:"},
		{"id not hex", mutate(t, validContainer, func(m map[string]any) { m["id"] = "8ab479f3933g" }), "id:"},
		{"id too long", mutate(t, validContainer, func(m map[string]any) { m["id"] = strings.Repeat("a", 65) }), "id:"},
		{"id path", mutate(t, validContainer, func(m map[string]any) { m["id"] = "../8ab479f3933f" }), "id:"},
		{"name with dots", mutate(t, validContainer, func(m map[string]any) { m["name"] = "web.1" }), "name:"},
		{"name empty", mutate(t, validContainer, func(m map[string]any) { m["name"] = "" }), "name:"},
		{"name upper", mutate(t, validContainer, func(m map[string]any) { m["name"] = "Web-1" }), "name:"},
		{"name 64", mutate(t, validContainer, func(m map[string]any) { m["name"] = strings.Repeat("a", 64) }), "name:"},
		{"service hosts", mutate(t, validContainer, func(m map[string]any) { m["service"] = "web.hosts" }), "service:"},
		{"service underscore", mutate(t, validContainer, func(m map[string]any) { m["service"] = "_http._tcp" }), "service:"},
		{"service empty", mutate(t, validContainer, func(m map[string]any) { m["service"] = "" }), "service:"},
		{"image control char", mutate(t, validContainer, func(m map[string]any) { m["image"] = "nginx\n1" }), "image:"},
		{"image DEL", mutate(t, validContainer, func(m map[string]any) { m["image"] = "nginx\x7f" }), "image:"},
		{"image too long", mutate(t, validContainer, func(m map[string]any) { m["image"] = strings.Repeat("i", MaxImageLen+1) }), "image:"},
		{"health unknown", mutate(t, validContainer, func(m map[string]any) { m["health"] = "ok" }), "health:"},
		{"health empty", mutate(t, validContainer, func(m map[string]any) { m["health"] = "" }), "health:"},
		{"priority negative", mutate(t, validContainer, func(m map[string]any) { m["priority"] = -1 }), "priority:"},
		{"priority 65536", mutate(t, validContainer, func(m map[string]any) { m["priority"] = 65536 }), "priority:"},
		{"weight 65536", mutate(t, validContainer, func(m map[string]any) { m["weight"] = 65536 }), "weight:"},
		{"no ports", mutate(t, validContainer, func(m map[string]any) { m["ports"] = []any{} }), "ports:"},
		{"ports null", mutate(t, validContainer, func(m map[string]any) { m["ports"] = nil }), "ports:"},
		{"port 0", mutate(t, validContainer, func(m map[string]any) { port0(m)["port"] = 0 }), "ports[0]: port 0"},
		{"port 70000", mutate(t, validContainer, func(m map[string]any) { port0(m)["port"] = 70000 }), "ports[0]: port 70000"},
		{"host_port 70000", mutate(t, validContainer, func(m map[string]any) { port0(m)["host_port"] = 70000 }), "ports[0]: host_port 70000"},
		{"host_port absent", mutate(t, validContainer, func(m map[string]any) { delete(port0(m), "host_port") }), "ports[0]: host_port 0"},
		{"proto icmp", mutate(t, validContainer, func(m map[string]any) { port0(m)["proto"] = "icmp" }), "ports[0]: proto"},
		{"proto upper", mutate(t, validContainer, func(m map[string]any) { port0(m)["proto"] = "TCP" }), "ports[0]: proto"},
		{"port name underscore", mutate(t, validContainer, func(m map[string]any) { port0(m)["name"] = "_http" }), "ports[0]: name:"},
		{"addr not an IP", mutate(t, validContainer, func(m map[string]any) { port0(m)["addr"] = "not-an-ip" }), "not-an-ip"},
		{"addr absent", mutate(t, validContainer, func(m map[string]any) { delete(port0(m), "addr") }), "ports[0]: addr: missing"},
		{"addr unspecified v4", mutate(t, validContainer, func(m map[string]any) { port0(m)["addr"] = "0.0.0.0" }), "ports[0]: addr: 0.0.0.0 is unspecified"},
		{"addr unspecified v6", mutate(t, validContainer, func(m map[string]any) { port0(m)["addr"] = "::" }), "ports[0]: addr: :: is unspecified"},
		{"addr zone", mutate(t, validContainer, func(m map[string]any) { port0(m)["addr"] = "fe80::1%eth0" }), "ports[0]: addr: fe80::1%eth0 has a zone"},
		{"addr multicast", mutate(t, validContainer, func(m map[string]any) { port0(m)["addr"] = "224.0.0.1" }), "ports[0]: addr: 224.0.0.1 is multicast"},
		{"second port bad", mutate(t, validContainer, func(m map[string]any) {
			m["ports"] = append(m["ports"].([]any), map[string]any{"port": 443, "proto": "tcp", "addr": "192.0.2.10", "host_port": 0})
		}), "ports[1]: host_port 0"},
		{"priority not a number", mutate(t, validContainer, func(m map[string]any) { m["priority"] = "high" }), "priority"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := DecodeContainer(key, tc.value)
			if err == nil {
				t.Fatalf("accepted %s: %+v", tc.value, c)
			}
			if c != nil {
				t.Errorf("returned a document along with the error: %+v", c)
			}
			if !strings.Contains(err.Error(), tc.errWant) {
				t.Errorf("error %q does not contain %q", err, tc.errWant)
			}
			if tc.name != "too large" && !strings.Contains(err.Error(), key) {
				t.Errorf("error %q does not name the key", err)
			}
			if isVersion := strings.HasPrefix(tc.name, "version ") && tc.name != "version string"; errors.Is(err, ErrUnsupportedVersion) != isVersion {
				t.Errorf("errors.Is(err, ErrUnsupportedVersion) = %v, want %v", !isVersion, isVersion)
			}
		})
	}
}

// TestDecodeContainerNormalizes proves an IPv4-mapped IPv6 address becomes
// IPv4, so that it is served as an A record.
func TestDecodeContainerNormalizes(t *testing.T) {
	t.Parallel()
	doc := mutate(t, validContainer, func(m map[string]any) { port0(m)["addr"] = "::ffff:192.0.2.10" })
	c, err := DecodeContainer("k", doc)
	if err != nil {
		t.Fatal(err)
	}
	if a := c.Ports[0].Addr; !a.Is4() || a.String() != "192.0.2.10" {
		t.Errorf("addr = %v, want 192.0.2.10 as IPv4", a)
	}
}

// TestDecodeHost proves the host document example decodes, and each bad
// field is rejected naming it.
func TestDecodeHost(t *testing.T) {
	t.Parallel()
	h, err := DecodeHost("berth/hosts/host1", []byte(validHost))
	if err != nil {
		t.Fatal(err)
	}
	if h.Name != "host1" || h.Rev != 42 || len(h.Addrs) != 2 || h.Addrs[0].String() != "192.0.2.10" || h.Addrs[1].String() != "2001:db8::10" || h.Exporter != "berth-exporter 0.1.0" {
		t.Errorf("decoded %+v", *h)
	}
	mapped := mutate(t, validHost, func(m map[string]any) { m["addrs"] = []any{"::ffff:192.0.2.10"} })
	if h, err := DecodeHost("k", mapped); err != nil || !h.Addrs[0].Is4() {
		t.Errorf("IPv4-mapped host address: %v, %+v; want it unmapped to IPv4", err, h)
	}
	tests := []struct {
		name    string
		value   []byte
		errWant string
	}{
		{"not JSON", []byte(`garbage`), "not a JSON object"},
		{"version 2", mutate(t, validHost, func(m map[string]any) { m["v"] = 2 }), "unsupported document version 2"},
		{"name with dot", mutate(t, validHost, func(m map[string]any) { m["name"] = "host1.example" }), "name:"},
		{"name empty", mutate(t, validHost, func(m map[string]any) { m["name"] = "" }), "name:"},
		{"no addrs", mutate(t, validHost, func(m map[string]any) { m["addrs"] = []any{} }), "addrs: no address"},
		{"addrs absent", mutate(t, validHost, func(m map[string]any) { delete(m, "addrs") }), "addrs: no address"},
		{"addr bad", mutate(t, validHost, func(m map[string]any) { m["addrs"] = []any{"192.0.2.10", "not-an-ip"} }), "not-an-ip"},
		{"addr unspecified", mutate(t, validHost, func(m map[string]any) { m["addrs"] = []any{"192.0.2.10", "::"} }), "addrs[1]: :: is unspecified"},
		{"addr multicast", mutate(t, validHost, func(m map[string]any) { m["addrs"] = []any{"ff02::1"} }), "addrs[0]: ff02::1 is multicast"},
		{"rev negative", mutate(t, validHost, func(m map[string]any) { m["rev"] = -1 }), "rev"},
	}
	for _, tc := range tests {
		h, err := DecodeHost("berth/hosts/host1", tc.value)
		if err == nil {
			t.Errorf("%s: accepted: %+v", tc.name, h)
			continue
		}
		if !strings.Contains(err.Error(), tc.errWant) || !strings.Contains(err.Error(), "berth/hosts/host1") {
			t.Errorf("%s: error %q does not contain %q and the key", tc.name, err, tc.errWant)
		}
	}
}

// TestHealthy proves which containers may receive traffic (README.md#words).
func TestHealthy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		health string
		paused bool
		want   bool
	}{
		{HealthHealthy, false, true},
		{HealthNone, false, true},
		{HealthStarting, false, false},
		{HealthUnhealthy, false, false},
		{HealthHealthy, true, false},
		{HealthNone, true, false},
	}
	for _, tc := range tests {
		c := &Container{Health: tc.health, Paused: tc.paused}
		if got := c.Healthy(); got != tc.want {
			t.Errorf("health %q paused %v: Healthy() = %v, want %v", tc.health, tc.paused, got, tc.want)
		}
	}
}

// TestPortName proves the built-in IANA table, per protocol.
func TestPortName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		port  int
		proto string
		want  string
	}{
		{80, "tcp", "http"}, {443, "tcp", "https"}, {5432, "tcp", "postgresql"},
		{6379, "tcp", "redis"}, {3306, "tcp", "mysql"}, {53, "udp", "domain"},
		{53, "tcp", "domain"}, {22, "tcp", "ssh"},
		{80, "udp", ""}, {12345, "tcp", ""}, {0, "tcp", ""},
	}
	for _, tc := range tests {
		if got := PortName(tc.port, tc.proto); got != tc.want {
			t.Errorf("PortName(%d, %q) = %q, want %q", tc.port, tc.proto, got, tc.want)
		}
		if got := PortName(tc.port, tc.proto); got != "" && ValidLabel(got) != nil {
			t.Errorf("PortName(%d, %q) = %q is not a valid label", tc.port, tc.proto, got)
		}
	}
}

// TestCleanPrefix proves the one prefix rule: slashes around it dropped,
// empty prefixes and segments refused.
func TestCleanPrefix(t *testing.T) {
	for in, want := range map[string]string{"berth": "berth", "/berth/": "berth", "a/b": "a/b", "/a/b": "a/b"} {
		if got, err := CleanPrefix(in); err != nil || got != want {
			t.Errorf("CleanPrefix(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "/", "//", "a//b", "a b"} {
		if got, err := CleanPrefix(bad); err == nil {
			t.Errorf("CleanPrefix(%q) = %q, want an error", bad, got)
		}
	}
}

// TestContainerAliases proves a container document's aliases are checked
// as service names are: sanitized, not the service itself, no repeats, at
// most MaxAliases; and that a document without any stays valid.
func TestContainerAliases(t *testing.T) {
	base := func(aliases ...string) *Container {
		return &Container{V: 1, ID: strings.Repeat("a", 64), Name: "web-1", Service: "web.shop", Image: "img",
			Health: HealthNone, Priority: 10, Weight: 10, Aliases: aliases,
			Ports: []Port{{Port: 80, Proto: "tcp", Addr: netip.MustParseAddr("192.0.2.10"), HostPort: 8080}}}
	}
	for _, ok := range [][]string{nil, {"www.shop"}, {"www.shop", "shop"}} {
		if err := base(ok...).Validate(); err != nil {
			t.Errorf("aliases %v: %v", ok, err)
		}
	}
	for _, bad := range [][]string{{"WWW.shop"}, {"web.shop"}, {"a", "a"}, {"x.hosts"}, {""},
		{"a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9"}} {
		if err := base(bad...).Validate(); err == nil {
			t.Errorf("aliases %q accepted", bad)
		}
	}
}

// TestContainerTags proves tags must fit their TXT string: non-empty,
// printable, without commas, 255 octets at most as tags=a,b.
func TestContainerTags(t *testing.T) {
	base := func(tags ...string) *Container {
		return &Container{V: 1, ID: strings.Repeat("a", 64), Name: "web-1", Service: "web", Image: "img",
			Health: HealthNone, Priority: 10, Weight: 10, Tags: tags,
			Ports: []Port{{Port: 80, Proto: "tcp", Addr: netip.MustParseAddr("192.0.2.10"), HostPort: 8080}}}
	}
	for _, ok := range [][]string{nil, {"prod"}, {"prod", "eu west"}, {strings.Repeat("x", 250)}} {
		if err := base(ok...).Validate(); err != nil {
			t.Errorf("tags %q: %v", ok, err)
		}
	}
	for _, bad := range [][]string{{""}, {"a,b"}, {"bell\a"}, {strings.Repeat("x", 251)}} {
		if err := base(bad...).Validate(); err == nil {
			t.Errorf("tags %q accepted", bad)
		}
	}
	if got := TagsTXT([]string{"a", "b"}); got != "tags=a,b" {
		t.Errorf("TagsTXT = %q", got)
	}
}
