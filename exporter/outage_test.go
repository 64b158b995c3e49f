package exporter

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
)

// TestConsulOutage stops Consul, starts and removes containers meanwhile,
// and sees KV converge once Consul is back.
func TestConsulOutage(t *testing.T) {
	t.Parallel()
	r := newRig(t, testenv.ConsulOptions{Persistent: true})
	ctx := context.Background()
	before := r.runContainer(runOpts{name: "before"})
	stays := r.runContainer(runOpts{name: "stays"})
	e := r.startExporter(r.config())
	r.waitDoc("before the outage", before, testenv.ExporterStartWaitFor(2), present)
	r.waitDoc("before the outage", stays, testenv.ExporterStartWaitFor(2), present)

	r.consul.Stop()
	during := r.runContainer(runOpts{name: "during"})
	brief := r.runContainer(runOpts{name: "brief"}) // starts and stops within the outage
	if _, err := r.docker.ContainerRemove(ctx, before, client.ContainerRemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.docker.ContainerStop(ctx, brief, client.ContainerStopOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.EventuallyTrue(t, testenv.ExporterChangeWait, "failed writes during the outage", func() bool { return testenv.MetricValue(e.Metrics().ConsulErrors) > 0 })
	time.Sleep(consulOutage)
	r.consul.Start()
	outageEnd := time.Now()

	r.waitDoc("started during the outage", during, testenv.ExporterRecoverWait, present)
	// The rest are in the same publish, a transaction or two later.
	r.waitDoc("removed during the outage", before, testenv.ConsulRoundWait, absent)
	r.waitDoc("started and stopped during the outage", brief, testenv.ConsulRoundWait, absent)
	r.waitDoc("kept running", stays, testenv.ConsulRoundWait, present)
	t.Logf("converged %s after Consul came back", time.Since(outageEnd).Round(100*time.Millisecond))
	if h := r.holder(record.HostKey(r.prefix, r.host)); h == "" {
		t.Error("host document not held by a session")
	}
}

// consulOutage is how long TestConsulOutage keeps Consul away after the
// first failed write: not a wait but the length of the fault, long enough
// for the worker's backoff (250 ms doubling) to fail three more times
// (0.25 + 0.5 + 1 s) and be in its fourth wait when Consul comes back.
const consulOutage = 3 * time.Second

// dockerBreak is how long TestDockerStreamBreak keeps the engine away: not
// a wait but the length of the fault, long enough for the event stream's
// backoff (250 ms doubling) to fail three times; no change made meanwhile
// may show before it ends.
const dockerBreak = 2 * time.Second

// TestDockerStreamBreak cuts the exporter's connections to the engine
// (through a socket proxy) and refuses new ones for a while; changes made
// meanwhile show once it reconnects.
func TestDockerStreamBreak(t *testing.T) {
	t.Parallel()
	forEachEngine(t, testDockerStreamBreak)
}

func testDockerStreamBreak(t *testing.T, engine string) {
	r := newEngineRig(t, engine, testenv.ConsulOptions{})
	ctx := context.Background()
	before := r.runContainer(runOpts{name: "before"})
	proxy, e := r.startProxiedExporter()
	r.waitDoc("before the break", before, testenv.ExporterStartWait, present)

	proxy.setDown(true)
	during := r.runContainer(runOpts{name: "during"})
	if _, err := r.docker.ContainerRemove(ctx, before, client.ContainerRemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(dockerBreak)
	if r.doc(during) != nil {
		t.Fatal("a container started during the break was seen: the proxy leaks")
	}
	proxy.setDown(false)
	r.waitDoc("started during the break", during, testenv.ExporterReconnectWait, present)
	r.waitDoc("removed during the break", before, testenv.ConsulRoundWait, absent)
	if testenv.MetricValue(e.Metrics().DockerErrors) == 0 {
		t.Error("no Docker error counted")
	}
	// And events flow again on the new stream.
	after := r.runContainer(runOpts{name: "after"})
	r.waitDoc("after reconnecting", after, r.changeWait(), present)
}

// startProxiedExporter runs an exporter of r.config() that reaches r's
// engine through a sockProxy, until the test ends.
func (r *rig) startProxiedExporter() (*sockProxy, *Exporter) {
	r.t.Helper()
	u, err := url.Parse(r.docker.DaemonHost())
	if err != nil || u.Scheme != "unix" {
		r.t.Skipf("the engine is not on a unix socket (%s)", r.docker.DaemonHost())
	}
	proxy := startProxy(r.t, u.Path)
	docker, err := client.New(client.WithHost("unix://" + proxy.path))
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { docker.Close() })
	return proxy, r.startExporterOn(r.config(), docker)
}

// sockProxy forwards a unix socket to another, and can drop every
// connection and refuse new ones.
type sockProxy struct {
	path  string
	mu    sync.Mutex
	down  bool
	conns map[net.Conn]bool
	// refused receives the request line of each connection refused while
	// down (dropped when full).
	refused chan string
}

func startProxy(t *testing.T, target string) *sockProxy {
	p := &sockProxy{path: filepath.Join(t.TempDir(), "docker.sock"), conns: map[net.Conn]bool{}, refused: make(chan string, 1024)}
	l, err := net.Listen("unix", p.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(); p.setDown(true) })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.down {
				p.mu.Unlock()
				go p.refuse(c)
				continue
			}
			up, err := net.Dial("unix", target)
			if err != nil {
				p.mu.Unlock()
				c.Close()
				continue
			}
			p.conns[c], p.conns[up] = true, true
			p.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			go func() { _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
	return p
}

func (p *sockProxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
}

// refusedLineWait bounds the read of a refused connection's request line,
// which a client sends as soon as it connects.
const refusedLineWait = time.Second

// refuse reads the request line of a connection made while down, so a test
// can tell which request was refused, and closes it unanswered.
func (p *sockProxy) refuse(c net.Conn) {
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(refusedLineWait))
	line, _ := bufio.NewReader(c).ReadString('\n')
	select {
	case p.refused <- strings.TrimSpace(line):
	default:
	}
}
