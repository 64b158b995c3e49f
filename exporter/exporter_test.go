package exporter

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// TestExporter runs the exporter against each real engine and a real
// Consul: documents appear, follow pause, health, rename and restart, and
// disappear on stop, kill and rm, each within the engine's change bound
// (r.changeWait), with the resync an hour away so that only events (and on
// Podman its listing) can do it. On Podman the same
// body also covers what Podman does differently (events.go): its die and
// remove events, which Docker's event filter misses, health_status on
// every check run, and HostIp "" on wildcard bindings.
func TestExporter(t *testing.T) {
	t.Parallel()
	forEachEngine(t, testExporter)
}

func testExporter(t *testing.T, engine string) {
	r := newEngineRig(t, engine, testenv.ConsulOptions{})
	ctx := context.Background()

	// A container that runs before the exporter starts.
	early := r.runContainer(runOpts{name: "early", labels: map[string]string{LabelService: "early.shop"}})
	cfg := r.config()
	cfg.Resync = time.Hour
	e := r.startExporter(cfg)
	d := r.waitDoc("initial listing", early, testenv.ExporterStartWait, present)
	if got := e.Engine(); got.Name != engine || got.Version == "" {
		t.Errorf("engine detected as %+v, want %s", got, engine)
	}
	if d.Service != "early.shop" || d.Name != "early-"+r.run || d.Health != "none" || len(d.Ports) != 1 ||
		d.Ports[0].Addr != loopback || d.Ports[0].HostPort != r.hostPort(early, "80/tcp") || d.Ports[0].Name != "http" {
		t.Errorf("early document %+v", d)
	}

	// A container with a health check, several ports (one on loopback, not
	// published) and UDP.
	web := r.runContainer(runOpts{name: "web", health: true, labels: map[string]string{"berth.port.8080.name": "admin"},
		ports: network.PortMap{
			network.MustParsePort("80/tcp"):   {{}, {HostIP: loopback}}, // the loopback binding is not published
			network.MustParsePort("8080/tcp"): {{}},
			network.MustParsePort("53/udp"):   {{}},
			network.MustParsePort("9000/tcp"): {{HostIP: loopback}},
		}})
	r.healthFlipped(web, "healthy")
	d = r.waitDoc("healthy", web, r.changeWait(), func(d *record.Container) bool { return d != nil && d.Health == "healthy" })
	var ports []string
	for _, p := range d.Ports {
		ports = append(ports, p.Proto+"/"+p.Name+"/"+p.Addr.String())
		if p.Port == 9000 {
			t.Errorf("loopback binding published: %+v", p)
		}
	}
	if len(d.Ports) != 3 || d.Ports[0].Port != 53 || d.Ports[0].Proto != "udp" || d.Ports[0].Name != "domain" ||
		d.Ports[2].Port != 8080 || d.Ports[2].Name != "admin" {
		t.Errorf("web ports %v: %+v", ports, d.Ports)
	}
	port := r.hostPort(web, "80/tcp")

	if _, err := r.docker.ContainerPause(ctx, web, client.ContainerPauseOptions{}); err != nil {
		t.Fatal(err)
	}
	r.waitDoc("paused", web, r.changeWait(), func(d *record.Container) bool { return d != nil && d.Paused && !d.Healthy() })
	if _, err := r.docker.ContainerUnpause(ctx, web, client.ContainerUnpauseOptions{}); err != nil {
		t.Fatal(err)
	}
	r.waitDoc("unpaused", web, r.changeWait(), func(d *record.Container) bool { return d != nil && !d.Paused })

	post(t, hostURL(port, "/fail"))
	r.healthFlipped(web, "unhealthy")
	r.waitDoc("unhealthy", web, r.changeWait(), func(d *record.Container) bool { return d != nil && d.Health == "unhealthy" })
	post(t, hostURL(port, "/recover"))
	r.healthFlipped(web, "healthy")
	r.waitDoc("recovered", web, r.changeWait(), func(d *record.Container) bool { return d != nil && d.Health == "healthy" })

	// Health checks that find what they found before change nothing in
	// KV, though Podman sends health_status for every one of them. KV's
	// own index of the prefix says so: the exporter's transaction counter
	// is added to only once Publish returns, a moment after KV shows the
	// recovery's write, so a baseline read off it can miss that write.
	index, healthEvents := r.kvIndex(), testenv.MetricValue(e.Metrics().Events.WithLabelValues("health_status"))
	// Four checks take at most four check periods (interval and timeout
	// each); on Podman each sends its event, which the exporter counts
	// within one change bound.
	testenv.EventuallyTrue(t, 4*(checkInterval+checkTimeout)+r.changeWait(), "four more health checks", func() bool {
		return testenv.MetricValue(e.Metrics().Events.WithLabelValues("health_status")) >= healthEvents+4 || engine == EngineDocker
	})
	if engine == EngineDocker {
		// Docker sends no event for an unchanged status: four check
		// intervals, the least in which four checks run, is how long the
		// test looks for a write that should not come.
		time.Sleep(4 * checkInterval)
	}
	if n := r.kvIndex(); n != index {
		t.Errorf("KV written while the health status stayed healthy: the prefix's index went from %d to %d", index, n)
	}
	t.Logf("%s: %v health_status events over the unchanged checks", engine,
		testenv.MetricValue(e.Metrics().Events.WithLabelValues("health_status"))-healthEvents)

	if _, err := r.docker.ContainerRename(ctx, web, client.ContainerRenameOptions{NewName: "renamed-" + r.run}); err != nil {
		t.Fatal(err)
	}
	r.waitDoc("renamed", web, r.changeWait(), func(d *record.Container) bool { return d != nil && d.Name == "renamed-"+r.run })

	// A restart with Docker-chosen ports: whatever ports it gets show.
	if _, err := r.docker.ContainerRestart(ctx, early, client.ContainerRestartOptions{}); err != nil {
		t.Fatal(err)
	}
	r.waitDoc("restarted", early, r.changeWait(), func(d *record.Container) bool {
		return d != nil && d.Ports[0].HostPort == r.hostPort(early, "80/tcp")
	})

	// Stop, kill and rm each remove the document.
	if _, err := r.docker.ContainerStop(ctx, early, client.ContainerStopOptions{}); err != nil {
		t.Fatal(err)
	}
	r.waitDoc("stopped", early, r.changeWait(), absent)
	if _, err := r.docker.ContainerKill(ctx, web, client.ContainerKillOptions{}); err != nil {
		t.Fatal(err)
	}
	r.waitDoc("killed", web, r.changeWait(), absent)
	gone := r.runContainer(runOpts{name: "gone"})
	r.waitDoc("third", gone, r.changeWait(), present)
	if _, err := r.docker.ContainerRemove(ctx, gone, client.ContainerRemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	r.waitDoc("removed", gone, r.changeWait(), absent)
	// Each came through its engine's event, whatever the engine calls it.
	die, destroy := "die", "destroy"
	if engine == EnginePodman {
		destroy = "remove" // and "die" (Podman's "died" in its own API)
	}
	// An event may be counted after the listing already removed the
	// document: give it a moment on a loaded machine.
	for _, action := range []string{die, destroy, "kill", "pause", "unpause", "rename", "start"} {
		testenv.EventuallyTrue(t, r.changeWait(), action+" event counted", func() bool {
			return testenv.MetricValue(e.Metrics().Events.WithLabelValues(action)) > 0
		})
	}

	// Compose's labels name the service <service>.<project>.
	compose := r.runContainer(runOpts{name: "compose", labels: map[string]string{
		LabelComposeService: "api", LabelComposeProject: "shop-" + r.run}})
	if d := r.waitDoc("compose-style", compose, r.changeWait(), present); d.Service != "api.shop-"+r.run {
		t.Errorf("compose-style service %q, want api.shop-%s", d.Service, r.run)
	}
	if _, err := r.docker.ContainerRemove(ctx, compose, client.ContainerRemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	r.waitDoc("compose-style removed", compose, r.changeWait(), absent)

	// Skipped containers are counted by reason, and nothing is written for
	// them.
	lo := r.runContainer(runOpts{name: "loonly", ports: network.PortMap{network.MustParsePort("80/tcp"): {{HostIP: loopback}}}})
	off := r.runContainer(runOpts{name: "off", labels: map[string]string{LabelEnable: "false"}})
	bad := r.runContainer(runOpts{name: "bad", labels: map[string]string{LabelService: "db.hosts"}})
	ok := r.runContainer(runOpts{name: "ok"})
	r.waitDoc("after skipped ones", ok, r.changeWait(), present)
	testenv.EventuallyTrue(t, r.changeWait(), "skip metrics", func() bool {
		m := e.Metrics().ContainersSkipped
		return testenv.MetricValue(m.WithLabelValues(ReasonNoPort)) == 1 && testenv.MetricValue(m.WithLabelValues(ReasonDisabled)) == 1 &&
			testenv.MetricValue(m.WithLabelValues(ReasonReserved)) == 1
	})
	for _, id := range []string{lo, off, bad} {
		if d := r.doc(id); d != nil {
			t.Errorf("skipped container %s published: %+v", id[:12], d)
		}
	}
	// web's and loonly's bindings on 127.0.0.1, each counted once however
	// often they were mapped.
	if n := testenv.MetricValue(e.Metrics().BindingsSkipped.WithLabelValues(record.ClassLoopback)); n != 3 {
		t.Errorf("loopback bindings counted %v times, want 3 (web's two, loonly's one)", n)
	}
	if n := testenv.MetricValue(e.Metrics().EventLatency); n == 0 {
		t.Error("no event-to-KV latency observed")
	}

	// /healthz says both are reachable, /metrics has the exporter's series.
	reg := prometheus.NewRegistry()
	reg.MustRegister(e.Metrics(), BuildInfo(), e.EngineInfo())
	srv := httptest.NewServer(e.Handler(reg))
	defer srv.Close()
	body := get(t, srv.URL+"/healthz", 200)
	if body != "ok\n" {
		t.Errorf("/healthz: %q", body)
	}
	metrics := get(t, srv.URL+"/metrics", 200)
	for _, m := range []string{"berth_exporter_containers_published 1", `berth_exporter_containers_skipped{reason="reserved_name"} 1`,
		`berth_exporter_bindings_skipped_total{reason="loopback_address"} 3`, `berth_exporter_build_info{goversion="`,
		"berth_exporter_kv_writes_total", "berth_exporter_event_to_kv_seconds_count", "berth_exporter_reconciles_total",
		fmt.Sprintf(`berth_exporter_engine_info{engine=%q,version=%q} 1`, engine, e.Engine().Version)} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %q", m)
		}
	}
}

