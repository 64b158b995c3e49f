package exporter

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/berthdns/berth/internal/testenv"
)

// TestHealthzCache proves /healthz reuses its ping result: with Consul
// frozen (SIGSTOP) the cached "ok" is still served, since no request pinged
// again; once the result is stale, the next request pings, and says that
// Consul did not answer while Docker did.
func TestHealthzCache(t *testing.T) {
	t.Parallel()
	r := newRig(t, testenv.ConsulOptions{})
	e, err := New(context.Background(), r.config(), r.docker, r.consulConfig(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	e.health.mu.Lock()
	e.health.ttl = time.Hour // the test decides when the result is stale
	e.health.mu.Unlock()
	srv := httptest.NewServer(e.Handler(prometheus.NewRegistry()))
	defer srv.Close()

	if body := get(t, srv.URL+"/healthz", 200); body != "ok\n" {
		t.Fatalf("/healthz with both up: %q", body)
	}
	r.consul.Pause()
	t.Cleanup(r.consul.Resume) // before the agent's own cleanup stops it
	// The agent is frozen once a request to it hangs: on a loaded machine
	// the stop can lag the signal.
	probe := &http.Client{Timeout: testenv.ProbeTimeout}
	// A request the agent was answering when it stopped ends within one
	// Consul round; after that every request hangs.
	testenv.EventuallyTrue(t, testenv.ConsulRoundWait, "consul frozen", func() bool {
		resp, err := probe.Get("http://" + r.consul.HTTP + "/v1/status/leader")
		if err == nil {
			resp.Body.Close()
		}
		return err != nil
	})
	for range 3 {
		if body := get(t, srv.URL+"/healthz", 200); body != "ok\n" {
			t.Fatalf("/healthz within the cache's lifetime pinged again: %q", body)
		}
	}

	e.health.mu.Lock()
	e.health.ttl = 0
	e.health.mu.Unlock()
	body := get(t, srv.URL+"/healthz", 503)
	if !strings.HasPrefix(body, "consul: ") || strings.Contains(body, "docker") {
		t.Errorf("/healthz with Consul frozen: %q, want only a consul line", body)
	}
}
