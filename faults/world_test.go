package faults

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/miekg/dns"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
)

// The label every container and network of this suite carries.
const (
	testLabelValue = "faults" // berth.test=faults
	runLabel       = "berth.test.run"
)

// zone is the zone CoreDNS serves in every scenario; prefix the KV prefix.
const (
	zone   = "f.berth.test."
	prefix = "berth"
)

// gate skips a scenario unless it was asked for: -run names it (make
// test-faults runs -run Fault) or BERTH_FAULTS is set. Plain go test ./...
// (make test) would otherwise spend many minutes here.
func gate(t *testing.T) {
	t.Helper()
	if os.Getenv("BERTH_FAULTS") != "" {
		return
	}
	if f := flag.Lookup("test.run"); f != nil && strings.Contains(f.Value.String(), "Fault") {
		return
	}
	t.Skip("fault scenario: run with make test-faults (-run Fault) or BERTH_FAULTS=1")
}

// fault logs the scenario's figures on one final line.
func fault(t *testing.T, scenario int, kv ...any) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "FAULT scenario=%d", scenario)
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(&b, " %v=%v", kv[i], kv[i+1])
	}
	if t.Failed() {
		b.WriteString(" result=FAIL")
	} else {
		b.WriteString(" result=ok")
	}
	t.Log(b.String())
}

// world is one scenario's set of real parts: the Docker engine, a private
// network whose gateway address the test containers publish their ports on
// (never 0.0.0.0), a run ID that confines the exporters to this test's
// containers, and the Consul, CoreDNS and exporters the scenario starts.
type world struct {
	t      *testing.T
	docker *client.Client
	image  string
	run    string
	host   string // the exporter's --node
	net    *testenv.Network

	consulHTTP string // what exporter and CoreDNS use
	consul     *api.Client
	dns        *testenv.CoreDNS
	promAddr   string // CoreDNS's prometheus listener

	mu         sync.Mutex
	containers map[string]*ctr
}

// ctr is one test container.
type ctr struct {
	ID       string
	Name     string // container name (== its DNS label)
	HostPort int    // host port of 80/tcp while running
	Running  bool
}

func newWorld(t *testing.T) *world {
	t.Helper()
	gate(t)
	docker := testenv.Docker(t)
	image := testenv.EnsureTestServiceImage(t, docker)
	run := testenv.RunID()
	w := &world{t: t, docker: docker, image: image, run: run, host: "h-" + run, containers: map[string]*ctr{}}
	w.net = testenv.CreateNetwork(t, docker, "berth-faults-"+run, w.labels(nil))
	return w
}

func (w *world) labels(extra map[string]string) map[string]string {
	l := testenv.Labels(testLabelValue, extra)
	l[runLabel] = w.run
	return l
}

// useConsul points the world's CoreDNS and exporters at addr.
func (w *world) useConsul(addr string) {
	w.consulHTTP = addr
	cfg := api.DefaultConfig()
	cfg.Address = addr
	c, err := api.NewClient(cfg)
	if err != nil {
		w.t.Fatal(err)
	}
	w.consul = c
}

// corefile is the Corefile of the scenarios: the berth zone with transfers
// and metrics on loopback.
func (w *world) corefile(token string) string {
	w.promAddr = "127.0.0.1:" + strconv.Itoa(testenv.FreePort(w.t))
	return w.corefileAt(token, w.promAddr)
}

// corefileAt is corefile with its metrics on prom: a second server of the
// world's zone.
func (w *world) corefileAt(token, prom string) string {
	tok := ""
	if token != "" {
		tok = "\n        token " + token
	}
	return fmt.Sprintf(`%s {
    berth {
        consul %s%s
        prefix %s
        ttl 5
    }
    transfer {
        to *
    }
    prometheus %s
    errors
}
`, strings.TrimSuffix(zone, "."), w.consulHTTP, tok, prefix, prom)
}

// startCoreDNS runs bin/coredns on the world's Consul and waits for its
// first load.
func (w *world) startCoreDNS(token string) {
	w.t.Helper()
	w.dns = testenv.StartCoreDNS(w.t, w.corefile(token))
	w.waitLoaded()
}

func (w *world) waitLoaded() {
	w.t.Helper()
	deadline := time.Now().Add(testenv.ZoneStartWait)
	for {
		r, err := testenv.Exchange("udp", w.dns.Addr, zone, dns.TypeSOA, 0)
		if err == nil && r.Rcode == dns.RcodeSuccess && r.Authoritative {
			return
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("zone not loaded within %v: %v %v\n%s", testenv.ZoneStartWait, r, err, w.dns.Output())
		}
		time.Sleep(testenv.PollInterval)
	}
}

