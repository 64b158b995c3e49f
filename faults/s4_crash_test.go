package faults

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
)

// Scenario 4. Injects: SIGKILL of the exporter, restarted at once and again
// after 5 s down. Must hold: no NXDOMAIN (nor any other wrong answer) for a
// running container's names at any moment, polled every 10 ms through both
// restarts and two session TTLs beyond; afterwards exactly one session of
// the host in Consul, the one holding its keys (no orphans).
func TestFault4ExporterCrashRestart(t *testing.T) {
	w := newWorld(t)
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	w.useConsul(consul.HTTP)
	w.startCoreDNS("")
	svc := w.service("crash")
	var cs []*ctr
	for i := range 4 {
		cs = append(cs, w.runContainer(fmt.Sprintf("crash%d", i), map[string]string{"berth.service": svc}))
	}
	// The exporter's --session-ttl: a setting, not a wait.
	const ttl = 10 * time.Second
	exp := w.startExporter("", "--session-ttl", ttl.String())
	if took, ok := waitFor(w.servedWait(), func() bool { ok, _ := w.dnsMatches(svc, "crash"); return ok }); !ok {
		_, why := w.dnsMatches(svc, "crash")
		t.Fatalf("not published within %v: %s", w.servedWait(), why)
	} else {
		t.Logf("published in %s", took.Round(time.Millisecond))
	}
	firstSession := holder(w.consul, record.HostKey(prefix, w.host))

	// One poller per name, every 10 ms.
	var ports []int
	checks := []check{{hostName(w.host), dns.TypeA, wantA(w.net.Gateway.String())}}
	for _, c := range cs {
		ports = append(ports, c.HostPort)
		checks = append(checks, check{w.ctrName(c), dns.TypeSRV, wantSRV(c.HostPort)})
	}
	checks = append(checks, check{svc + "." + zone, dns.TypeSRV, wantSRV(ports...)})
	ctx, cancel := context.WithCancel(context.Background())
	var polls, misses, nx atomic.Int64
	var mu sync.Mutex
	var samples []string
	var wg sync.WaitGroup
	for _, ch := range checks {
		wg.Go(func() {
			tick := time.NewTicker(probeEvery)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				r, err := testenv.Exchange("udp", w.dns.Addr, ch.name, ch.qtype, 0)
				polls.Add(1)
				if err == nil {
					err = ch.verify(r)
					if r.Rcode == dns.RcodeNameError {
						nx.Add(1)
					}
				}
				if err != nil {
					misses.Add(1)
					mu.Lock()
					if len(samples) < 10 {
						samples = append(samples, time.Now().Format("15:04:05.000 ")+ch.name+": "+err.Error())
					}
					mu.Unlock()
				}
			}
		})
	}

	for _, down := range []time.Duration{0, 5 * time.Second} { // not a wait: the injected downtimes
		exp.Kill()
		t.Logf("exporter SIGKILLed; restarting after %s", down)
		time.Sleep(down) // the injected downtime, not an assertion
		exp.Start()
		restarted := time.Now()
		// Keep polling past the point where the old session, had it not
		// been adopted, would certainly have expired (2x TTL).
		for time.Since(restarted) < testenv.SessionExpiryWait(ttl) {
			if !exp.Running() {
				t.Fatal("the restarted exporter exited")
			}
			time.Sleep(testenv.PollInterval)
		}
	}
	cancel()
	wg.Wait()

	// No orphaned session: exactly one of this host's, holding its keys.
	var sessions int
	_, ok := waitFor(testenv.SessionExpiryWait(ttl), func() bool {
		list, err := sessionsOf(w.consul, w.host)
		sessions = len(list)
		return err == nil && len(list) == 1 && list[0].ID == holder(w.consul, record.HostKey(prefix, w.host))
	})
	if !ok {
		list, _ := sessionsOf(w.consul, w.host)
		for _, s := range list {
			t.Logf("session %s name=%s ttl=%s", s.ID, s.Name, s.TTL)
		}
		t.Errorf("after the restarts: %d sessions of host %s (want exactly 1, holding the host key)", sessions, w.host)
	}
	pairs, _, err := w.consul.KV().List(record.ContainersPrefix(prefix, w.host), nil)
	if err != nil {
		t.Fatal(err)
	}
	h := holder(w.consul, record.HostKey(prefix, w.host))
	for _, p := range pairs {
		if p.Session != h {
			t.Errorf("%s held by session %q, not the host's %q", p.Key, p.Session, h)
		}
	}
	if misses.Load() > 0 {
		t.Errorf("%d of %d polls missed (%d NXDOMAIN); first: %v", misses.Load(), polls.Load(), nx.Load(), samples)
	}
	fault(t, 4, "polls", polls.Load(), "misses", misses.Load(), "nxdomain", nx.Load(), "sessions_after", sessions,
		"session_adopted", h == firstSession)
}
