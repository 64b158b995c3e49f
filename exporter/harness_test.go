package exporter

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
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

// rig is one test's world: a Consul agent, a container engine (Docker, or a
// Podman service of the test's own), and a run label that confines the
// exporters of this test to its own containers (other tests and colleagues
// share the engine).
type rig struct {
	t      *testing.T
	consul *testenv.Consul
	kv     *api.Client
	engine string          // EngineDocker or EnginePodman
	docker *client.Client  // the engine's API, whichever engine it is
	podman *testenv.Podman // the Podman service, when engine is EnginePodman
	image  string
	run    string // value of the berth.test.run label
	host   string
	prefix string
}

// newRig is a rig on the Docker engine.
func newRig(t *testing.T, opts testenv.ConsulOptions) *rig {
	t.Helper()
	return newEngineRig(t, EngineDocker, opts)
}

// engines are the engines the end-to-end tests run against, one subtest
// each.
var engines = []string{EngineDocker, EnginePodman}

// forEachEngine runs body as one parallel subtest per engine: one test
// body, whichever engine serves the Docker API.
func forEachEngine(t *testing.T, body func(t *testing.T, engine string)) {
	for _, engine := range engines {
		t.Run(engine, func(t *testing.T) {
			t.Parallel()
			body(t, engine)
		})
	}
}

// podmanRootless asks newEngineRig for a Podman service of an unprivileged
// user (testenv.StartRootlessPodman); the rig's engine is still Podman.
const podmanRootless = "podman-rootless"

// newEngineRig is a rig on engine: the Docker engine of DOCKER_HOST, or a
// Podman service started for the test, rootful or (podmanRootless) not.
func newEngineRig(t *testing.T, engine string, opts testenv.ConsulOptions) *rig {
	t.Helper()
	r := &rig{t: t, engine: engine}
	switch engine {
	case EngineDocker:
		r.docker = testenv.Docker(t)
		r.image = testenv.EnsureTestServiceImage(t, r.docker)
	case EnginePodman, podmanRootless:
		if engine == podmanRootless {
			r.engine, r.podman = EnginePodman, testenv.StartRootlessPodman(t)
		} else {
			r.podman = testenv.StartPodman(t)
		}
		r.docker = r.podman.Client
		r.image = testenv.EnsurePodmanTestServiceImage(t, r.podman)
	default:
		t.Fatalf("unknown engine %q", engine)
	}
	r.consul = testenv.StartConsul(t, opts)
	r.kv = r.consul.Client()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	r.run = hex.EncodeToString(b)
	r.host, r.prefix = "h-"+r.run, "berth"
	return r
}

// dockerHost is the DOCKER_HOST of the rig's engine, for a subprocess.
func (r *rig) dockerHost() string { return r.docker.DaemonHost() }

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
	return r.startExporterOn(cfg, r.docker)
}