// exporterEnv configures an exporter for this world through the
// environment, as the image would be.
func (w *world) exporterEnv(host, consulAddr, token string) []string {
	env := []string{
		"CONSUL_HTTP_ADDR=" + consulAddr,
		"BERTH_NODE=" + host,
		"BERTH_ADVERTISE_ADDR=" + w.net.Gateway.String(),
		"BERTH_ONLY_LABEL=" + runLabel + "=" + w.run,
		"BERTH_LOG_LEVEL=debug",
	}
	if token != "" {
		env = append(env, "CONSUL_HTTP_TOKEN="+token)
	}
	return env
}

// startExporter runs berth-exporter on the host for this world's host name.
// listen is its metrics address ("" for none).
func (w *world) startExporter(listen string, args ...string) *testenv.ExporterProc {
	w.t.Helper()
	// The flag, not BERTH_LISTEN: an empty variable means the default
	// (127.0.0.1:9753), an empty flag means no listener.
	env := append(w.exporterEnv(w.host, w.consulHTTP, ""), "BERTH_LISTEN="+listen)
	return testenv.StartExporter(w.t, env, append([]string{"--listen=" + listen}, args...)...)
}

// runContainer starts a testsvc container named name-<run> publishing 80/tcp
// on the network's gateway address.
func (w *world) runContainer(name string, labels map[string]string) *ctr {
	w.t.Helper()
	c, err := w.createContainer(name, labels)
	if err != nil {
		w.t.Fatal(err)
	}
	if err := w.start(c); err != nil {
		w.t.Fatal(err)
	}
	return c
}

func (w *world) createContainer(name string, labels map[string]string) (*ctr, error) {
	full := name + "-" + w.run
	port := network.MustParsePort("80/tcp")
	ctx, cancel := context.WithTimeout(context.Background(), testenv.EngineRequestTimeout)
	defer cancel()
	res, err := w.docker.ContainerCreate(ctx, client.ContainerCreateOptions{Name: full,
		Config: &container.Config{Image: w.image, Labels: w.labels(labels), ExposedPorts: network.PortSet{port: {}}},
		HostConfig: &container.HostConfig{PortBindings: network.PortMap{port: {{HostIP: w.net.Gateway}}},
			NetworkMode: container.NetworkMode(w.net.Name)},
	})
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", full, err)
	}
	testenv.RemoveContainerOnCleanup(w.t, w.docker, res.ID)
	c := &ctr{ID: res.ID, Name: full}
	w.mu.Lock()
	w.containers[c.ID] = c
	w.mu.Unlock()
	return c, nil
}

// start starts c and reads its host port.
func (w *world) start(c *ctr) error {
	// Two requests to the engine: start and inspect.
	ctx, cancel := context.WithTimeout(context.Background(), 2*testenv.EngineRequestTimeout)
	defer cancel()
	if _, err := w.docker.ContainerStart(ctx, c.ID, client.ContainerStartOptions{}); err != nil {
		return fmt.Errorf("start %s: %w", c.Name, err)
	}
	res, err := w.docker.ContainerInspect(ctx, c.ID, client.ContainerInspectOptions{})
	if err != nil {
		return err
	}
	for _, b := range res.Container.NetworkSettings.Ports[network.MustParsePort("80/tcp")] {
		n, _ := strconv.Atoi(b.HostPort)
		w.mu.Lock()
		c.HostPort, c.Running = n, true
		w.mu.Unlock()
		return nil
	}
	return fmt.Errorf("%s: 80/tcp not published", c.Name)
}

// stop kills c (SIGKILL: a die event) and waits until it has stopped.
func (w *world) stop(c *ctr) error {
	ctx, cancel := context.WithTimeout(context.Background(), testenv.EngineRequestTimeout)
	defer cancel()
	w.mu.Lock()
	c.Running = false
	w.mu.Unlock()
	if _, err := w.docker.ContainerKill(ctx, c.ID, client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		return fmt.Errorf("kill %s: %w", c.Name, err)
	}
	testenv.WaitNotRunning(w.docker, c.ID, testenv.EngineRequestTimeout)
	return nil
}

// running is the set of running containers' names -> host ports, of those
// whose names start with base (all if "").
func (w *world) running(base string) map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]int{}
	for _, c := range w.containers {
		if c.Running && strings.HasPrefix(c.Name, base) {
			out[c.Name] = c.HostPort
		}
	}
	return out
}

// Names in the zone.
func hostName(host string) string        { return host + ".hosts." + zone }
func ctrName(host, name string) string   { return record.Label(name) + "." + hostName(host) }
func (w *world) ctrName(c *ctr) string   { return ctrName(w.host, c.Name) }
func (w *world) service(s string) string { return s + "-" + w.run }

// srvPorts lists the ports of the SRV records in an answer, sorted.
func srvPorts(m *dns.Msg) []int {
	var ports []int
	for _, rr := range m.Answer {
		if s, ok := rr.(*dns.SRV); ok {
			ports = append(ports, int(s.Port))
		}
	}
	sort.Ints(ports)
	return ports
}

