package faults

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/berthdns/berth/internal/testenv"
)

// Scenarios 8 and 9 measure under load; these spans are not waits for a
// condition. warmUp is the load's run before the baselines (RSS, p99) are
// read: long enough for the zone's first answers and the Go runtime's
// heap to reach their working size, a few GC cycles at the load's rate.
// loadReport is how often scenario 8 logs its progress.
const (
	warmUp     = 5 * time.Second
	loadReport = 30 * time.Second
)

// Scenario 8. Injects: DNS queries at the highest rate the machine sustains
// (the suite's own closed-loop generator on miekg/dns, 4 workers per CPU,
// not dnsperf) for BERTH_FAULT_LOAD_DURATION (default 5m) while one
// container starts or stops every second. Must hold: no query lost (a
// timeout is a loss) and no wrong answer; CoreDNS's memory flat (RSS at the
// end within 1.5x + 16 MiB of the RSS after warm-up).
func TestFault8Load(t *testing.T) {
	dur := envDuration(t, "BERTH_FAULT_LOAD_DURATION", 5*time.Minute) // not a wait: the load's length
	w := newWorld(t)
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	w.useConsul(consul.HTTP)
	w.startCoreDNS("")
	steadySvc, churnSvc := w.service("lsteady"), w.service("lchurn")
	var steady []*ctr
	for i := range 4 {
		steady = append(steady, w.runContainer(fmt.Sprintf("lsteady%d", i), map[string]string{"berth.service": steadySvc}))
	}
	churnLabels := map[string]string{"berth.service": churnSvc}
	keep := w.runContainer("lchurn0", churnLabels)
	exp := w.startExporter("", "--session-ttl", "10s")
	if _, ok := waitFor(w.servedWait(), func() bool { ok, _ := w.dnsMatches(steadySvc, "lsteady"); return ok }); !ok {
		t.Fatalf("not published within %v", w.servedWait())
	}
	ch := newChurner(w, "lchurn", churnLabels, keep)
	var ports []int
	checks := []check{{hostName(w.host), dns.TypeA, wantA(w.net.Gateway.String())}}
	for _, c := range steady {
		ports = append(ports, c.HostPort)
		checks = append(checks, check{w.ctrName(c), dns.TypeSRV, wantSRV(c.HostPort)})
	}
	checks = append(checks,
		check{steadySvc + "." + zone, dns.TypeSRV, wantSRV(ports...)},
		check{churnSvc + "." + zone, dns.TypeSRV, wantSRVWithin([]int{keep.HostPort}, ch.known)},
		check{"nope-" + w.run + "." + zone, dns.TypeAAAA, wantNX},
	)
	p := newProber(w.dns.Addr, checks)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopLoad := p.run(ctx, 4*runtime.NumCPU(), 0)
	churnStart := time.Now()
	churnDone := ch.run(ctx, time.Second) // not a wait: the churn's pace

	time.Sleep(warmUp)
	rssStart, err := testenv.RSS(w.dns.PID())
	if err != nil {
		t.Fatal(err)
	}
	expStart, _ := testenv.RSS(exp.PID())
	q0, t0 := p.queries.Load(), time.Now()
	t.Logf("load for %s with %d workers; CoreDNS RSS %s after warm-up", dur, 4*runtime.NumCPU(), mb(rssStart))
	for time.Since(t0) < dur {
		time.Sleep(min(loadReport, dur-time.Since(t0)))
		rss, _ := testenv.RSS(w.dns.PID())
		n := p.queries.Load() - q0
		t.Logf("%s: %d queries (%.0f/s), %d failed, CoreDNS RSS %s", time.Since(t0).Round(time.Second), n,
			float64(n)/time.Since(t0).Seconds(), p.failures.Load(), mb(rss))
		if w.dns.Exited() {
			t.Fatalf("CoreDNS exited under load:\n%s", w.dns.Output())
		}
	}
	rssEnd, _ := testenv.RSS(w.dns.PID())
	expEnd, _ := testenv.RSS(exp.PID())
	elapsed := time.Since(t0)
	total := p.queries.Load() - q0
	cancel()
	stopLoad()
	churnDone()
	churnTime := time.Since(churnStart)
	ch.mu.Lock()
	changes, errs := ch.changes, ch.errs
	ch.mu.Unlock()
	if len(errs) > 0 {
		t.Errorf("churn errors: %v", errs)
	}
	if u := ch.unknownPorts(); len(u) > 0 {
		t.Errorf("DNS answered SRV ports %v that belong to no container of this test", u)
	}
	if f := p.failures.Load(); f > 0 {
		t.Errorf("%d failed answers (%d timeouts, i.e. lost) of %d; first: %v", f, p.timeouts.Load(), p.queries.Load(), p.Samples())
	}
	if float64(rssEnd) > 1.5*float64(rssStart)+16<<20 {
		t.Errorf("CoreDNS RSS grew from %s to %s", mb(rssStart), mb(rssEnd))
	}
	fault(t, 8, "duration_s", int(elapsed.Seconds()), "queries", total, "qps", int(float64(total)/elapsed.Seconds()),
		"lost", p.timeouts.Load(), "wrong", p.failures.Load()-p.timeouts.Load(), "container_changes", changes,
		"changes_per_s", fmt.Sprintf("%.2f", float64(changes)/churnTime.Seconds()),
		"coredns_rss_start", mb(rssStart), "coredns_rss_end", mb(rssEnd),
		"exporter_rss_start", mb(expStart), "exporter_rss_end", mb(expEnd))
}
