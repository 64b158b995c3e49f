package berth

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coredns/caddy"
	"github.com/hashicorp/consul/api"
)

// TestParse proves every Corefile option of the berth stanza is read into
// the config, and that defaults apply when an option is absent.
func TestParse(t *testing.T) {
	t.Setenv("CONSUL_HTTP_ADDR", "")
	t.Setenv("CONSUL_HTTP_TOKEN", "")
	t.Setenv("CONSUL_HTTP_SSL", "")
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	c := caddy.NewTestController("dns", `berth C.Example.ORG d.example.org {
		consul 10.0.0.1:8501
		token_file `+tokenFile+`
		tls /etc/berth/cert.pem /etc/berth/key.pem /etc/berth/ca.pem
		datacenter dc2
		prefix /containers/berth/
		ttl 0
		ns NS1.c.example.org 192.0.2.53 2001:db8::53 ::ffff:192.0.2.54
		ns ns2.example.net.
		resync 90s
		refresh 1h
		retry 600
		expire 2w
		allow_loopback
		fallthrough in-addr.arpa
	}`)
	cfg, err := parse(c)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if want := []string{"c.example.org.", "d.example.org."}; !slices.Equal(cfg.zones, want) {
		t.Errorf("zones %v, want %v (normalized)", cfg.zones, want)
	}
	if cfg.consul.Address != "10.0.0.1:8501" {
		t.Errorf("consul address %q", cfg.consul.Address)
	}
	if cfg.consul.TokenFile != tokenFile || cfg.consul.Token != "" {
		t.Errorf("token file %q token %q", cfg.consul.TokenFile, cfg.consul.Token)
	}
	tls := cfg.consul.TLSConfig
	if tls.CertFile != "/etc/berth/cert.pem" || tls.KeyFile != "/etc/berth/key.pem" || tls.CAFile != "/etc/berth/ca.pem" || cfg.consul.Scheme != "https" {
		t.Errorf("tls %+v scheme %q, want the three files and https", tls, cfg.consul.Scheme)
	}
	if cfg.consul.Datacenter != "dc2" {
		t.Errorf("datacenter %q", cfg.consul.Datacenter)
	}
	if cfg.prefix != "containers/berth" {
		t.Errorf("prefix %q, want slashes trimmed", cfg.prefix)
	}
	if cfg.ttl != 0 {
		t.Errorf("ttl %d, want 0", cfg.ttl)
	}
	wantNS := []NSRecord{
		{Name: "NS1.c.example.org", Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.53"), netip.MustParseAddr("2001:db8::53"), netip.MustParseAddr("192.0.2.54")}},
		{Name: "ns2.example.net."},
	}
	if len(cfg.ns) != 2 || cfg.ns[0].Name != wantNS[0].Name || !slices.Equal(cfg.ns[0].Addrs, wantNS[0].Addrs) ||
		cfg.ns[1].Name != wantNS[1].Name || len(cfg.ns[1].Addrs) != 0 {
		t.Errorf("ns %+v, want %+v (IPv4-mapped unmapped)", cfg.ns, wantNS)
	}
	if cfg.resync != 90*time.Second { // not a wait: the directive's value
		t.Errorf("resync %v", cfg.resync)
	}
	if !cfg.loopback {
		t.Error("allow_loopback not read")
	}
	if want := (soaTimers{refresh: 3600, retry: 600, expire: 336 * 3600}); cfg.timers != want {
		t.Errorf("SOA timers %+v, want %+v", cfg.timers, want)
	}
	if !cfg.fallSet || !slices.Equal(cfg.fall, []string{"in-addr.arpa"}) {
		t.Errorf("fallthrough %v set=%v", cfg.fall, cfg.fallSet)
	}

	// The ns line's name ends up lower case in the zone, with its glue.
	z := NewZone(cfg.zones[0], cfg.ttl, cfg.ns, nil)
	z.MarkLoaded()
	if !exists(z, "ns1.c.example.org.") {
		t.Error("ns1.c.example.org. (from `ns NS1.c.example.org ...`) is not in the zone")
	}
}

// TestParseDefaults proves what an empty stanza gives: the server block's
// zones, prefix berth, TTL 5, resync 5m, no fallthrough, Consul's defaults.
func TestParseDefaults(t *testing.T) {
	t.Setenv("CONSUL_HTTP_ADDR", "")
	t.Setenv("CONSUL_HTTP_TOKEN", "")
	c := caddy.NewTestController("dns", `berth`)
	c.ServerBlockKeys = []string{"c.example.org:53"}
	cfg, err := parse(c)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.zones, []string{"c.example.org."}) {
		t.Errorf("zones %v, want the server block's c.example.org.", cfg.zones)
	}
	if cfg.loopback {
		t.Error("allow_loopback is on by default")
	}
	if cfg.timers != defaultTimers || defaultTimers.refresh != 300 || defaultTimers.expire != 1209600 {
		t.Errorf("SOA timers %+v, want the defaults 300/60/1209600", cfg.timers)
	}
	if cfg.prefix != "berth" || cfg.ttl != 5 || cfg.resync != 5*time.Minute || cfg.fallSet || len(cfg.ns) != 0 { // not a wait: the default
		t.Errorf("defaults: prefix %q ttl %d resync %v fallthrough %v ns %v", cfg.prefix, cfg.ttl, cfg.resync, cfg.fallSet, cfg.ns)
	}
	if def := api.DefaultConfig(); cfg.consul.Address != def.Address || cfg.consul.Token != "" || cfg.consul.Scheme != def.Scheme {
		t.Errorf("consul %q token %q, want the client's default", cfg.consul.Address, cfg.consul.Token)
	}

	// token, and fallthrough without zones; tls after consul with a scheme keeps it.
	c = caddy.NewTestController("dns", `berth c.example.org {
		consul https://consul.example.net:8501
		token abc-123
		tls c.pem k.pem ca.pem
		fallthrough
	}`)
	cfg, err = parse(c)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.consul.Token != "abc-123" || cfg.consul.Address != "https://consul.example.net:8501" {
		t.Errorf("token %q address %q", cfg.consul.Token, cfg.consul.Address)
	}
	if !cfg.fallSet || len(cfg.fall) != 0 {
		t.Errorf("bare fallthrough: %v set=%v", cfg.fall, cfg.fallSet)
	}
	for _, ttl := range []uint32{0, 60, 3600} {
		cfg, err := parse(caddy.NewTestController("dns", fmt.Sprintf("berth c.example.org {\nttl %d\n}", ttl)))
		if err != nil || cfg.ttl != ttl {
			t.Errorf("ttl %d: %v, %+v", ttl, err, cfg)
		}
	}
}

