package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
)

// ConsulBinary finds the Consul that hack/get-consul.sh built: $BERTH_CONSUL,
// else the script's cache (building it there if allowed).
func ConsulBinary(t T) string {
	t.Helper()
	if p := os.Getenv("BERTH_CONSUL"); p != "" {
		return p
	}
	p, err := consulBinary.get(func() (string, error) {
		out, err := exec.Command("bash", filepath.Join(RepoRoot(t), "hack", "get-consul.sh")).Output()
		if err != nil {
			return "", fmt.Errorf("hack/get-consul.sh: %w", err)
		}
		return string(bytes.TrimSpace(out)), nil
	})
	if err != nil {
		Unavailable(t, "consul: %v", err)
	}
	return p
}

var consulBinary built

// Consul is a real Consul agent started for one test, on loopback ports of
// its own.
type Consul struct {
	t       T
	bin     string
	args    []string
	HTTP    string // host:port of the HTTP API
	DNSPort int    // Consul's own DNS interface, when enabled
	DataDir string
	token   string
	proc    *Proc // the running agent; nil while stopped
	out     LockedBuffer
	mu      sync.Mutex

	clientMu   sync.Mutex
	client     *api.Client // see Client
	clientAddr string      // the HTTP address client talks to
}

// ConsulOptions tune StartConsul.
type ConsulOptions struct {
	// Persistent runs a single-server cluster with a data directory instead
	// of -dev, so that a restart keeps the KV data and its indexes.
	Persistent bool
	// DNS enables Consul's DNS interface on DNSPort.
	DNS bool
	// ExtraHCL is appended to the agent's configuration.
	ExtraHCL string
	// Token is the ACL token that the readiness probe and Client use, for
	// an agent started with ACLs in deny-by-default mode.
	Token string
}

// StartConsul starts an agent, waits for its leader, and stops it when the
// test ends.
func StartConsul(t T, opts ConsulOptions) *Consul {
	t.Helper()
	c := &Consul{t: t, bin: ConsulBinary(t), DataDir: t.TempDir(), token: opts.Token}
	t.Cleanup(c.Stop)
	// A port picked free can be taken by another test's process before the
	// agent binds it; an agent that exits at start gets new ports.
	for attempt := 1; ; attempt++ {
		c.configure(opts)
		err := c.start()
		if err == nil {
			return c
		}
		if !errors.Is(err, errExited) || attempt == 3 {
			t.Fatal(err)
		}
		t.Logf("consul start %d failed, again on other ports: %v", attempt, err)
	}
}

// configure sets the agent's arguments, with loopback ports of its own.
func (c *Consul) configure(opts ConsulOptions) {
	ports := FreePorts(c.t, 5)
	c.HTTP = "127.0.0.1:" + strconv.Itoa(ports[0])
	c.DNSPort = -1
	if opts.DNS {
		c.DNSPort = ports[4]
	}
	hcl := `ports { grpc_tls = -1 }
performance { raft_multiplier = 1 }
` + opts.ExtraHCL
	c.args = []string{"agent",
		"-node", "berth-test", "-bind", "127.0.0.1", "-client", "127.0.0.1",
		"-advertise", "127.0.0.1",
		"-http-port", strconv.Itoa(ports[0]),
		"-dns-port", strconv.Itoa(c.DNSPort),
		"-grpc-port", "-1",
		"-serf-lan-port", strconv.Itoa(ports[1]),
		"-serf-wan-port", strconv.Itoa(ports[2]),
		"-server-port", strconv.Itoa(ports[3]),
		"-log-level", "warn",
		"-hcl", hcl,
	}
	if opts.Persistent {
		c.args = append(c.args, "-server", "-bootstrap-expect", "1", "-data-dir", c.DataDir,
			"-hcl", `connect { enabled = false }`)
	} else {
		c.args = append(c.args, "-dev")
	}
}

// errExited is a start that failed because the agent exited.
var errExited = errors.New("consul exited")

// Start (re)starts the agent with its original ports and data, and waits
// until it has a leader.
func (c *Consul) Start() {
	c.t.Helper()
	if err := c.start(); err != nil {
		c.t.Fatal(err)
	}
}

func (c *Consul) start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc != nil {
		return nil
	}
	cmd := exec.Command(c.bin, c.args...)
	cmd.Stdout, cmd.Stderr = &c.out, &c.out
	proc, err := StartProc(cmd)
	if err != nil {
		return fmt.Errorf("start consul: %w", err)
	}
	c.proc = proc
	client := c.Client()
	deadline := time.Now().Add(ConsulReadyWait)
	for {
		err := consulReady(client)
		if err == nil {
			return nil
		}
		if proc.Exited() {
			proc.Kill()
			c.proc = nil
			return fmt.Errorf("%w while starting (%v):\n%s", errExited, cmd.ProcessState, c.out.String())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("consul not ready after %v: %v\n%s", ConsulReadyWait, err, c.out.String())
		}
		time.Sleep(PollInterval)
	}
}

// consulReady is nil once the agent serves what the tests ask of it: a
// leader, which accepts writes (it can be elected before it does), and the
// agent's own node in the catalog, without which a session cannot be
// created ("Missing node registration": the node registers itself a moment
// after the election, and a loaded machine made that moment visible).
func consulReady(client *api.Client) error {
	if leader, err := client.Status().Leader(); err != nil || leader == "" {
		return fmt.Errorf("no leader yet (%q): %v", leader, err)
	}
	if _, err := client.KV().Put(&api.KVPair{Key: "berth-test/ready", Value: []byte("1")}, nil); err != nil {
		return err
	}
	name, err := client.Agent().NodeName()
	if err != nil {
		return err
	}
	node, _, err := client.Catalog().Node(name, nil)
	if err != nil {
		return err
	}
	if node == nil || node.Node == nil {
		return fmt.Errorf("node %s not registered in the catalog yet", name)
	}
	return nil
}

// Stop kills the agent (SIGKILL: a crash, not a graceful leave).
func (c *Consul) Stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		return
	}
	c.proc.Kill()
	c.proc = nil
}

// Pause freezes the agent (SIGSTOP): connections hang instead of failing.
func (c *Consul) Pause() { c.signal(syscall.SIGSTOP) }

// Resume undoes Pause.
func (c *Consul) Resume() { c.signal(syscall.SIGCONT) }

func (c *Consul) signal(sig syscall.Signal) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc != nil {
		_ = c.proc.Cmd.Process.Signal(sig)
	}
}

// Client returns a Consul API client for the agent, the same one while its
// address stays: every client has a connection pool of its own, and idle
// connections left behind count against the agent's limit per address.
func (c *Consul) Client() *api.Client {
	c.clientMu.Lock()
	defer c.clientMu.Unlock()
	if c.client != nil && c.clientAddr == c.HTTP {
		return c.client
	}
	cfg := api.DefaultConfig()
	cfg.Address = c.HTTP
	if c.token != "" {
		cfg.Token = c.token
	}
	client, err := api.NewClient(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	c.client, c.clientAddr = client, c.HTTP
	return client
}

// Log is what the agent printed so far, over all its starts.
func (c *Consul) Log() string { return c.out.String() }

// LockedBuffer collects a child process's output safely while tests read it.
type LockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Reset empties the buffer.
func (l *LockedBuffer) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Reset()
}
