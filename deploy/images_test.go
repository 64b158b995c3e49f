package deploy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/berthdns/berth/internal/testenv"
)

// The tags the test builds, apart from make image's :latest.
const (
	exporterTag = "berth-exporter:deploy-test"
	corednsTag  = "berth-coredns:deploy-test"
)

// zone is the zone deploy/dns/Corefile serves.
const zone = "c.example.org."

// TestImages builds both images with hack/image.sh (what make image runs),
// then runs them as the Compose files do: the exporter image on the host's
// network with the Docker socket read-only, the CoreDNS image with
// deploy/dns/Corefile mounted over its own, both read-only, without
// capabilities, as their images' users. The CoreDNS container sits on a
// network of the test's, and reaches the test's Consul on that network's
// gateway: a service container published there must be answered by it.
func TestImages(t *testing.T) {
	cli := testenv.Docker(t)
	if _, err := exec.LookPath("docker"); err != nil {
		testenv.Unavailable(t, "the docker CLI (hack/image.sh runs docker build): %v", err)
	}
	root := testenv.RepoRoot(t)
	build := exec.Command("bash", filepath.Join(root, "hack", "image.sh"))
	build.Env = append(os.Environ(),
		"BERTH_EXPORTER="+testenv.ExporterBinary(t), "BERTH_COREDNS="+testenv.CoreDNSBinary(t),
		"EXPORTER_IMAGE="+exporterTag, "COREDNS_IMAGE="+corednsTag)
	var stderr strings.Builder
	build.Stderr = &stderr
	out, err := build.Output()
	if err != nil {
		t.Fatalf("hack/image.sh: %v\n%s", err, stderr.String())
	}
	if got, want := strings.Fields(string(out)), []string{exporterTag, corednsTag}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("hack/image.sh printed %q, want the tags %q", got, want)
	}
	checkImage(t, cli, exporterTag, "exporter", "", []string{"/berth-exporter"})
	checkImage(t, cli, corednsTag, "coredns", "65534:65534", []string{"/coredns"})

	run := testenv.RunID()
	host := "deploy-" + run
	labels := testenv.Labels("deploy", map[string]string{"berth.deploy.run": run})
	nw := testenv.CreateNetwork(t, cli, "berth-deploy-"+run, labels)
	// Consul on loopback for the exporter (the host's network) and on the
	// bridge's gateway for the CoreDNS container.
	consul := testenv.StartConsul(t, testenv.ConsulOptions{
		ExtraHCL: fmt.Sprintf("addresses { http = %q }\n", "127.0.0.1 "+nw.Gateway.String())})
	_, consulPort, _ := strings.Cut(consul.HTTP, ":")

	// The service: testsvc publishing 80/tcp on the gateway's address.
	svc := create(t, cli, "berth-deploy-"+run+"-web", &container.Config{
		Image: testenv.EnsureTestServiceImage(t, cli), ExposedPorts: network.PortSet{network.MustParsePort("80/tcp"): {}},
		Labels: merge(labels, map[string]string{"berth.service": "web"}),
	}, &container.HostConfig{NetworkMode: container.NetworkMode(nw.Name),
		PortBindings: network.PortMap{network.MustParsePort("80/tcp"): {{HostIP: nw.Gateway}}}}, nil)
	hostPort := publishedPort(t, cli, svc)

	// The exporter, as deploy/exporter/compose.yaml runs it; only this
	// test's containers (--only-label), metrics on a free loopback port.
	sock := dockerSocket()
	metricsPort := testenv.FreePort(t)
	exporter := create(t, cli, "berth-deploy-"+run+"-exporter", &container.Config{
		Image: exporterTag, Labels: labels,
		Env: []string{"CONSUL_HTTP_ADDR=" + consul.HTTP, "BERTH_NODE=" + host,
			"BERTH_ADVERTISE_ADDR=" + nw.Gateway.String(), "BERTH_ONLY_LABEL=berth.deploy.run=" + run,
			"BERTH_LISTEN=127.0.0.1:" + strconv.Itoa(metricsPort)},
	}, composeHardening(&container.HostConfig{NetworkMode: "host",
		Mounts: []mount.Mount{{Type: mount.TypeBind, Source: sock, Target: "/var/run/docker.sock", ReadOnly: true}}}), nil)

	// CoreDNS, as deploy/dns/compose.yaml runs it, at a fixed address of
	// the test's network (its port 53 is the container's own).
	dnsIP := nw.Addr(53)
	coredns := create(t, cli, "berth-deploy-"+run+"-coredns", &container.Config{
		Image: corednsTag, Labels: labels,
		Env: []string{"CONSUL_HTTP_ADDR=" + nw.Gateway.String() + ":" + consulPort},
	}, composeHardening(&container.HostConfig{
		Mounts: []mount.Mount{{Type: mount.TypeBind, Source: filepath.Join(root, "deploy", "dns", "Corefile"),
			Target: "/etc/coredns/Corefile", ReadOnly: true}}}),
		&network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
			nw.Name: {IPAMConfig: &network.EndpointIPAMConfig{IPv4Address: dnsIP}}}})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("exporter container log:\n%s", testenv.ContainerLogs(cli, exporter, 60))
			t.Logf("coredns container log:\n%s", testenv.ContainerLogs(cli, coredns, 60))
		}
	})

	dnsAddr := netip.AddrPortFrom(dnsIP, 53).String()
	srvName := "_80._tcp.web." + zone
	target := host + ".hosts." + zone
	// Both containers start (a start each), the exporter publishes the
	// service and the plugin in the CoreDNS image serves it.
	served := testenv.PartStartWait + testenv.ExporterStartWait + testenv.ZoneStartWait
	testenv.Eventually(t, served, "the service answered by the CoreDNS image", func() error {
		r, err := testenv.Exchange("udp", dnsAddr, srvName, dns.TypeSRV, 1232)
		if err != nil {
			return err
		}
		if r.Rcode != dns.RcodeSuccess || !r.Authoritative || len(r.Answer) != 1 {
			return fmt.Errorf("SRV %s: %s", srvName, r)
		}
		srv, ok := r.Answer[0].(*dns.SRV)
		if !ok || srv.Target != target || int(srv.Port) != hostPort {
			return fmt.Errorf("SRV %s: %s, want %s port %d", srvName, r.Answer[0], target, hostPort)
		}
		return nil
	})
	// Over TCP too (compose.yaml publishes 53/tcp), and the host's address.
	r, err := testenv.Exchange("tcp", dnsAddr, target, dns.TypeA, 0)
	if err != nil || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != nw.Gateway.String() {
		t.Errorf("A %s over TCP: %v %v, want %s", target, r, err, nw.Gateway)
	}

	// The Corefile's endpoints, on the ports compose.yaml publishes.
	base := "http://" + dnsIP.String()
	if body := httpGet(t, base+":8181/ready", http.StatusOK); !strings.Contains(body, "OK") {
		t.Errorf("ready: %q", body)
	}
	httpGet(t, base+":8080/health", http.StatusOK)
	metrics := httpGet(t, base+":9153/metrics", http.StatusOK)
	for _, want := range []string{`coredns_berth_hosts{zone="c.example.org."} 1`, `coredns_berth_stale{zone="c.example.org."} 0`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("CoreDNS metrics lack %s", want)
		}
	}
	exporterMetrics := "http://127.0.0.1:" + strconv.Itoa(metricsPort)
	if body := httpGet(t, exporterMetrics+"/healthz", http.StatusOK); body != "ok\n" {
		t.Errorf("exporter /healthz: %q", body)
	}
	if body := httpGet(t, exporterMetrics+"/metrics", http.StatusOK); !strings.Contains(body, "berth_exporter_containers_published 1") {
		t.Errorf("exporter metrics: want one container published:\n%s", grepLines(body, "berth_exporter_containers"))
	}
}

