package proxy

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
)

// startInProcess runs a proxy for the e2e zone on loopback listeners.
func startInProcess(t *testing.T, cfg Config) (*Server, string, string) {
	t.Helper()
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	socksLn, httpLn := listen(t), listen(t)
	go srv.ServeSOCKS(socksLn)
	go srv.ServeHTTPProxy(httpLn)
	return srv, socksLn.Addr().String(), httpLn.Addr().String()
}

// An attacker who can write KV (or a careless producer) publishes a host
// whose address is 127.0.0.1, with a service at a port of the proxy's own
// host. The proxy refuses to go there unless the operator opted in; the
// host's own name is never dialled at a port no SRV record publishes.
func TestE2ELoopbackTargetsNeedTheOptIn(t *testing.T) {
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	var accepted atomic.Int32
	victim := listen(t)
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "hello from the proxy's own host")
	})}
	go hs.Serve(testenv.CountingListener{Listener: victim, N: &accepted})
	t.Cleanup(func() { hs.Close() })

	id := make([]byte, 32)
	_, _ = rand.Read(id)
	publish(t, consul.Client().KV(), webContainer{id: hex.EncodeToString(id), name: "victim-1", hostPort: port(victim)})
	dnsd := testenv.StartCoreDNS(t, e2eCorefile(consul.HTTP))
	waitSRV(t, dnsd.Addr, "_80._tcp.web.shop."+e2eZone+".", 1)
	waitSRV(t, dnsd.Addr, "victim-1.testhost.hosts."+e2eZone+".", 1)

	service := "web.shop." + e2eZone
	hostName := "testhost.hosts." + e2eZone
	containerName := "victim-1.testhost.hosts." + e2eZone

	// Without the opt-in: refused, counted, and the listener sees nothing.
	strict, socksAddr, httpAddr := startInProcess(t, Config{Zones: []string{e2eZone}, DNSServer: dnsd.Addr})
	c, reply := socksConnect(t, socksAddr, service, 80)
	if reply != replyNotAllowed {
		t.Errorf("SOCKS %s:80 without --allow-loopback: reply %#x, want %#x", service, reply, replyNotAllowed)
	}
	c.Close()
	if status, body := get(t, proxyClient(t, httpAddr, nil), "GET", "http://"+service+"/", ""); status != http.StatusForbidden {
		t.Errorf("HTTP GET %s without --allow-loopback: %d %q, want 403", service, status, body)
	}
	if n := testenv.MetricValue(strict.Metrics().Rejected.WithLabelValues("socks", forbidLoopback)); n != 1 {
		t.Errorf("rejected{socks,loopback} = %v, want 1", n)
	}
	if n := testenv.MetricValue(strict.Metrics().Rejected.WithLabelValues("http", forbidLoopback)); n != 1 {
		t.Errorf("rejected{http,loopback} = %v, want 1", n)
	}
	if n := accepted.Load(); n != 0 {
		t.Fatalf("the loopback listener accepted %d connections from a proxy without --allow-loopback", n)
	}

	// With it: the service is reached; the host's name at that same port is
	// not, it publishes no port itself, nor the container's name at its
	// host port, whose own SRV set says no protocol (issue 21, row 5).
	open, socksAddr, httpAddr := startInProcess(t, Config{Zones: []string{e2eZone}, DNSServer: dnsd.Addr, AllowLoopback: true})
	c, reply = socksConnect(t, socksAddr, service, 80)
	if reply != replySucceeded {
		t.Fatalf("SOCKS %s:80 with --allow-loopback: reply %#x", service, reply)
	}
	if body := getThrough(t, c, service); body != "hello from the proxy's own host" {
		t.Errorf("through %s:80: %q", service, body)
	}
	c.Close()
	if status, body := get(t, proxyClient(t, httpAddr, nil), "GET", "http://"+service+"/", ""); status != http.StatusOK {
		t.Errorf("HTTP GET %s with --allow-loopback: %d %q", service, status, body)
	}
	before := accepted.Load()
	for _, name := range []string{hostName, containerName} {
		c, reply = socksConnect(t, socksAddr, name, uint16(port(victim)))
		if reply != replyNotAllowed {
			t.Errorf("SOCKS %s:%d (no _%d._tcp SRV): reply %#x, want %#x", name, port(victim), port(victim), reply, replyNotAllowed)
		}
		c.Close()
	}
	if n := testenv.MetricValue(open.Metrics().Rejected.WithLabelValues("socks", rejectNotPublished)); n != 2 {
		t.Errorf("rejected{socks,not_published} = %v, want 2", n)
	}
	if after := accepted.Load(); after != before {
		t.Errorf("the host's name at port %s was dialled (%d new connections)", strconv.Itoa(port(victim)), after-before)
	}
}