// TestParseErrors proves every bad stanza is refused, each with an error
// that says what is wrong.
func TestParseErrors(t *testing.T) {
	t.Setenv("CONSUL_HTTP_ADDR", "")
	t.Setenv("CONSUL_HTTP_TOKEN", "")
	missing := filepath.Join(t.TempDir(), "no-such-token")
	tests := []struct {
		name     string
		corefile string
		errWant  string
	}{
		{"unknown property", "berth c.example.org {\n bogus 1\n}", `unknown property "bogus"`},
		{"second berth in the block", "berth c.example.org\nberth d.example.org", "once per Server Block"},
		{"consul without address", "berth c.example.org {\n consul\n}", "Wrong argument count"},
		{"consul with two addresses", "berth c.example.org {\n consul a:1 b:2\n}", "Wrong argument count"},
		{"token without value", "berth c.example.org {\n token\n}", "Wrong argument count"},
		{"token_file missing", "berth c.example.org {\n token_file " + missing + "\n}", "token_file"},
		{"token_file without value", "berth c.example.org {\n token_file\n}", "Wrong argument count"},
		{"tls with two files", "berth c.example.org {\n tls c.pem k.pem\n}", "tls needs CERT KEY CA"},
		{"datacenter without value", "berth c.example.org {\n datacenter\n}", "Wrong argument count"},
		{"prefix only slashes", "berth c.example.org {\n prefix //\n}", `prefix "//": empty`},
		{"prefix without value", "berth c.example.org {\n prefix\n}", "Wrong argument count"},
		{"ttl negative", "berth c.example.org {\n ttl -1\n}", "ttl must be"},
		{"ttl not a number", "berth c.example.org {\n ttl 5s\n}", "ttl must be"},
		{"ttl over an hour", "berth c.example.org {\n ttl 3601\n}", "ttl must be"},
		{"ttl over 32 bits", "berth c.example.org {\n ttl 4294967296\n}", "ttl must be"},
		{"ttl without value", "berth c.example.org {\n ttl\n}", "Wrong argument count"},
		{"ns without name", "berth c.example.org {\n ns\n}", "Wrong argument count"},
		{"ns with a bad address", "berth c.example.org {\n ns ns1.c.example.org 192.0.2.300\n}", `"192.0.2.300" is not an IP address`},
		{"ns with a name as address", "berth c.example.org {\n ns ns1.c.example.org ns2.c.example.org\n}", "is not an IP address"},
		{"ns with a CIDR", "berth c.example.org {\n ns ns1.c.example.org 192.0.2.0/24\n}", "is not an IP address"},
		{"ns that is not a domain name", "berth c.example.org {\n ns a..b\n}", "is not a domain name"},
		{"resync under a second", "berth c.example.org {\n resync 500ms\n}", "resync must be"},
		{"resync not a duration", "berth c.example.org {\n resync 5\n}", "resync must be"},
		{"resync without value", "berth c.example.org {\n resync\n}", "Wrong argument count"},
		{"consul port out of range", "berth c.example.org {\n consul 127.0.0.1:99999\n}", "port from 1 to 65535"},
		{"consul without a port", "berth c.example.org {\n consul consul.example.org\n}", "want host:port"},
		{"consul with another scheme", "berth c.example.org {\n consul ftp://consul:21\n}", `scheme "ftp"`},
		{"prefix with an empty segment", "berth c.example.org {\n prefix a//b\n}", "empty segment"},
		{"ns outside the zone with glue", "berth c.example.org {\n ns ns1.example.net 192.0.2.53\n}", "glue"},
		{"allow_loopback with a value", "berth c.example.org {\n allow_loopback yes\n}", "Wrong argument count"},
		{"refresh without value", "berth c.example.org {\n refresh\n}", "Wrong argument count"},
		{"refresh not a duration", "berth c.example.org {\n refresh soon\n}", "neither a duration nor a number"},
		{"refresh in weeks and days", "berth c.example.org {\n refresh 1w2d\n}", "neither a duration nor a number"},
		{"retry of zero", "berth c.example.org {\n retry 0\n}", "must be from 1s"},
		{"expire over 2^31 s", "berth c.example.org {\n expire 2147483648\n}", "must be from 1s"},
		{"expire before refresh", "berth c.example.org {\n refresh 2h\n expire 1h\n}", "expire (3600s) must be longer than refresh (7200s)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parse(caddy.NewTestController("dns", tc.corefile))
			if err == nil {
				t.Fatalf("accepted:\n%s\nconfig %+v", tc.corefile, cfg)
			}
			if !strings.Contains(err.Error(), tc.errWant) {
				t.Errorf("error %q, want it to contain %q", err, tc.errWant)
			}
		})
	}
}

