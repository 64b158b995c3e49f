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

// attemptMargin is what one failed resubscription costs besides its
// backoff: a refused /version and a refused /events, each a connection the
// proxy closes (well under a millisecond here; the margin covers a loaded
// machine).
const attemptMargin = 500 * time.Millisecond

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
// answers again. The stream must come back because the engine answered
// (berth_exporter_event_stream_reconnects_total{cause="engine_answered"}),
// not because its backoff ran out: the engine is back at the start of a
// wait of at least half the cap (eventsBackoff.Delay), and the exporter
// learns of it within reachProbe. What changed meanwhile is then published
// within the exporter's reconnect bound, and a container started after
// that, which only the event stream can publish (the listing that
// published the first has passed and the resync is an hour away), within
// the bound of a change reported by an event. The test asserts the cause,
// not a time: how soon it came back is logged (about reachProbe plus a
// listing), and make bench measures the exporter's speed.
func TestEngineRecovery(t *testing.T) {
	t.Parallel()
	forEachEngine(t, testEngineRecovery)
}

func testEngineRecovery(t *testing.T, engine string) {
	r := newEngineRig(t, engine, testenv.ConsulOptions{})
	before := r.runContainer(runOpts{name: "before"})
	proxy, e := r.startProxiedExporter()
	reconnects := func(cause string) float64 {
		return testenv.MetricValue(e.Metrics().StreamReconnects.WithLabelValues(cause))
	}
	r.waitDoc("before the outage", before, testenv.ExporterStartWait, present)

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
	byBackoff := reconnects(reconnectBackoff)
	proxy.setDown(false)
	back := time.Now()
	r.waitDoc("started during the outage, once the engine answers again", during, testenv.ExporterReconnectWait, present)
	testenv.EventuallyTrue(t, testenv.ExporterReconnectWait, "the event stream resubscribed", func() bool {
		return reconnects(reconnectEngineAnswered)+reconnects(reconnectBackoff) > byBackoff
	})
	if got := reconnects(reconnectBackoff); got != byBackoff {
		t.Fatalf("the event stream came back when its backoff ran out (%v more), not when the engine answered (engine_answered %v)",
			got-byBackoff, reconnects(reconnectEngineAnswered))
	}
	t.Logf("stream back and the outage's change published %s after the engine came back", time.Since(back).Round(10*time.Millisecond))
	started := time.Now()
	after := r.runContainer(runOpts{name: "after"})
	r.waitDoc("started after the engine came back", after, r.changeWait(), present)
	t.Logf("a start after the engine came back published in %s", time.Since(started).Round(10*time.Millisecond))
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