// A host that claims another host's service (docker run -l
// berth.service=web.shop -l berth.priority=0 on its own machine) put its
// SRV record first, and berth-proxy sent every request to it. With the
// ownership policy giving web.shop to its owner, the impostor's claim is
// not served and every request reaches the owner; the test first shows the
// capture without the policy, so it can fail.
func TestE2EImpostorServiceRefused(t *testing.T) {
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	kv := consul.Client().KV()
	// Each server counts the requests it answers.
	serve := func(who string) (net.Listener, *atomic.Int32) {
		ln := listen(t)
		var n atomic.Int32
		hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			n.Add(1)
			fmt.Fprint(w, who)
		})}
		go hs.Serve(ln)
		t.Cleanup(func() { hs.Close() })
		return ln, &n
	}
	owner, ownerHits := serve("owner")
	evil, evilHits := serve("impostor")
	id := make([]byte, 32)
	_, _ = rand.Read(id)
	publish(t, kv, webContainer{id: hex.EncodeToString(id), name: "web-1", hostPort: port(owner)})
	loopback := netip.MustParseAddr("127.0.0.1")
	impostor := &record.Container{V: record.Version, ID: strings.Repeat("e", 64), Name: "impostor", Service: "web.shop",
		Image: "evil", Health: record.HealthNone, Priority: 0, Weight: 65535,
		Ports: []record.Port{{Port: 80, Proto: "tcp", Name: "http", Addr: loopback, HostPort: port(evil)}}}
	testenv.PutJSON(t, kv, record.ContainerKey("berth", "evilhost", impostor.ID), impostor)
	testenv.PutJSON(t, kv, record.HostKey("berth", "evilhost"), &record.Host{V: record.Version, Name: "evilhost", Addrs: []netip.Addr{loopback}, Rev: 1})

	dnsd := testenv.StartCoreDNS(t, e2eCorefile(consul.HTTP))
	service := "web.shop." + e2eZone
	// A proxy per phase: each starts with an empty answer cache.
	fetch := func(httpAddr string) string {
		t.Helper()
		_, body := get(t, proxyClient(t, httpAddr, nil), "GET", "http://"+service+"/", "")
		return body
	}

	// Without a policy, v1's rule: the impostor's priority 0 wins.
	waitSRV(t, dnsd.Addr, "_80._tcp."+service+".", 2)
	_, _, before := startInProcess(t, Config{Zones: []string{e2eZone}, DNSServer: dnsd.Addr, AllowLoopback: true})
	if got := fetch(before); got != "impostor" {
		t.Fatalf("without a policy the request reached %q; the capture this test guards against did not happen", got)
	}

	testenv.PutJSON(t, kv, record.PolicyKey("berth"), &record.Policy{V: record.Version, Default: record.PolicyDeny,
		Rules: []record.PolicyRule{{Service: "web.shop", Hosts: []string{"testhost"}}}})
	waitSRV(t, dnsd.Addr, "_80._tcp."+service+".", 1)
	_, _, after := startInProcess(t, Config{Zones: []string{e2eZone}, DNSServer: dnsd.Addr, AllowLoopback: true})
	ownerBefore, evilBefore := ownerHits.Load(), evilHits.Load()
	for i := range 5 {
		if got := fetch(after); got != "owner" {
			t.Errorf("request %d with the policy reached %q, want the owner", i+1, got)
		}
	}
	if n := evilHits.Load() - evilBefore; n != 0 {
		t.Errorf("the impostor answered %d requests after the policy", n)
	}
	if n := ownerHits.Load() - ownerBefore; n != 5 {
		t.Errorf("the owner answered %d requests, want 5", n)
	}
}
