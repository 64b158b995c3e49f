package exporter

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/network"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
)

// TestLoopbackNeedsOptIn runs the real binary against a local Consul agent
// (127.0.0.1, where the route to Consul leaves from loopback) and the real
// engine without the loopback opt-in: it either refuses to start, naming
// --advertise-addr, or publishes a routable address of this machine; never
// a loopback one, in the host document or in a port, and a container bound
// on 127.0.0.1 alone gets no document. A loopback advertise address without
// the opt-in is refused outright, and with it the start logs a warning.
func TestLoopbackNeedsOptIn(t *testing.T) {
	t.Parallel()
	r := newRig(t, testenv.ConsulOptions{})
	if !strings.HasPrefix(r.consul.HTTP, "127.0.0.1:") {
		t.Fatalf("the test Consul is at %s, not on loopback", r.consul.HTTP)
	}
	wild := r.runContainer(runOpts{name: "wild"})
	lo := r.runContainer(runOpts{name: "lo", ports: network.PortMap{network.MustParsePort("80/tcp"): {{HostIP: loopback}}}})

	cfg := r.config()
	cfg.AllowLoopback = false
	if _, err := New(context.Background(), cfg, r.docker, r.consulConfig(), testLogger(t)); err == nil ||
		!strings.Contains(err.Error(), "--allow-loopback") {
		t.Errorf("New with a loopback advertise address and no opt-in: %v, want an error naming --allow-loopback", err)
	}

	// The detected address, as an operator with a local agent gets it.
	cmd := exec.Command(testenv.ExporterBinary(t), "--once")
	cmd.Env = append(r.env(), "BERTH_ADVERTISE_ADDR=", "BERTH_ALLOW_LOOPBACK=false")
	out, err := cmd.CombinedOutput()
	if err != nil {
		if cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), "--advertise-addr") {
			t.Fatalf("--once without an advertise address: %v, want success or exit 1 naming --advertise-addr:\n%s", err, out)
		}
		t.Logf("no routable address on this machine; refused as it should:\n%s", out)
	} else {
		pair, _, err := r.kv.KV().Get(record.HostKey(r.prefix, r.host), nil)
		if err != nil || pair == nil {
			t.Fatalf("host document after --once: %v %v\n%s", pair, err, out)
		}
		var host record.Host
		if err := json.Unmarshal(pair.Value, &host); err != nil {
			t.Fatal(err)
		}
		if len(host.Addrs) == 0 {
			t.Errorf("host document without addresses: %s", pair.Value)
		}
		for _, a := range host.Addrs {
			if err := record.Publishable(a, false); err != nil {
				t.Errorf("host document address: %v", err)
			}
		}
		d := r.doc(wild)
		if d == nil {
			t.Fatalf("the container bound on 0.0.0.0 was not published:\n%s", out)
		}
		for _, p := range d.Ports {
			if err := record.Publishable(p.Addr, false); err != nil {
				t.Errorf("port %+v: %v", p, err)
			}
		}
		t.Logf("detected %v; published %v", host.Addrs, d.Ports)
	}
	if d := r.doc(lo); d != nil {
		t.Errorf("the container bound on 127.0.0.1 alone was published: %+v", d)
	}

	// The opt-in is announced.
	cmd = exec.Command(testenv.ExporterBinary(t), "--dry-run")
	cmd.Env = r.env()
	out, err = cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "level=WARN") || !strings.Contains(string(out), "--allow-loopback") {
		t.Errorf("--dry-run with --allow-loopback: %v, want a warning naming it:\n%s", err, out)
	}
	if !strings.Contains(string(out), shortID(lo)+"  (skipped: "+ReasonNoPort+")") {
		t.Errorf("--dry-run does not skip the loopback-bound container %s as %s:\n%s", shortID(lo), ReasonNoPort, out)
	}
}