// TestParseZoneOutsideServerBlock proves a zone on the berth line outside
// the server block's zones is refused at start; one inside is accepted.
func TestParseZoneOutsideServerBlock(t *testing.T) {
	for corefile, ok := range map[string]bool{"berth d.example.org": false, "berth sub.c.example.org": true, "berth c.example.org": true} {
		c := caddy.NewTestController("dns", corefile)
		c.ServerBlockKeys = []string{"c.example.org:53"}
		_, err := parse(c)
		if (err == nil) != ok || (err != nil && !strings.Contains(err.Error(), "outside its server block")) {
			t.Errorf("%s in block c.example.org: %v, want accepted=%v", corefile, err, ok)
		}
	}
}

// TestOnThisMachine proves responses are left uncompressed only from a
// Consul on this machine (see newConsulClient).
func TestOnThisMachine(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8500": true, "localhost:8500": true, "http://127.0.0.1:8500": true, "https://[::1]:8501": true,
		"unix:///var/run/consul.sock": true, "[::1]:8500": true,
		"10.0.0.5:8500": false, "consul.service.dc1:8500": false, "https://consul.example.org": false, "192.0.2.1": false,
	} {
		if got := onThisMachine(addr); got != want {
			t.Errorf("onThisMachine(%q) = %v, want %v", addr, got, want)
		}
	}
}
