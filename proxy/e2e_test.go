package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/miekg/dns"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
)

const e2eZone = "c.example.org"

// The whole path a user takes: curl through berth-proxy (SOCKS5 with the
// name resolved proxy-side, and HTTP proxy) to http://web.shop.c.example.org/,
// resolved by the project's CoreDNS from Consul, reaching real containers
// on the local Docker Engine at their random published ports. Then one of
// the two instances stops (its records stay, as they would until the
// exporter notices) and every request still reaches the other one.
func TestE2ECurlThroughProxyToContainers(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		testenv.Unavailable(t, "curl: %v", err)
	}
	cli := testenv.Docker(t)
	image := testenv.EnsureTestServiceImage(t, cli)
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})

	web1 := startWebContainer(t, cli, image, "web-1")
	web2 := startWebContainer(t, cli, image, "web-2")
	publish(t, consul.Client().KV(), web1, web2)

	dnsd := testenv.StartCoreDNS(t, e2eCorefile(consul.HTTP))
	waitSRV(t, dnsd.Addr, "_80._tcp.web.shop."+e2eZone+".", 2)

	// bin/berth-proxy as a user runs it.
	bin := startProxyBinary(t, "--dns", dnsd.Addr, "--zones", e2eZone, "--dial-timeout", "1s", "--allow-loopback")
	// The same server in-process, with a dialer that counts the attempts
	// at web-1, to see the failover happen.
	var dialsToWeb1 atomic.Int32
	web1Addr := "127.0.0.1:" + strconv.Itoa(web1.hostPort)
	counted, err := New(Config{
		Zones: []string{e2eZone}, DNSServer: dnsd.Addr,
		DialTimeout: time.Second, Registerer: prometheus.NewRegistry(), AllowLoopback: true, // not a wait: the proxy's setting
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if addr == web1Addr {
				dialsToWeb1.Add(1)
			}
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { counted.Close() })
	countedLn := listen(t)
	go counted.ServeSOCKS(countedLn)

	url := "http://web.shop." + e2eZone + "/"
	viaSOCKS := []string{"--socks5-hostname", bin.socks, url}
	viaHTTP := []string{"-x", "http://" + bin.http, url}
	viaCounted := []string{"--socks5-hostname", countedLn.Addr().String(), url}

	// 15 rounds: the SOCKS requests alone all landing on one instance
	// would take 15 coin flips coming up the same.
	seen := map[string]bool{}
	for range 15 {
		for _, args := range [][]string{viaSOCKS, viaHTTP} {
			seen[runCurl(t, curl, args...)] = true
		}
	}
	if len(seen) != 2 || !seen["hello from web-1"] || !seen["hello from web-2"] {
		t.Fatalf("with both instances up, 30 requests got %v, want answers from web-1 and web-2", seen)
	}

	stop(t, cli, web1)
	for range 10 {
		for _, args := range [][]string{viaSOCKS, viaHTTP, viaCounted} {
			if got := runCurl(t, curl, args...); got != "hello from web-2" {
				t.Fatalf("with web-1 stopped, curl %v got %q, want hello from web-2", args, got)
			}
		}
	}
	// web-1 is still in the SRV set, so some dials tried it first (each
	// has even odds) and moved on to web-2.
	if dialsToWeb1.Load() == 0 {
		t.Error("no dial tried the stopped web-1 first; the failover was not exercised")
	}
	t.Logf("after web-1 stopped, %d of 10 dials tried it first and moved on", dialsToWeb1.Load())

	metrics := scrape(t, bin.metrics)
	for _, want := range []string{
		`berth_proxy_connections_total{listener="socks"} 25`,
		`berth_proxy_connections_total{listener="http"} 25`,
		`berth_proxy_connections_active{listener="socks"} 0`,
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(metrics, "berth_proxy_dial_failures_total{") {
		t.Errorf("dial failures were counted although every request succeeded:\n%s", grepLines(metrics, "berth_proxy_dial_failures_total"))
	}
}

// e2eCorefile serves the e2e zone from Consul. The tests' services are on
// 127.0.0.1, which the plugin publishes only with allow_loopback; whether
// the proxy then goes there is the proxy's own decision (--allow-loopback).
func e2eCorefile(consulHTTP string) string {
	return e2eZone + " {\n  berth {\n    consul " + consulHTTP + "\n    ttl 5\n    allow_loopback\n  }\n}\n"
}

type proxyProcess struct{ socks, http, metrics string }

// startProxyBinary builds and runs berth-proxy on free loopback ports.
func startProxyBinary(t *testing.T, args ...string) proxyProcess {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "berth-proxy")
	if err := testenv.BuildStatic(testenv.RepoRoot(t), "./proxy/cmd/berth-proxy", bin); err != nil {
		t.Fatal(err)
	}
	ports := testenv.FreePorts(t, 3)
	addr := func(i int) string { return "127.0.0.1:" + strconv.Itoa(ports[i]) }
	p := proxyProcess{socks: addr(0), http: addr(1), metrics: addr(2)}
	var out testenv.LockedBuffer
	cmd := exec.Command(bin, append([]string{"--socks", p.socks, "--http", p.http, "--metrics", p.metrics}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	proc, err := testenv.StartProc(cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// berth-proxy closes its listeners and exits at once on SIGTERM.
		proc.Stop(syscall.SIGTERM, testenv.PromptWait)
		if t.Failed() {
			t.Logf("berth-proxy output:\n%s", out.String())
		}
	})
	// Wait for its log rather than probing the ports: a probe would count
	// as a client connection in the metrics this test checks.
	testenv.EventuallyTrue(t, testenv.PromptWait, "berth-proxy to start", func() bool { return strings.Contains(out.String(), `msg="berth-proxy started"`) })
	return p
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func grepLines(s, substr string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

type webContainer struct {
	id, name string
	hostPort int
}

func startWebContainer(t *testing.T, cli *client.Client, image, name string) webContainer {
	t.Helper()
	// Three requests to the engine: create, start, inspect.
	ctx, cancel := context.WithTimeout(t.Context(), 3*testenv.EngineRequestTimeout)
	defer cancel()
	port := network.MustParsePort("80/tcp")
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	created, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: "berth-proxy-e2e-" + name + "-" + hex.EncodeToString(suffix),
		Config: &container.Config{
			Image:        image,
			Env:          []string{"TESTSVC_NAME=" + name},
			ExposedPorts: network.PortSet{port: {}},
			// berth.enable=false: exporters under test elsewhere must not
			// publish these; this test writes their records itself.
			Labels: testenv.Labels("proxy-e2e", map[string]string{"berth.enable": "false"}),
		},
		HostConfig: &container.HostConfig{
			// Loopback only, with a random host port: the test's traffic
			// stays on this machine.
			PortBindings: network.PortMap{port: {{HostIP: netip.MustParseAddr("127.0.0.1")}}},
		},
	})
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	testenv.RemoveContainerOnCleanup(t, cli, created.ID)
	if _, err := cli.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	inspect, err := cli.ContainerInspect(ctx, created.ID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bindings := inspect.Container.NetworkSettings.Ports[port]
	if len(bindings) == 0 {
		t.Fatalf("%s: port 80/tcp not published", name)
	}
	hostPort, err := strconv.Atoi(bindings[0].HostPort)
	if err != nil {
		t.Fatalf("%s: host port %q: %v", name, bindings[0].HostPort, err)
	}
	// Wait until it serves, so a failure later is the proxy's.
	addr := "http://127.0.0.1:" + strconv.Itoa(hostPort) + "/"
	testenv.EventuallyTrue(t, testenv.PromptWait, name+" to serve on "+addr, func() bool {
		resp, err := http.Get(addr)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return webContainer{id: created.ID, name: name, hostPort: hostPort}
}

// publish writes what an exporter on host "testhost" would: the host
// document and one container document per instance of web.shop.
func publish(t *testing.T, kv *api.KV, containers ...webContainer) {
	t.Helper()
	loopback := netip.MustParseAddr("127.0.0.1")
	for _, c := range containers {
		doc := &record.Container{V: record.Version, ID: c.id, Name: c.name, Service: "web.shop",
			Image: testenv.TestServiceImage, Health: record.HealthNone,
			Priority: record.DefaultPriority, Weight: record.DefaultWeight,
			Ports: []record.Port{{Port: 80, Proto: "tcp", Name: record.PortName(80, "tcp"), Addr: loopback, HostPort: c.hostPort}}}
		if err := doc.Validate(); err != nil {
			t.Fatal(err)
		}
		testenv.PutJSON(t, kv, record.ContainerKey("berth", "testhost", c.id), doc)
	}
	// The host document last, with its rev: it is what the plugin watches.
	testenv.PutJSON(t, kv, record.HostKey("berth", "testhost"), &record.Host{V: record.Version, Name: "testhost",
		Addrs: []netip.Addr{loopback}, Rev: 1, Exporter: "proxy e2e test"})
}

// waitSRV waits until CoreDNS serves want SRV records for name.
func waitSRV(t *testing.T, server, name string, want int) {
	t.Helper()
	c := &dns.Client{Timeout: testenv.QueryTimeout}
	got := 0
	deadline := time.Now().Add(testenv.ZoneChangeWait)
	for time.Now().Before(deadline) {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeSRV)
		if r, _, err := c.Exchange(m, server); err == nil {
			if got = len(r.Answer); got == want {
				return
			}
		}
		time.Sleep(testenv.PollInterval)
	}
	t.Fatalf("CoreDNS serves %d SRV records for %s after 20s, want %d", got, name, want)
}

// curlMaxTime is curl's --max-time for one request through the proxy: the
// proxy's own bounds for a tunnel's set-up (handshake and dial, both well
// under it on loopback) end it first.
const curlMaxTime = 10 * time.Second

func runCurl(t *testing.T, curl string, args ...string) string {
	t.Helper()
	// curl's own --max-time is the bound of its request; the context
	// bounds the process, its start included: twice that.
	ctx, cancel := context.WithTimeout(t.Context(), 2*curlMaxTime)
	defer cancel()
	maxTime := strconv.Itoa(int(curlMaxTime / time.Second)) // not a wait: curl's flag is in seconds
	out, err := exec.CommandContext(ctx, curl, append([]string{"-sS", "--fail", "--max-time", maxTime, "--noproxy", ""}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("curl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func stop(t *testing.T, cli *client.Client, c webContainer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testenv.EngineRequestTimeout)
	defer cancel()
	timeout := 0
	if _, err := cli.ContainerStop(ctx, c.id, client.ContainerStopOptions{Timeout: &timeout}); err != nil {
		t.Fatalf("stop %s: %v", c.name, err)
	}
	// Stopped means refused at its published port.
	testenv.EventuallyTrue(t, testenv.PromptWait, "the stopped container's port to refuse", func() bool {
		conn, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(c.hostPort), testenv.ProbeTimeout)
		if err != nil {
			return true
		}
		conn.Close()
		return false
	})
}
