package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

var corednsBinary = &goBinary{pkg: "./plugin/coredns", name: "coredns", env: "BERTH_COREDNS"}

// CoreDNSBinary is the project's CoreDNS build: $BERTH_COREDNS if set (make
// test sets it to bin/coredns), else built once per test binary.
func CoreDNSBinary(t T) string {
	t.Helper()
	return corednsBinary.path(t)
}

// CoreDNS is a running bin/coredns.
type CoreDNS struct {
	Addr string // 127.0.0.1:port, UDP and TCP
	Port int
	bin  string
	args []string
	env  []string
	proc *Proc // the running server; nil before the first start
	out  LockedBuffer
}

// StartCoreDNS runs the project's CoreDNS with corefile on a free loopback
// port (server blocks without a port get it through -dns.port), with env
// added to its environment, and stops it when the test ends. It returns once
// the server answers queries.
func StartCoreDNS(t T, corefile string, env ...string) *CoreDNS {
	t.Helper()
	path := filepath.Join(t.TempDir(), "Corefile")
	if err := os.WriteFile(path, []byte(corefile), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &CoreDNS{bin: CoreDNSBinary(t), env: env}
	t.Cleanup(func() {
		c.kill()
		if t.Failed() {
			t.Logf("coredns output:\n%s", c.out.String())
		}
	})
	// A port free a moment ago can be taken by a test running beside this
	// one before CoreDNS binds it: then take another.
	for attempt := 1; ; attempt++ {
		c.Port = FreePort(t)
		c.Addr = "127.0.0.1:" + strconv.Itoa(c.Port)
		c.args = []string{"-conf", path, "-dns.port", strconv.Itoa(c.Port)}
		if err := c.start(t); err == nil {
			return c
		} else if attempt == 3 || !strings.Contains(c.out.String(), "address already in use") {
			t.Fatal(err)
		}
		t.Logf("coredns: port %d was taken meanwhile; trying another", c.Port)
		c.out.Reset()
	}
}

// Restart kills the server and starts it again on the same port and
// Corefile, as a crash and a supervisor's restart would; it returns once the
// new process answers queries.
func (c *CoreDNS) Restart(t T) {
	t.Helper()
	c.kill()
	if err := c.start(t); err != nil {
		t.Fatal(err)
	}
}

func (c *CoreDNS) kill() {
	if c.proc != nil {
		c.proc.Kill()
	}
}

// start runs the server and returns once it answers queries, or the
// reason it does not, with its output.
func (c *CoreDNS) start(t T) error {
	t.Helper()
	cmd := exec.Command(c.bin, c.args...)
	cmd.Env = append(os.Environ(), c.env...)
	cmd.Stdout, cmd.Stderr = &c.out, &c.out
	proc, err := StartProc(cmd)
	if err != nil {
		return err
	}
	c.proc = proc
	deadline := time.Now().Add(PartStartWait)
	client := &dns.Client{Timeout: ProbeTimeout}
	for {
		m := new(dns.Msg)
		m.SetQuestion("berth-probe.invalid.", dns.TypeA)
		if _, _, err := client.Exchange(m, c.Addr); err == nil {
			return nil
		}
		if proc.Exited() {
			return fmt.Errorf("coredns exited:\n%s", c.out.String())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("coredns did not answer within %v:\n%s", PartStartWait, c.out.String())
		}
		time.Sleep(PollInterval)
	}
}

// Stop kills the server before the test ends.
func (c *CoreDNS) Stop() { c.kill() }

// Output is what CoreDNS printed so far.
func (c *CoreDNS) Output() string { return c.out.String() }

// PID is the running CoreDNS process's ID.
func (c *CoreDNS) PID() int { return c.proc.PID() }

// Exited reports whether the CoreDNS process has ended (crashed).
func (c *CoreDNS) Exited() bool { return c.proc.Exited() }
