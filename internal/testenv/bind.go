package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// BINDSecondary is a real BIND 9 (Debian's bind9) serving one zone as a
// secondary of a primary on loopback, from a configuration directory of
// its own; hack/deps.sh installs it.
type BINDSecondary struct {
	Addr string // 127.0.0.1:port, UDP and TCP
	Port int
	Zone string
	dir  string
	proc *Proc
	out  LockedBuffer
}

// NamedBinary is the path of BIND's named, or skips/fails the test through
// Unavailable.
func NamedBinary(t T) string {
	t.Helper()
	for _, p := range []string{"named", "/usr/sbin/named"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	Unavailable(t, "BIND's named (Debian package bind9; make test installs it)")
	return ""
}

// StartBINDSecondary runs named on port (0: a free one) as a secondary of
// zone from primary (host:port), accepting its NOTIFYs, and stops it when
// the test ends; options are more statements for named's options block
// ("max-records-per-type 0;"). It returns once named answers; the zone may
// not be transferred yet.
func StartBINDSecondary(t T, zone, primary string, port int, options ...string) *BINDSecondary {
	t.Helper()
	bin := NamedBinary(t)
	if port == 0 {
		port = FreePort(t)
	}
	host, pport, err := splitHostPort(primary)
	if err != nil {
		t.Fatal(err)
	}
	b := &BINDSecondary{Port: port, Addr: "127.0.0.1:" + strconv.Itoa(port), Zone: dns.Fqdn(zone), dir: t.TempDir()}
	conf := fmt.Sprintf(`options {
	directory "%[1]s";
	pid-file "%[1]s/named.pid";
	session-keyfile "%[1]s/session.key";
	listen-on port %[2]d { 127.0.0.1; };
	listen-on-v6 { none; };
	recursion no;
	dnssec-validation no;
	notify no;
	allow-query { any; };
%[6]s
};
controls { };
logging {
	channel out { stderr; severity info; print-time yes; print-category yes; };
	category default { out; };
	category xfer-in { out; };
	category notify { out; };
};
zone "%[3]s" {
	type secondary;
	primaries { %[4]s port %[5]d; };
	file "%[1]s/secondary.db";
};
`, b.dir, port, b.Zone, host, pport, strings.Join(options, "\n"))
	confPath := filepath.Join(b.dir, "named.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// -g: foreground, log to stderr; -u root is not needed as root, and
	// named must not switch to a user that cannot read the test's folder.
	cmd := exec.Command(bin, "-g", "-c", confPath, "-n", "1")
	cmd.Stdout, cmd.Stderr = &b.out, &b.out
	// Registered after t.TempDir's removal of b.dir, so it runs before it:
	// named and anything it forked are gone when the folder is removed.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("named output:\n%s", b.out.String())
		}
	})
	b.proc = StartProcT(t, cmd)
	deadline := time.Now().Add(PartStartWait)
	client := &dns.Client{Timeout: ProbeTimeout}
	for {
		m := new(dns.Msg)
		m.SetQuestion("version.bind.", dns.TypeTXT)
		m.Question[0].Qclass = dns.ClassCHAOS
		if _, _, err := client.Exchange(m, b.Addr); err == nil {
			return b
		}
		if time.Now().After(deadline) || b.proc.Exited() {
			t.Fatalf("named did not answer within %v:\n%s", PartStartWait, b.out.String())
		}
		time.Sleep(PollInterval)
	}
}

// Log is what named printed so far.
func (b *BINDSecondary) Log() string { return b.out.String() }

func splitHostPort(hostport string) (string, int, error) {
	host, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	return host, port, err
}
