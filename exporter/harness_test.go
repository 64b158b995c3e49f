package exporter

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// rig is one test's world: a Consul agent, the Docker engine, and a run
// label that confines the exporters of this test to its own containers
// (other tests and colleagues share the engine).
type rig struct {
	t      *testing.T
	consul *testenv.Consul
	kv     *api.Client
	docker *client.Client
	image  string
	run    string // value of the berth.test.run label
	host   string
	prefix string
}

func newRig(t *testing.T, opts testenv.ConsulOptions) *rig {
	t.Helper()
	docker := testenv.Docker(t)
	image := testenv.EnsureTestServiceImage(t, docker)
	consul := testenv.StartConsul(t, opts)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	run := hex.EncodeToString(b)
	return &rig{t: t, consul: consul, kv: consul.Client(), docker: docker, image: image, run: run,
		host: "h-" + run, prefix: "berth"}
}

func (r *rig) config() Config {
	cfg := DefaultConfig()
	cfg.Node = r.host
	// The test's world is this machine: its containers are dialled on
	// loopback, which takes the operator's opt-in.
	cfg.AdvertiseAddrs = []netip.Addr{loopback}
	cfg.AllowLoopback = true
	cfg.Prefix = r.prefix
	cfg.Listen = ""
	cfg.OnlyLabel = "berth.test.run=" + r.run
	return cfg
}

func (r *rig) consulConfig() *api.Config {
	cfg := api.DefaultConfig()
	cfg.Address = r.consul.HTTP
	return cfg
}

// startExporter runs an exporter in this process until the test ends.
func (r *rig) startExporter(cfg Config) *Exporter {
	r.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e, err := New(ctx, cfg, r.docker, r.consulConfig(), testLogger(r.t))
	if err != nil {
		r.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := e.Run(ctx); err != nil {
			r.t.Errorf("exporter: %v", err)
		}
	}()
	r.t.Cleanup(func() { cancel(); <-done })
	return e
}

// runOpts describe a test container.
type runOpts struct {
	name    string
	labels  map[string]string
	ports   network.PortMap // default: 80/tcp on 0.0.0.0, host port chosen by Docker
	health  bool            // a 500 ms health check against /healthz
	env     []string
	noStart bool
}

// runContainer creates and starts a testsvc container, removed when the
// test ends.
func (r *rig) runContainer(o runOpts) string {
	r.t.Helper()
	labels := testenv.Labels("exporter", map[string]string{"berth.test.run": r.run})
	for k, v := range o.labels {
		labels[k] = v
	}
	ports := o.ports
	if ports == nil {
		ports = network.PortMap{network.MustParsePort("80/tcp"): {{HostIP: netip.IPv4Unspecified()}}}
	}
	cfg := &container.Config{Image: r.image, Labels: labels, Env: o.env,
		ExposedPorts: network.PortSet{}}
	for p := range ports {
		cfg.ExposedPorts[p] = struct{}{}
	}
	if o.health {
		cfg.Healthcheck = &container.HealthConfig{Test: []string{"CMD", "/testsvc", "-check", "http://127.0.0.1/healthz"},
			Interval: 500 * time.Millisecond, Timeout: 2 * time.Second, Retries: 1}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := r.docker.ContainerCreate(ctx, client.ContainerCreateOptions{Name: o.name + "-" + r.run, Config: cfg,
		HostConfig: &container.HostConfig{PortBindings: ports}})
	if err != nil {
		r.t.Fatalf("create %s: %v", o.name, err)
	}
	testenv.RemoveContainerOnCleanup(r.t, r.docker, res.ID)
	if !o.noStart {
		if _, err := r.docker.ContainerStart(ctx, res.ID, client.ContainerStartOptions{}); err != nil {
			r.t.Fatalf("start %s: %v", o.name, err)
		}
	}
	return res.ID
}

// hostPort is the host port Docker bound for container port p on IPv4.
func (r *rig) hostPort(id, p string) int {
	r.t.Helper()
	res, err := r.docker.ContainerInspect(context.Background(), id, client.ContainerInspectOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	for _, b := range res.Container.NetworkSettings.Ports[network.MustParsePort(p)] {
		if !b.HostIP.IsValid() || b.HostIP.Is4() {
			n, _ := strconv.Atoi(b.HostPort)
			return n
		}
	}
	r.t.Fatalf("%s: no IPv4 binding of %s", id[:12], p)
	return 0
}

// doc reads a container document of this rig's host; nil if absent.
func (r *rig) doc(id string) *record.Container {
	r.t.Helper()
	pair, _, err := r.kv.KV().Get(record.ContainerKey(r.prefix, r.host, id), nil)
	if err != nil {
		r.t.Fatal(err)
	}
	if pair == nil {
		return nil
	}
	d, err := record.DecodeContainer(pair.Key, pair.Value)
	if err != nil {
		r.t.Fatal(err)
	}
	return d
}

// waitDoc waits until id's document satisfies ok (nil: absent).
func (r *rig) waitDoc(what, id string, timeout time.Duration, ok func(*record.Container) bool) *record.Container {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		d := r.doc(id)
		if ok(d) {
			return d
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%s: document of %s after %s: %+v", what, id[:12], timeout, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func present(d *record.Container) bool { return d != nil }
func absent(d *record.Container) bool  { return d == nil }

func post(t *testing.T, url string) {
	t.Helper()
	resp, err := http.Post(url, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST %s: %s", url, resp.Status)
	}
}

func hostURL(port int, path string) string { return fmt.Sprintf("http://127.0.0.1:%d%s", port, path) }
