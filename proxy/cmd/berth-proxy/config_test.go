package main

import (
	"errors"
	"flag"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berthdns/berth/internal/envflag"
)

// Every flag is read from the command line and from its BERTH_ variable,
// the command line wins, an empty variable empties a string flag only, and
// nonsense is refused with an error that names the flag or variable and
// says what it wants.
func TestParseFlags(t *testing.T) {
	tests := []struct {
		desc    string
		args    []string
		env     map[string]string
		check   func(config) bool
		wantErr string // a part of the error; "" for none
	}{
		{desc: "defaults", args: []string{"--zones", "c.example.org"}, check: func(c config) bool {
			return c.socks == "127.0.0.1:1080" && c.http == "127.0.0.1:3128" && c.metrics == "" && c.maxConns == 1024 &&
				c.idleTimeout == 5*time.Minute && c.logFormat == "text" && slices.Equal(c.zones, []string{"c.example.org"}) // not a wait: flag values
		}},
		{desc: "flags", args: []string{"--zones", "a.test, b.test", "--allow", "10.0.0.0/8", "--dns", "[2001:db8::53]:5353",
			"--max-conns", "7", "--dial-timeout", "1s", "--log-format", "json", "--socks", ""},
			check: func(c config) bool {
				return slices.Equal(c.zones, []string{"a.test", "b.test"}) && slices.Equal(c.allow, []string{"10.0.0.0/8"}) &&
					c.dns == "[2001:db8::53]:5353" && c.maxConns == 7 && c.dialTimeout == time.Second && c.logFormat == "json" && c.socks == "" // not a wait: flag values
			}},
		{desc: "variables", env: map[string]string{"BERTH_ZONES": "c.test", "BERTH_MAX_CONNS": "9", "BERTH_IDLE_TIMEOUT": "1m",
			"BERTH_DNS": "10.0.0.53", "BERTH_LOG_LEVEL": "debug"},
			check: func(c config) bool {
				return slices.Equal(c.zones, []string{"c.test"}) && c.maxConns == 9 && c.idleTimeout == time.Minute && c.dns == "10.0.0.53" // not a wait: flag values
			}},
		{desc: "the command line wins", args: []string{"--zones", "flag.test"}, env: map[string]string{"BERTH_ZONES": "env.test"},
			check: func(c config) bool { return slices.Equal(c.zones, []string{"flag.test"}) }},
		{desc: "empty BERTH_SOCKS turns the SOCKS listener off", env: map[string]string{"BERTH_SOCKS": "", "BERTH_ZONES": "c.test"},
			check: func(c config) bool { return c.socks == "" && c.http != "" }},
		{desc: "empty non-string variables are ignored", env: map[string]string{"BERTH_ZONES": "c.test", "BERTH_MAX_CONNS": ""},
			check: func(c config) bool { return c.maxConns == 1024 }},
		{desc: "bad variable", env: map[string]string{"BERTH_ZONES": "c.test", "BERTH_DIAL_TIMEOUT": "soon"}, wantErr: "BERTH_DIAL_TIMEOUT"},
		{desc: "dns with a port that is no number", args: []string{"--zones", "c.test", "--dns", "notahost:abc"}, wantErr: `--dns "notahost:abc": port "abc"`},
		{desc: "dns with port 0", args: []string{"--zones", "c.test", "--dns", "10.0.0.53:0"}, wantErr: "--dns"},
		{desc: "dns that is no host", args: []string{"--zones", "c.test", "--dns", "a b:53"}, wantErr: "neither an IP address nor a domain name"},
		{desc: "max-conns 0", args: []string{"--zones", "c.test", "--max-conns", "0"}, wantErr: "--max-conns 0: must be at least 1"},
		{desc: "negative timeout", args: []string{"--zones", "c.test", "--idle-timeout", "-1s"}, wantErr: "--idle-timeout -1s: must be positive"},
		{desc: "connect shorter than one dial", args: []string{"--zones", "c.test", "--connect-timeout", "1s", "--dial-timeout", "2s"}, wantErr: "--connect-timeout"},
		{desc: "listen address without port", args: []string{"--zones", "c.test", "--socks", "127.0.0.1"}, wantErr: "--socks"},
		{desc: "listen port out of range", args: []string{"--zones", "c.test", "--http", ":70000"}, wantErr: `--http ":70000": port "70000"`},
		{desc: "nothing to serve", args: []string{"--zones", "c.test", "--socks", "", "--http", ""}, wantErr: "nothing to serve"},
		{desc: "neither zones nor allow", wantErr: "--zones"},
		{desc: "bad zone", args: []string{"--zones", "a b"}, wantErr: "not a domain name"},
		{desc: "bad CIDR", args: []string{"--zones", "c.test", "--allow", "10.0.0.0/40"}, wantErr: "allow"},
		{desc: "deny list and own addresses", args: []string{"--zones", "c.test", "--deny", "10.9.0.0/16, 192.0.2.7", "--allow-own-addresses"},
			check: func(c config) bool {
				return slices.Equal(c.deny, []string{"10.9.0.0/16", "192.0.2.7"}) && c.allowOwnAddresses
			}},
		{desc: "deny list from the environment", env: map[string]string{"BERTH_ZONES": "c.test", "BERTH_DENY": "2001:db8::/32",
			"BERTH_ALLOW_OWN_ADDRESSES": "true"},
			check: func(c config) bool { return slices.Equal(c.deny, []string{"2001:db8::/32"}) && c.allowOwnAddresses }},
		{desc: "bad deny entry", args: []string{"--zones", "c.test", "--deny", "10.0.0.0/33"}, wantErr: `--deny: deny list: "10.0.0.0/33"`},
		{desc: "log level", args: []string{"--zones", "c.test", "--log-level", "loud"}, wantErr: "--log-level"},
		{desc: "log format", args: []string{"--zones", "c.test", "--log-format", "xml"}, wantErr: "--log-format"},
		{desc: "stray argument", args: []string{"--zones", "c.test", "extra"}, wantErr: "unexpected arguments"},
	}
	for _, tc := range tests {
		lookup := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
		cfg, err := parseFlags(tc.args, lookup, io.Discard)
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: error %v, want one containing %q", tc.desc, err, tc.wantErr)
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.desc, err)
		case tc.wantErr == "" && !tc.check(cfg):
			t.Errorf("%s: got %+v", tc.desc, cfg)
		}
	}
}

// --help is not an error to the caller's eyes (exit 0) and lists every
// flag with its variable.
func TestHelpNamesEveryVariable(t *testing.T) {
	var out strings.Builder
	_, err := parseFlags([]string{"--help"}, func(string) (string, bool) { return "", false }, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v, want flag.ErrHelp", err)
	}
	n := 0
	for _, line := range strings.Split(out.String(), "\n") {
		if name, ok := strings.CutPrefix(strings.TrimSpace(line), "-"); ok {
			name, _, _ = strings.Cut(name, " ")
			n++
			if name != "version" && !strings.Contains(out.String(), "[$"+envflag.Name(name)+"]") {
				t.Errorf("help does not name %s for --%s", envflag.Name(name), name)
			}
		}
	}
	if n < 15 {
		t.Errorf("help lists %d flags, want every one:\n%s", n, out.String())
	}
}
