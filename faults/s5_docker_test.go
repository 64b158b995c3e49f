package faults

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthdns/berth/internal/testenv"
)

// sockProxy is a unix socket in front of the Docker API socket. Cut closes
// every connection through it and refuses new ones (accepted, then closed
// at once) until Heal.
type sockProxy struct {
	ln       net.Listener
	upstream string

	mu      sync.Mutex
	conns   map[net.Conn]bool
	cut     bool
	cutConn int // connections closed by cuts
	refused int // connections refused while cut
}

func dockerSocket() string {
	if h := os.Getenv("DOCKER_HOST"); strings.HasPrefix(h, "unix://") {
		return strings.TrimPrefix(h, "unix://")
	}
	return "/var/run/docker.sock"
}

func startSockProxy(t *testing.T) (*sockProxy, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "berth-faults-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "docker.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	p := &sockProxy{ln: ln, upstream: dockerSocket(), conns: map[net.Conn]bool{}}
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.Cut() })
	return p, path
}

func (p *sockProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.refused++
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.mu.Unlock()
		up, err := net.Dial("unix", p.upstream)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = true, true
		p.mu.Unlock()
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

func (p *sockProxy) pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

// Cut closes every open connection and refuses new ones.
func (p *sockProxy) Cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	n := 0
	for c := range p.conns {
		c.Close()
		n++
	}
	p.cutConn += n
	return n
}

// Heal accepts connections again.
func (p *sockProxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
}

// Scenario 5. Injects: the exporter's Docker API connection (a unix socket
// proxy in front of the engine's) is cut: every connection closed, new
// ones refused for 5 s, during which containers start and stop. Must hold:
// the exporter reconnects by itself, and the changes made meanwhile reach
// KV and DNS.
func TestFault5DockerEventStreamLoss(t *testing.T) {
	w := newWorld(t)
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	w.useConsul(consul.HTTP)
	w.startCoreDNS("")
	proxy, sock := startSockProxy(t)
	svc := w.service("ev")
	labels := map[string]string{"berth.service": svc}
	keep := w.runContainer("ev0", labels)
	gone := w.runContainer("evgone", labels)
	listen := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	env := append(w.exporterEnv(w.host, w.consulHTTP, ""), "BERTH_LISTEN="+listen, "DOCKER_HOST=unix://"+sock)
	// A long resync, so that only the reconnection can bring the changes.
	exp := testenv.StartExporter(t, env, "--session-ttl", "10s", "--resync", "10m")
	if _, ok := waitFor(w.servedWait(), func() bool { ok, _ := w.dnsMatches(svc, "ev"); return ok }); !ok {
		_, why := w.dnsMatches(svc, "ev")
		t.Fatalf("not published within %v: %s", w.servedWait(), why)
	}
	m0, _ := scrape("http://" + listen + "/metrics")

	cutDur := envDuration(t, "BERTH_FAULT_DOCKER_CUT", 5*time.Second) // not a wait: the fault's length
	closed := proxy.Cut()
	cutAt := time.Now()
	t.Logf("cut: %d connections closed; refusing for %s", closed, cutDur)
	if err := w.stop(gone); err != nil {
		t.Fatal(err)
	}
	newc := w.runContainer("evnew", labels)
	time.Sleep(time.Until(cutAt.Add(cutDur)))
	proxy.Heal()

	conv, ok := waitFor(w.reconnectWait(), func() bool {
		if ok, _ := w.kvMatches("ev"); !ok {
			return false
		}
		ok, _ := w.dnsMatches(svc, "ev")
		return ok
	})
	if !ok {
		_, why := w.dnsMatches(svc, "ev")
		t.Errorf("changes made during the cut not in DNS within %v of the heal: %s", w.reconnectWait(), why)
	}
	// And the event stream itself is back: a change after the heal arrives
	// by its event (the resync is 10 minutes away).
	after := w.runContainer("evafter", labels)
	evWait := testenv.ExporterChangeWait + testenv.ZoneChangeWait
	evLat, ok := waitFor(evWait, func() bool { ok, _ := w.dnsMatches(svc, "ev"); return ok })
	if !ok {
		_, why := w.dnsMatches(svc, "ev")
		t.Errorf("a container started after the heal is not in DNS within %v (event stream not back?): %s", evWait, why)
	}
	m1, _ := scrape("http://" + listen + "/metrics")
	if !exp.Running() {
		t.Error("the exporter exited")
	}
	proxy.mu.Lock()
	refused := proxy.refused
	proxy.mu.Unlock()
	_, _, _ = keep, newc, after
	fault(t, 5, "connections_cut", closed, "connections_refused_while_cut", refused, "cut_ms", cutDur.Milliseconds(),
		"converge_after_heal_ms", conv.Milliseconds(),
		"event_after_heal_ms", evLat.Milliseconds(),
		"docker_errors", fmt.Sprintf("%v->%v", m0["berth_exporter_docker_errors_total"], m1["berth_exporter_docker_errors_total"]))
}