// checkImage checks what hack/image.sh built: the component label, the user
// and the entrypoint.
func checkImage(t *testing.T, cli *client.Client, tag, component, user string, entrypoint []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testenv.EngineRequestTimeout)
	defer cancel()
	res, err := cli.ImageInspect(ctx, tag)
	if err != nil {
		t.Fatalf("inspect %s: %v", tag, err)
	}
	c := res.Config
	if c == nil {
		t.Fatalf("%s has no config", tag)
	}
	if c.Labels["berth.component"] != component || c.User != user || strings.Join(c.Entrypoint, " ") != strings.Join(entrypoint, " ") {
		t.Errorf("%s: label berth.component=%q user %q entrypoint %q; want %q, %q, %q", tag,
			c.Labels["berth.component"], c.User, c.Entrypoint, component, user, entrypoint)
	}
}

// composeHardening adds what both Compose files set: a read-only root, no
// capabilities, no new privileges.
func composeHardening(hc *container.HostConfig) *container.HostConfig {
	hc.ReadonlyRootfs = true
	hc.CapDrop = []string{"ALL"}
	hc.SecurityOpt = []string{"no-new-privileges:true"}
	return hc
}

// create creates and starts a container that is removed when the test ends.
func create(t *testing.T, cli *client.Client, name string, cfg *container.Config, hc *container.HostConfig, nc *network.NetworkingConfig) string {
	t.Helper()
	// Two requests to the engine: create and start.
	ctx, cancel := context.WithTimeout(context.Background(), 2*testenv.EngineRequestTimeout)
	defer cancel()
	res, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{Name: name, Config: cfg, HostConfig: hc, NetworkingConfig: nc})
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	testenv.RemoveContainerOnCleanup(t, cli, res.ID)
	if _, err := cli.ContainerStart(ctx, res.ID, client.ContainerStartOptions{}); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	return res.ID
}

// publishedPort is the host port of the container's 80/tcp.
func publishedPort(t *testing.T, cli *client.Client, id string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testenv.EngineRequestTimeout)
	defer cancel()
	res, err := cli.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range res.Container.NetworkSettings.Ports[network.MustParsePort("80/tcp")] {
		if n, err := strconv.Atoi(b.HostPort); err == nil {
			return n
		}
	}
	t.Fatalf("%s: 80/tcp not published", id[:12])
	return 0
}

// dockerSocket is the Engine's socket, which the exporter's container gets.
func dockerSocket() string {
	if h := os.Getenv("DOCKER_HOST"); strings.HasPrefix(h, "unix://") {
		return strings.TrimPrefix(h, "unix://")
	}
	return "/var/run/docker.sock"
}

// httpGet fetches url and fails the test unless it answers with status.
func httpGet(t *testing.T, url string, status int) string {
	t.Helper()
	// The exporter answers /metrics at once, and /healthz after at most
	// its two pings, each cut off at 2 s (exporter/health.go): both within
	// PromptWait.
	c := &http.Client{Timeout: testenv.PromptWait}
	resp, err := c.Get(url)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return ""
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != status {
		t.Errorf("GET %s: %s %v, want %d:\n%s", url, resp.Status, err, status, body)
	}
	return string(body)
}

func merge(a, b map[string]string) map[string]string {
	m := map[string]string{}
	for k, v := range a {
		m[k] = v
	}
	for k, v := range b {
		m[k] = v
	}
	return m
}

// grepLines is the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
