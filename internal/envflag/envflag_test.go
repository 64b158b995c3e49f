package envflag

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

// TestApply proves the convention: variables fill what the command line
// left, the command line wins, "" empties a string and is ignored for the
// rest, --version has no variable, and a bad value names its variable.
func TestApply(t *testing.T) {
	env := map[string]string{"BERTH_LISTEN": "", "BERTH_NODE": "from-env", "BERTH_PREFIX": "env-prefix",
		"BERTH_SESSION_TTL": "", "BERTH_EXPLICIT": "true", "BERTH_VERSION": "true"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	listen := fs.String("listen", "127.0.0.1:9753", "")
	node := fs.String("node", "", "")
	prefix := fs.String("prefix", "berth", "")
	ttl := fs.Duration("session-ttl", 10*time.Second, "") // not a wait: a flag value
	explicit := fs.Bool("explicit", false, "")
	version := fs.Bool("version", false, "")
	if err := fs.Parse([]string{"--prefix", "flag-prefix"}); err != nil {
		t.Fatal(err)
	}
	if err := Apply(fs, lookup); err != nil {
		t.Fatal(err)
	}
	if *listen != "" || *node != "from-env" || *prefix != "flag-prefix" || *ttl != 10*time.Second || !*explicit || *version { // not a wait: a flag value
		t.Errorf("listen %q node %q prefix %q ttl %v explicit %v version %v", *listen, *node, *prefix, *ttl, *explicit, *version)
	}
	env["BERTH_SESSION_TTL"] = "soon"
	fs2 := flag.NewFlagSet("t", flag.ContinueOnError)
	fs2.Duration("session-ttl", 0, "")
	_ = fs2.Parse(nil)
	if err := Apply(fs2, lookup); err == nil || !strings.Contains(err.Error(), "BERTH_SESSION_TTL") {
		t.Errorf("bad variable: %v, want an error naming BERTH_SESSION_TTL", err)
	}
	if Name("allow-loopback") != "BERTH_ALLOW_LOOPBACK" || Name("version") != "" {
		t.Errorf("Name: %q %q", Name("allow-loopback"), Name("version"))
	}
}
