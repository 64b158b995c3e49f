package faults

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
)

// Scenario 3. Injects: a partition of one Docker host: its exporter, a
// container on the cluster's network, is cut off with docker network
// disconnect, and reconnected after its records expired. Must hold: the
// records expire after the session TTL (measured: Consul guarantees between
// 1x and 2x the TTL), and come back without duplicates when the partition
// heals (one document per container, one SRV per port, one session).
func TestFault3Partition(t *testing.T) {
	w, cl := clusterWorld(t)
	// The exporter's --session-ttl: a setting, not a wait.
	const ttl = 10 * time.Second
	svc := w.service("part")
	labels := map[string]string{"berth.service": svc}
	var cs []*ctr
	for i := range 3 {
		cs = append(cs, w.runContainer(fmt.Sprintf("part%d", i), labels))
	}

	image := testenv.EnsureExporterImage(t, w.docker)
	ip := w.net.Addr(50)
	// Two requests to the engine: create and start.
	ctx, cancel := context.WithTimeout(context.Background(), 2*testenv.EngineRequestTimeout)
	defer cancel()
	res, err := w.docker.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: "berth-faults-" + w.run + "-exporter",
		Config: &container.Config{Image: image, Labels: w.labels(nil),
			Cmd: []string{"--session-ttl", ttl.String(), "--resync", "30s", "--listen", ""},
			Env: w.exporterEnv(w.host, cl.Agent.IP.String()+":8500", "")},
		HostConfig: &container.HostConfig{Mounts: []mount.Mount{{Type: mount.TypeBind,
			Source: dockerSocket(), Target: "/var/run/docker.sock", ReadOnly: true}}},
		NetworkingConfig: &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
			w.net.Name: {IPAMConfig: &network.EndpointIPAMConfig{IPv4Address: ip}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	testenv.RemoveContainerOnCleanup(t, w.docker, res.ID)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("exporter container log:\n%s", testenv.ContainerLogs(w.docker, res.ID, 60))
		}
	})
	if _, err := w.docker.ContainerStart(ctx, res.ID, client.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, ok := waitFor(w.servedWait(), func() bool { ok, _ := w.dnsMatches(svc, "part"); return ok }); !ok {
		_, why := w.dnsMatches(svc, "part")
		t.Fatalf("not published within %v: %s", w.servedWait(), why)
	}

	w.net.Disconnect(t, w.docker, res.ID)
	cut := time.Now()
	t.Log("exporter partitioned from Consul")
	gone := func() bool {
		for _, c := range cs {
			r, err := testenv.Exchange("udp", w.dns.Addr, w.ctrName(c), dns.TypeSRV, 0)
			if err != nil || r.Rcode != dns.RcodeNameError {
				return false
			}
		}
		r, err := testenv.Exchange("udp", w.dns.Addr, svc+"."+zone, dns.TypeSRV, 0)
		return err == nil && r.Rcode == dns.RcodeNameError
	}
	expire, ok := waitFor(testenv.SessionExpiryWait(ttl)+testenv.ZoneChangeWait, gone)
	if !ok {
		t.Fatalf("records of the partitioned host still in DNS %s after the cut", expire.Round(time.Millisecond))
	}
	t.Logf("records gone from DNS %s after the cut (TTL %s)", expire.Round(time.Millisecond), ttl)
	if expire < ttl-time.Second { // not a wait: the claim checked, a TTL less one second of Consul's rounding
		t.Errorf("records vanished %s after the cut, before the session TTL %s could pass", expire, ttl)
	}
	if expire > 2*ttl+5*time.Second { // not a wait: the claim checked, two TTLs and a few seconds
		t.Errorf("records outlived the session by far: %s for TTL %s", expire, ttl)
	}

	w.net.Connect(t, w.docker, res.ID, ip)
	healed := time.Now()
	// Healed, the exporter's Consul round fails no more: its retry, then
	// it publishes everything again under a new session.
	back, ok := waitFor(w.dnsRecoverWait(), func() bool { ok, _ := w.dnsMatches(svc, "part"); return ok })
	if !ok {
		_, why := w.dnsMatches(svc, "part")
		t.Fatalf("records not back within %v of the heal: %s", w.dnsRecoverWait(), why)
	}
	_ = healed
	// No duplicates: exactly one document per container, one SRV each,
	// one session of this host holding them.
	if ok, why := w.kvMatches("part"); !ok {
		t.Errorf("KV after the heal: %s", why)
	}
	var sessions int
	if _, ok := waitFor(2*ttl, func() bool {
		list, err := sessionsOf(w.consul, w.host)
		sessions = len(list)
		return err == nil && len(list) == 1 && list[0].ID == holder(w.consul, record.HostKey(prefix, w.host))
	}); !ok {
		t.Errorf("%d sessions of the host after the heal, want 1 holding its keys", sessions)
	}
	for _, c := range cs {
		r, err := testenv.Exchange("tcp", w.dns.Addr, w.ctrName(c), dns.TypeSRV, 0)
		if err != nil || len(r.Answer) != 1 {
			t.Errorf("%s after the heal: want one SRV, got %v %v", c.Name, r, err)
		}
	}
	fault(t, 3, "session_ttl_s", ttl.Seconds(), "expire_ms", expire.Milliseconds(), "back_after_heal_ms", back.Milliseconds(),
		"sessions_after", sessions, "partitioned_ms", time.Since(cut).Milliseconds()-time.Since(healed).Milliseconds())
}