// startExporterOn runs an exporter that talks to the engine through docker.
func (r *rig) startExporterOn(cfg Config, docker *client.Client) *Exporter {
	r.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e, err := New(ctx, cfg, docker, r.consulConfig(), testLogger(r.t))
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
			// Three failures in a row make it unhealthy: on a loaded machine
			// one slow check must not flip it (the tests count KV writes
			// while the status stays the same).
			Interval: checkInterval, Timeout: checkTimeout, Retries: checkRetries}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*testenv.EngineRequestTimeout)
	defer cancel()
	hc := &container.HostConfig{PortBindings: ports}
	if r.podman != nil && r.podman.Rootless {
		// Podman 4.3's rootless bridge needs a rootless network namespace
		// that fails to set up here ("failed to mount runtime directory
		// for rootless netns"); slirp4netns is rootless Podman's own
		// default, with the bindings forwarded by rootlessport.
		hc.NetworkMode = "slirp4netns"
	}
	var id string
	for attempt := 1; ; attempt++ {
		res, err := r.docker.ContainerCreate(ctx, client.ContainerCreateOptions{Name: o.name + "-" + r.run, Config: cfg,
			HostConfig: hc})
		if err != nil {
			r.t.Fatalf("create %s: %v", o.name, err)
		}
		testenv.RemoveContainerOnCleanup(r.t, r.docker, res.ID)
		id = res.ID
		if o.noStart {
			break
		}
		_, err = r.docker.ContainerStart(ctx, id, client.ContainerStartOptions{})
		if err == nil {
			break
		}
		// Podman picks a free host port when it creates the container and
		// binds it only at the start; on a busy machine another process's
		// connection can take it between the two. That is the engine's
		// race, not the exporter's: make the container again.
		if r.podman == nil || !strings.Contains(err.Error(), "address already in use") || attempt == podmanPortAttempts {
			r.t.Fatalf("start %s: %v", o.name, err)
		}
		r.t.Logf("start %s: %v; creating it again", o.name, err)
		if _, err := r.docker.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true}); err != nil {
			r.t.Fatalf("remove %s: %v", o.name, err)
		}
	}
	if o.health && r.podman != nil {
		r.runHealthChecks(id, checkInterval)
	}
	return id
}

// podmanPortAttempts bounds how often runContainer makes a Podman
// container again whose host port was taken before its start: each attempt
// draws another port, so a second collision is already rare.
const podmanPortAttempts = 3

// runHealthChecks runs `podman healthcheck run id` every interval until
// the test ends: Podman times health checks with systemd timers, and there
// is no systemd here. A check of a stopped or paused container fails, and
// is simply tried again.
func (r *rig) runHealthChecks(id string, interval time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			_ = r.podman.Command("healthcheck", "run", id).Run()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	r.t.Cleanup(func() { cancel(); <-done })
}

// healthFlipped returns once the engine reports health status for id, so
// that a test then waits for the exporter's bound alone (r.changeWait).
// On Docker the engine's own checks get there within healthFlipWait. On
// Podman the test runs the checks itself (`podman healthcheck run`, one
// check each, which its checkTimeout ends), up to checkRetries of them,
// the most a change of the check's answer needs: how fast the background
// runner gets its turns on a busy machine is then no part of the wait.
func (r *rig) healthFlipped(id, status string) {
	r.t.Helper()
	health := func() string {
		ctx, cancel := context.WithTimeout(context.Background(), testenv.EngineRequestTimeout)
		defer cancel()
		res, err := r.docker.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
		if err != nil || res.Container.State == nil || res.Container.State.Health == nil {
			return fmt.Sprintf("(unknown: %v)", err)
		}
		return string(res.Container.State.Health.Status)
	}
	if r.podman != nil {
		got := health()
		for i := 0; got != status && i < checkRetries; i++ {
			_ = r.podman.Command("healthcheck", "run", id).Run()
			got = health()
		}
		if got != status {
			r.t.Fatalf("%s: health %s after %d checks run, want %s", id[:12], got, checkRetries, status)
		}
		return
	}
	testenv.EventuallyTrue(r.t, healthFlipWait, id[:12]+" health "+status, func() bool { return health() == status })
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

// network is the name of id's only network.
func (r *rig) network(id string) string {
	r.t.Helper()
	res, err := r.docker.ContainerInspect(context.Background(), id, client.ContainerInspectOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	for name := range res.Container.NetworkSettings.Networks {
		return name
	}
	r.t.Fatalf("%s: no network", id[:12])
	return ""
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

// kvIndex is Consul's index of the rig's prefix: any write under it, by
// this rig's exporter alone, moves it.
func (r *rig) kvIndex() uint64 {
	r.t.Helper()
	_, meta, err := r.kv.KV().List(r.prefix+"/", nil)
	if err != nil {
		r.t.Fatal(err)
	}
	return meta.LastIndex
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
		time.Sleep(testenv.PollInterval)
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