// dnsPorts is the set of SRV ports DNS gives for name; nil on NXDOMAIN.
func (w *world) dnsPorts(name string) ([]int, int, error) {
	r, err := testenv.Exchange("tcp", w.dns.Addr, name, dns.TypeSRV, 0)
	if err != nil {
		return nil, -1, err
	}
	return srvPorts(r), r.Rcode, nil
}

func portsOf(m map[string]int) []int {
	var ports []int
	for _, p := range m {
		ports = append(ports, p)
	}
	sort.Ints(ports)
	return ports
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// waitFor polls cond every 20 ms until it holds or timeout passes, and
// returns how long it took and whether it held.
func waitFor(timeout time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	for {
		if cond() {
			return time.Since(start), true
		}
		if time.Since(start) > timeout {
			return time.Since(start), false
		}
		time.Sleep(testenv.PollInterval)
	}
}

// dnsMatches reports whether DNS gives, for service svc and for every
// container name, exactly the running containers' ports (with base as their
// name prefix), and NXDOMAIN for the stopped ones.
func (w *world) dnsMatches(svc, base string) (bool, string) {
	want := w.running(base)
	got, rcode, err := w.dnsPorts(svc + "." + zone)
	if err != nil {
		return false, err.Error()
	}
	if len(want) == 0 {
		if rcode != dns.RcodeNameError {
			return false, fmt.Sprintf("service %s: want NXDOMAIN, got %s %v", svc, dns.RcodeToString[rcode], got)
		}
	} else if !equalInts(got, portsOf(want)) {
		return false, fmt.Sprintf("service %s: DNS ports %v, Docker truth %v", svc, got, portsOf(want))
	}
	w.mu.Lock()
	var all []*ctr
	for _, c := range w.containers {
		if strings.HasPrefix(c.Name, base) {
			all = append(all, &ctr{ID: c.ID, Name: c.Name, HostPort: c.HostPort, Running: c.Running})
		}
	}
	w.mu.Unlock()
	for _, c := range all {
		got, rcode, err := w.dnsPorts(w.ctrName(c))
		if err != nil {
			return false, err.Error()
		}
		if c.Running && (rcode != dns.RcodeSuccess || !equalInts(got, []int{c.HostPort})) {
			return false, fmt.Sprintf("%s: DNS %s %v, want port %d", c.Name, dns.RcodeToString[rcode], got, c.HostPort)
		}
		if !c.Running && rcode != dns.RcodeNameError {
			return false, fmt.Sprintf("%s is stopped but DNS says %s %v", c.Name, dns.RcodeToString[rcode], got)
		}
	}
	return true, ""
}

// kvMatches reports whether the host's container documents in KV are
// exactly the running containers (with base as their name prefix).
func (w *world) kvMatches(base string) (bool, string) {
	pairs, _, err := w.consul.KV().List(record.ContainersPrefix(prefix, w.host), nil)
	if err != nil {
		return false, err.Error()
	}
	got := map[string]int{}
	for _, p := range pairs {
		d, err := record.DecodeContainer(p.Key, p.Value)
		if err != nil {
			return false, err.Error()
		}
		if strings.HasPrefix(d.Name, base) {
			got[d.Name] = d.Ports[0].HostPort
		}
	}
	want := w.running(base)
	if len(got) != len(want) {
		return false, fmt.Sprintf("KV has %d documents, Docker %d running", len(got), len(want))
	}
	for n, p := range want {
		if got[n] != p {
			return false, fmt.Sprintf("%s: KV port %d, Docker %d", n, got[n], p)
		}
	}
	return true, ""
}

// scrape reads a Prometheus text endpoint and sums each metric name's series
// (labels kept as part of the key as well).
func scrape(url string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		series := line[:i]
		out[series] += v
		if j := strings.IndexByte(series, '{'); j >= 0 {
			out[series[:j]] += v
		}
	}
	return out, sc.Err()
}

// sessionsOf lists the Consul sessions named for host's exporter.
func sessionsOf(c *api.Client, host string) ([]*api.SessionEntry, error) {
	list, _, err := c.Session().List(nil)
	if err != nil {
		return nil, err
	}
	var out []*api.SessionEntry
	for _, s := range list {
		if s.Name == "berth-exporter:"+host {
			out = append(out, s)
		}
	}
	return out, nil
}

// holder is the session holding key, "" if none or absent.
func holder(c *api.Client, key string) string {
	p, _, err := c.KV().Get(key, nil)
	if err != nil || p == nil {
		return ""
	}
	return p.Session
}

// mb formats bytes as MiB.
func mb(b int64) string { return fmt.Sprintf("%.1fMiB", float64(b)/(1<<20)) }

var _ = netip.Addr{}
