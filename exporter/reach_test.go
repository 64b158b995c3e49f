package exporter

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/berthdns/berth/internal/testenv"
)

// The waits of TestEngineRecovery, each from a bound of the product.
const (
	// attemptMargin is what one failed resubscription costs besides its
	// backoff: a refused /version and a refused /events, each a
	// connection the proxy closes (well under a millisecond here; the
	// margin covers a loaded machine).
	attemptMargin = 500 * time.Millisecond
	// listingMargin is one subscription, one full listing, the inspects of
	// the rig's few containers and one KV transaction (tens of
	// milliseconds on Docker here, a few hundred on Podman).
	listingMargin = 1500 * time.Millisecond
	// eventMargin is one event, one inspect and one KV transaction.
	eventMargin = 2 * time.Second
	// recoveredWait: once the engine answers again, the exporter learns
	// it within reachProbe (one ping per reachProbe while it is down), and
	// resubscribes and lists at once.
	recoveredWait = reachProbe + listingMargin
)

// capFailures is the number of failed resubscriptions after which the
// event stream's backoff waits its cap.
func capFailures() int {
	n := 1
	for eventsBackoff.Ceiling(n) < eventsBackoff.Max {
		n++
	}
	return n
}

// capReachedWait bounds how long the event stream takes to fail
// capFailures times, the break itself and capFailures-1 refused
// resubscriptions: the backoff's waits before the last (each at most its
// Ceiling) and attemptMargin per attempt.
func capReachedWait() time.Duration {
	var d time.Duration
	for n := 1; n < capFailures(); n++ {
		d += eventsBackoff.Ceiling(n) + attemptMargin
	}
	return d + attemptMargin
}

// TestEngineRecovery is issue 20's first failure: an engine outage long
// enough for the event stream's backoff to reach its cap, then the engine
// answers again. The exporter must publish what changed meanwhile within
// recoveredWait, and a container started right after that within
// recoveredWait + eventMargin of the engine's return, not when the
// stream's backoff runs out: the engine is back at the start of a wait of
// at least half the cap (eventsBackoff.Delay), which the two bounds
// together stay under, and once the worker's listing has published the
// first container only the event stream can publish the second, so a
// stream that slept out its backoff fails this test.
func TestEngineRecovery(t *testing.T) {
	t.Parallel()
	if recoveredWait+eventMargin >= eventsBackoff.Max/2 {
		t.Fatalf("recoveredWait %s + eventMargin %s must stay under half the backoff's cap %s to tell a reset from a wait",
			recoveredWait, eventMargin, eventsBackoff.Max)
	}
	forEachEngine(t, testEngineRecovery)
}

func testEngineRecovery(t *testing.T, engine string) {
	r := newEngineRig(t, engine, testenv.ConsulOptions{})
	ctx := context.Background()
	before := r.runContainer(runOpts{name: "before"})
	proxy, _ := r.startProxiedExporter()
	r.waitDoc("before the outage", before, eventWait, present)

	proxy.setDown(true)
	during := r.runContainer(runOpts{name: "during"})
	// The break was the stream's first failure; wait for its
	// (capFailures-1)-th refused subscription: its backoff now waits at
	// least half the cap.
	deadline := time.After(capReachedWait())
	for n := 0; n < capFailures()-1; {
		select {
		case line := <-proxy.refused:
			if strings.Contains(line, "/events") {
				n++
			}
		case <-deadline:
			t.Fatalf("%d of %d event subscriptions refused within %s", n, capFailures()-1, capReachedWait())
		}
	}
	if r.doc(during) != nil {
		t.Fatal("a container started during the outage was seen: the proxy leaks")
	}
	// Created now, started once the engine is back: creating a container
	// takes seconds on a loaded machine, which would blur the bound.
	after := r.runContainer(runOpts{name: "after", noStart: true})
	proxy.setDown(false)
	back := time.Now()
	r.waitDoc("started during the outage, once the engine answers again", during, recoveredWait, present)
	// Started only now: the listing that published "during" has passed,
	// so only the event stream can publish it.
	if _, err := r.docker.ContainerStart(ctx, after, client.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	r.waitDoc("started right after the engine came back", after, time.Until(back.Add(recoveredWait+eventMargin)), present)
	t.Logf("published %s after the engine came back", time.Since(back).Round(10*time.Millisecond))
}

// TestEngineReach: what engineReach takes for the engine's silence and for
// its answer, with the errors a real client gives: a refused connection is
// silence (berth_exporter_engine_reachable 0, recovery pending); a 404 is
// an answer, and the recovery; the exporter's own cancellation is neither.
func TestEngineReach(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m := NewMetrics()
	r := newEngineReach(m.EngineReachable)
	nobody, err := client.New(client.WithHost("unix://" + filepath.Join(t.TempDir(), "nobody.sock")))
	if err != nil {
		t.Fatal(err)
	}
	defer nobody.Close()
	_, err = nobody.Ping(ctx, client.PingOptions{})
	err = r.observe(err)
	back := recovery(err)
	if back == nil {
		t.Fatalf("a refused connection (%v) not taken for the engine's silence", err)
	}
	if v := testenv.MetricValue(m.EngineReachable); v != 0 {
		t.Errorf("engine_reachable %v after a refused connection, want 0", v)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	docker := testenv.Docker(t)
	_, err = docker.Ping(canceled, client.PingOptions{})
	if r.observe(err); !r.isDown() {
		t.Errorf("the exporter's own cancellation (%v) taken for an answer", err)
	}
	_, err = docker.ContainerInspect(ctx, "berth-no-such-container", client.ContainerInspectOptions{})
	if err = r.observe(err); err == nil || recovery(err) != nil {
		t.Errorf("a 404 (%v) taken for silence", err)
	}
	select {
	case <-back:
	default:
		t.Error("the 404 did not close the recovery channel")
	}
	if v := testenv.MetricValue(m.EngineReachable); v != 1 {
		t.Errorf("engine_reachable %v after an answer, want 1", v)
	}
}