func get(t *testing.T, url string, code int) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != code {
		t.Errorf("GET %s: %s %s", url, resp.Status, b)
	}
	return string(b)
}

// TestExporterNetworkEvents proves network events reach the exporter and
// change what it publishes: a container disconnected from its only network
// loses its published ports (Docker drops the bindings), so its document
// goes; connected again it gets new host ports, and the document comes back
// with them. The resync is an hour away, so only the events can do it.
func TestExporterNetworkEvents(t *testing.T) {
	t.Parallel()
	forEachEngine(t, testExporterNetworkEvents)
}

func testExporterNetworkEvents(t *testing.T, engine string) {
	r := newEngineRig(t, engine, testenv.ConsulOptions{})
	ctx := context.Background()
	id := r.runContainer(runOpts{name: "net"})
	cfg := r.config()
	cfg.Resync = time.Hour
	e := r.startExporter(cfg)
	r.waitDoc("initial listing", id, testenv.ExporterStartWait, present)

	// The engine's default network: bridge on Docker, podman on Podman.
	network := r.network(id)
	if _, err := r.docker.NetworkDisconnect(ctx, network, client.NetworkDisconnectOptions{Container: id}); err != nil {
		t.Fatal(err)
	}
	r.waitDoc("disconnected from its only network", id, r.changeWait(), absent)
	if _, err := r.docker.NetworkConnect(ctx, network, client.NetworkConnectOptions{Container: id}); err != nil {
		t.Fatal(err)
	}
	r.waitDoc("connected again, with the host port Docker bound now", id, r.changeWait(), func(d *record.Container) bool {
		return d != nil && d.Ports[0].HostPort == r.hostPort(id, "80/tcp")
	})
	for _, action := range []string{"disconnect", "connect"} {
		if testenv.MetricValue(e.Metrics().Events.WithLabelValues(action)) == 0 {
			t.Errorf("no %s event counted", action)
		}
	}
}
