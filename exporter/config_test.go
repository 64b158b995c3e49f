package exporter

import (
	"io"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berthdns/berth/record"
)

// TestParseFlags proves every flag is read from the command line and from
// its BERTH_ variable, the command line wins, an empty variable empties a
// string flag (and only a string flag), and bad values are refused with an
// error that names the flag or variable.
func TestParseFlags(t *testing.T) {
	t.Parallel()
	def := DefaultConfig()
	tests := []struct {
		desc    string
		args    []string
		env     map[string]string
		check   func(Config) bool
		wantErr string // a part of the error; "" for none
	}{
		{desc: "defaults", check: func(c Config) bool {
			return c.Listen == "127.0.0.1:9753" && c.Prefix == "berth" && c.SessionTTL == 10*time.Second && c.Resync == 30*time.Second && !c.Explicit // not a wait: flag values
		}},
		{desc: "flags", args: []string{"--node", "dh1", "--prefix", "p/q", "--session-ttl", "15s", "--resync", "1m", "--explicit",
			"--listen", "127.0.0.1:9", "--advertise-addr", "192.0.2.1, 2001:db8::1"},
			check: func(c Config) bool {
				return c.Node == "dh1" && c.Prefix == "p/q" && c.SessionTTL == 15*time.Second && c.Resync == time.Minute && c.Explicit && // not a wait: flag values
					c.Listen == "127.0.0.1:9" && slices.Equal(c.AdvertiseAddrs, []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")})
			}},
		{desc: "variables", env: map[string]string{"BERTH_NODE": "dh2", "BERTH_SESSION_TTL": "20s", "BERTH_EXPLICIT": "true",
			"BERTH_DEREGISTER_ON_EXIT": "1", "BERTH_LOG_FORMAT": "json"},
			check: func(c Config) bool {
				return c.Node == "dh2" && c.SessionTTL == 20*time.Second && c.Explicit && c.DeregisterOnExit && c.LogFormat == "json" // not a wait: flag values
			}},
		{desc: "the command line wins", args: []string{"--node", "flag"}, env: map[string]string{"BERTH_NODE": "env"},
			check: func(c Config) bool { return c.Node == "flag" }},
		{desc: "empty BERTH_LISTEN turns the listener off", env: map[string]string{"BERTH_LISTEN": ""},
			check: func(c Config) bool { return c.Listen == "" }},
		{desc: "empty non-string variables are ignored", env: map[string]string{"BERTH_EXPLICIT": "", "BERTH_SESSION_TTL": ""},
			check: func(c Config) bool { return !c.Explicit && c.SessionTTL == def.SessionTTL }},
		{desc: "empty BERTH_PREFIX is refused", env: map[string]string{"BERTH_PREFIX": ""}, wantErr: "--prefix"},
		{desc: "bad variable", env: map[string]string{"BERTH_RESYNC": "soon"}, wantErr: "BERTH_RESYNC"},
		{desc: "session TTL below Consul's minimum", args: []string{"--session-ttl", "5s"}, wantErr: "10s to 24h"},
		{desc: "prefix with slashes around it, as the plugin reads it (record.CleanPrefix)", args: []string{"--prefix", "/berth/"},
			check: func(c Config) bool { return c.Prefix == "berth" }},
		{desc: "prefix with an empty segment", args: []string{"--prefix", "a//b"}, wantErr: "--prefix"},
		{desc: "wildcard advertise address", args: []string{"--advertise-addr", "0.0.0.0"}, wantErr: "unspecified"},
		{desc: "loopback advertise address without the opt-in", args: []string{"--advertise-addr", "127.0.0.1"}, wantErr: "loopback"},
		{desc: "loopback advertise address from the variable without the opt-in", env: map[string]string{"BERTH_ADVERTISE_ADDR": "::1"},
			wantErr: "loopback"},
		{desc: "loopback advertise address with --allow-loopback", args: []string{"--advertise-addr", "127.0.0.1", "--allow-loopback"},
			check: func(c Config) bool {
				return c.AllowLoopback && slices.Equal(c.AdvertiseAddrs, []netip.Addr{netip.MustParseAddr("127.0.0.1")})
			}},
		{desc: "loopback advertise address with BERTH_ALLOW_LOOPBACK", env: map[string]string{"BERTH_ADVERTISE_ADDR": "127.0.0.1",
			"BERTH_ALLOW_LOOPBACK": "true"}, check: func(c Config) bool { return c.AllowLoopback && len(c.AdvertiseAddrs) == 1 }},
		{desc: "loopback is off by default", check: func(c Config) bool { return !c.AllowLoopback }},
		{desc: "link-local advertise address, even with the opt-in", args: []string{"--advertise-addr", "169.254.10.1", "--allow-loopback"},
			wantErr: "link-local"},
		{desc: "IPv6 link-local advertise address", args: []string{"--advertise-addr", "fe80::1"}, wantErr: "link-local"},
		{desc: "multicast advertise address", args: []string{"--advertise-addr", "ff02::1"}, wantErr: "multicast"},
		{desc: "advertise address that is not one", args: []string{"--advertise-addr", "host.example"}, wantErr: "--advertise-addr"},
		{desc: "listen port out of range", args: []string{"--listen", "127.0.0.1:99999"}, wantErr: "0 to 65535"},
		{desc: "listen port out of range from the variable", env: map[string]string{"BERTH_LISTEN": ":99999"}, wantErr: "--listen"},
		{desc: "listen without a port", args: []string{"--listen", "127.0.0.1"}, wantErr: "--listen"},
		{desc: "listen on every interface", args: []string{"--listen", ":9753"}, check: func(c Config) bool { return c.Listen == ":9753" }},
		{desc: "--version", args: []string{"--version"}, check: func(c Config) bool { return c.ShowVersion }},
		{desc: "BERTH_VERSION is not --version", env: map[string]string{"BERTH_VERSION": "true"},
			check: func(c Config) bool { return !c.ShowVersion }},
		{desc: "kv layout both by default", check: func(c Config) bool { return c.KVLayout == record.WriteBoth }},
		{desc: "--kv-layout 2", args: []string{"--kv-layout", "2"}, check: func(c Config) bool { return c.KVLayout == record.WriteV2 }},
		{desc: "BERTH_KV_LAYOUT", env: map[string]string{"BERTH_KV_LAYOUT": "1"}, check: func(c Config) bool { return c.KVLayout == record.WriteV1 }},
		{desc: "--kv-layout wins over BERTH_KV_LAYOUT", args: []string{"--kv-layout", "both"}, env: map[string]string{"BERTH_KV_LAYOUT": "2"},
			check: func(c Config) bool { return c.KVLayout == record.WriteBoth }},
		{desc: "empty BERTH_KV_LAYOUT is refused", env: map[string]string{"BERTH_KV_LAYOUT": ""}, wantErr: "--kv-layout"},
		{desc: "bad --kv-layout", args: []string{"--kv-layout", "3"}, wantErr: "want 1, 2 or both"},
		{desc: "log level", args: []string{"--log-level", "loud"}, wantErr: "--log-level"},
		{desc: "stray argument", args: []string{"extra"}, wantErr: "unexpected arguments"},
	}
	for _, tc := range tests {
		lookup := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
		cfg, err := ParseFlags(tc.args, lookup, io.Discard)
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: error %v, want one mentioning %q", tc.desc, err, tc.wantErr)
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.desc, err)
		case tc.wantErr == "" && !tc.check(cfg):
			t.Errorf("%s: got %+v", tc.desc, cfg)
		}
	}
}

// TestUsageKVLayout proves --help names --kv-layout, its variable, its
// values and its default.
func TestUsageKVLayout(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	if _, err := ParseFlags([]string{"--help"}, func(string) (string, bool) { return "", false }, &out); err == nil {
		t.Fatal("--help: no error")
	}
	for _, want := range []string{"--kv-layout string    (BERTH_KV_LAYOUT)", "1 (earlier releases' readers), 2", `(default "both")`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q:\n%s", want, out.String())
		}
	}
}
