package faults

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/berthdns/berth/internal/testenv"
)

// envDuration reads a duration from the environment, else def.
func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return d
}

// outageSettle is how long scenario 2 lets the exporter meet the outage
// before it reads its metrics, and how long before Consul's return it
// reads them again: not a wait for a condition but a span at each end of
// the outage, a few of the exporter's retries (250 ms doubling).
const outageSettle = 2 * time.Second

// Scenario 2. Injects: every Consul server SIGKILLed and kept down for 60 s
// (BERTH_FAULT_OUTAGE), while containers start and stop. Must hold: DNS
// answers every query meanwhile from the last good data (counted); the
// exporter's goroutines and memory stay flat (it queues nothing without
// bound); after the servers return, KV and DNS converge to the Docker truth,
// including the changes made during the outage.
func TestFault2TotalOutage(t *testing.T) {
	outage := envDuration(t, "BERTH_FAULT_OUTAGE", 60*time.Second) // not a wait: the fault's length
	w, cl := clusterWorld(t)
	svc := w.service("out")
	labels := map[string]string{"berth.service": svc}
	var keep []*ctr
	for i := range 3 {
		keep = append(keep, w.runContainer(fmt.Sprintf("out%d", i), labels))
	}
	gone := w.runContainer("outgone", labels)
	listen := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	exp := w.startExporter(listen, "--session-ttl", "10s", "--resync", "30s")
	if _, ok := waitFor(w.servedWait(), func() bool { ok, _ := w.dnsMatches(svc, "out"); return ok }); !ok {
		_, why := w.dnsMatches(svc, "out")
		t.Fatalf("not published within %v: %s", w.servedWait(), why)
	}

	// DNS must keep the last good data: all four, gone included.
	var ports []int
	checks := []check{{hostName(w.host), dns.TypeA, wantA(w.net.Gateway.String())}}
	for _, c := range append(keep, gone) {
		ports = append(ports, c.HostPort)
		checks = append(checks, check{w.ctrName(c), dns.TypeSRV, wantSRV(c.HostPort)})
	}
	checks = append(checks, check{svc + "." + zone, dns.TypeSRV, wantSRV(ports...)})
	p := newProber(w.dns.Addr, checks)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopLoad := p.run(ctx, 2, time.Millisecond) // not a wait: the prober's pause

	for _, n := range cl.Servers {
		cl.Kill(n)
	}
	down := time.Now()
	t.Logf("all %d servers killed; down for %s", len(cl.Servers), outage)
	time.Sleep(outageSettle)
	m0, err := scrape("http://" + listen + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	// Changes during the outage: one stopped, one started, and a container
	// flapping (started and stopped) five times.
	if err := w.stop(gone); err != nil {
		t.Fatal(err)
	}
	newc := w.runContainer("outnew", labels)
	for i := range 5 {
		c := w.runContainer(fmt.Sprintf("outflap%d", i), labels)
		if err := w.stop(c); err != nil {
			t.Fatal(err)
		}
	}
	// The plugin notices a Consul that hangs rather than refuses within
	// one blocking query's wait plus the HTTP timeout's margin (about 19 s).
	promStale := -1.0
	for time.Now().Before(down.Add(outage-outageSettle)) && promStale != 1 {
		if m, err := scrape("http://" + w.promAddr + "/metrics"); err == nil {
			promStale = m["coredns_berth_stale"]
		}
		time.Sleep(testenv.PollInterval)
	}
	time.Sleep(time.Until(down.Add(outage - outageSettle)))
	m1, err := scrape("http://" + listen + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if !exp.Running() {
		t.Fatal("the exporter exited during the outage")
	}
	queriesDuring, failuresDuring := p.queries.Load(), p.failures.Load()
	time.Sleep(time.Until(down.Add(outage)))

	for _, n := range cl.Servers {
		cl.Start(n)
	}
	back := time.Now()
	if _, err := cl.WaitLeader(testenv.ClusterElectionWait); err != nil {
		t.Fatal(err)
	}
	leaderBack := time.Since(back)
	// The old answers stay until the change arrives: stop judging them
	// against the pre-outage data once Consul is back.
	cancel()
	stopLoad()
	kvConv, ok := waitFor(w.kvRecoverWait(), func() bool { ok, _ := w.kvMatches("out"); return ok })
	if !ok {
		_, why := w.kvMatches("out")
		t.Errorf("KV did not converge within %v of Consul's return: %s", w.kvRecoverWait(), why)
	}
	kvConv += leaderBack
	dnsConv, ok := waitFor(w.dnsRecoverWait(), func() bool { ok, _ := w.dnsMatches(svc, "out"); return ok })
	if !ok {
		_, why := w.dnsMatches(svc, "out")
		t.Errorf("DNS did not converge within %v of Consul's return: %s", w.dnsRecoverWait(), why)
	}
	dnsConv += kvConv
	// "Within seconds" of Consul serving again: the exporter's and the
	// plugin's next attempts (they back off up to 5 s and 8 s while Consul
	// is away), then one write and one fetch.
	const bound = 20 * time.Second
	if d := dnsConv - leaderBack; d > bound {
		t.Errorf("DNS converged %s after Consul had a leader again, over %s", d.Round(time.Millisecond), bound)
	}
	if ok, why := w.dnsMatches(svc, "out"); !ok {
		t.Errorf("after convergence: %s", why)
	}
	if r, err := testenv.Exchange("udp", w.dns.Addr, w.ctrName(newc), dns.TypeSRV, 0); err != nil || wantSRV(newc.HostPort)(r) != nil {
		t.Errorf("the container started during the outage is not in DNS: %v %v", r, err)
	}

	g0, g1 := m0["go_goroutines"], m1["go_goroutines"]
	r0, r1 := m0["process_resident_memory_bytes"], m1["process_resident_memory_bytes"]
	if g1 > g0+20 {
		t.Errorf("exporter goroutines grew from %v to %v during the outage", g0, g1)
	}
	if r1 > r0+32<<20 {
		t.Errorf("exporter RSS grew from %s to %s during the outage", mb(int64(r0)), mb(int64(r1)))
	}
	if failuresDuring > 0 {
		t.Errorf("%d of %d queries failed during the outage; first: %v", failuresDuring, queriesDuring, p.Samples())
	}
	if promStale != 1 {
		t.Errorf("coredns_berth_stale = %v during the outage, want 1", promStale)
	}
	fault(t, 2, "outage_s", outage.Seconds(), "queries_during_outage", queriesDuring, "failed_during_outage", failuresDuring,
		"coredns_stale", promStale, "exporter_goroutines", fmt.Sprintf("%v->%v", g0, g1),
		"exporter_rss", fmt.Sprintf("%s->%s", mb(int64(r0)), mb(int64(r1))),
		"leader_back_ms", leaderBack.Milliseconds(), "kv_converge_ms", kvConv.Milliseconds(), "dns_converge_ms", dnsConv.Milliseconds())
}
