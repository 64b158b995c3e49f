package faults

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
)

// clusterWorld is a world on a three-server Consul cluster in containers on
// the test's network, used through a client agent container, with CoreDNS
// on the host reading it.
func clusterWorld(t *testing.T) (*world, *testenv.ConsulCluster) {
	t.Helper()
	w := newWorld(t)
	start := time.Now()
	cl := testenv.StartConsulCluster(t, w.docker, w.net, testenv.ClusterOptions{Labels: w.labels(nil)})
	t.Logf("consul cluster (3 servers, 1 client agent) on %s ready in %s", w.net, time.Since(start).Round(time.Millisecond))
	w.useConsul(cl.HTTP)
	w.startCoreDNS("")
	return w, cl
}

// churner starts and stops containers of one service in the background,
// one change per period: a new one, or a random running one (but keep)
// stopped. It remembers every host port any of them ever had.
type churner struct {
	w      *world
	base   string
	labels map[string]string
	keep   *ctr

	mu       sync.Mutex
	ports    map[int]bool
	starting int          // starts in flight: their ports are not known yet
	suspects map[int]bool // ports answered while a start was in flight
	changes  int
	errs     []error
}

func newChurner(w *world, base string, labels map[string]string, keep *ctr) *churner {
	return &churner{w: w, base: base, labels: labels, keep: keep, ports: map[int]bool{keep.HostPort: true},
		suspects: map[int]bool{}}
}

// known reports whether port is one of the churned containers'. Docker
// picks the port when the container starts, and the exporter may publish it
// before the test has read it back: a port seen while a start is in flight
// is accepted for now and checked by unknownPorts at the end.
func (c *churner) known(port int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ports[port] {
		return true
	}
	if c.starting > 0 {
		c.suspects[port] = true
		return true
	}
	return false
}

// unknownPorts are the ports answered during a start that turned out to
// belong to no container of the test.
func (c *churner) unknownPorts() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []int
	for p := range c.suspects {
		if !c.ports[p] {
			out = append(out, p)
		}
	}
	return out
}

// step makes one change.
func (c *churner) step(i int) {
	var err error
	if victim := c.plan(i); victim != nil {
		err = c.w.stop(victim)
	} else {
		var nc *ctr
		nc, err = c.w.createContainer(c.base+strconv.Itoa(1000+i), c.labels)
		if err == nil {
			err = c.w.start(nc)
		}
		c.mu.Lock()
		if nc != nil {
			c.ports[nc.HostPort] = true
		}
		c.starting--
		c.mu.Unlock()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.changes++
	if err != nil {
		c.errs = append(c.errs, err)
	}
}

// plan decides change i, counting changes still in flight: a container to
// stop, taken out of the running set at once so that no other change picks
// it too, or nil for a start, counted in starting. With nothing running to
// stop (a slow engine still starting the containers planned so far) it
// starts one more: the churn slows with the engine, it never draws from an
// empty set.
func (c *churner) plan(i int) *ctr {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	var victims []*ctr
	for _, x := range c.w.containers {
		if x.Running && x != c.keep && strings.HasPrefix(x.Name, c.base) {
			victims = append(victims, x)
		}
	}
	if n := len(victims) + c.starting; len(victims) == 0 || n < 2 || (n < 6 && i%2 == 0) {
		c.starting++
		return nil
	}
	victim := victims[rand.IntN(len(victims))]
	victim.Running = false
	return victim
}

// run makes one change per period until ctx ends, then waits for the
// changes in flight. Changes overlap (up to four at a time), so a slow
// Docker Engine under load does not slow the schedule.
func (c *churner) run(ctx context.Context, period time.Duration) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		var inFlight sync.WaitGroup
		defer inFlight.Wait()
		slots := make(chan struct{}, 4)
		tick := time.NewTicker(period)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case slots <- struct{}{}:
			}
			inFlight.Go(func() {
				defer func() { <-slots }()
				c.step(i)
			})
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return func() { <-done }
}

// Scenario 1's phases, not waits for a condition: how long the load and
// the churn run before the leader is killed, and after the election,
// each long enough for several churn rounds (every 500 ms) to be probed.
const (
	loadBeforeKill     = 3 * time.Second
	churnAfterElection = 5 * time.Second
)

// Scenario 1. Injects: SIGKILL of the Consul leader (one of three servers
// in containers) while a load generator queries DNS and containers start
// and stop. Must hold: zero failed or wrong DNS answers throughout; the
// exporter's writes resume after the election; every container change made
// during the election is in KV and DNS afterwards.
func TestFault1LeaderLoss(t *testing.T) {
	w, cl := clusterWorld(t)
	steadySvc, churnSvc := w.service("steady"), w.service("churn")
	var steady []*ctr
	for i := range 3 {
		steady = append(steady, w.runContainer(fmt.Sprintf("steady%d", i), map[string]string{"berth.service": steadySvc}))
	}
	churnLabels := map[string]string{"berth.service": churnSvc}
	keep := w.runContainer("churn0", churnLabels)
	w.startExporter("", "--session-ttl", "10s", "--resync", "30s")
	converged := func() (bool, string) {
		if ok, why := w.dnsMatches(steadySvc, "steady"); !ok {
			return false, why
		}
		if ok, why := w.kvMatches("churn"); !ok {
			return false, why
		}
		return w.dnsMatches(churnSvc, "churn")
	}
	if _, ok := waitFor(w.servedWait(), func() bool { ok, _ := converged(); return ok }); !ok {
		_, why := converged()
		t.Fatalf("not published within %v: %s", w.servedWait(), why)
	}

	ch := newChurner(w, "churn", churnLabels, keep)
	var ports []int
	checks := []check{{hostName(w.host), dns.TypeA, wantA(w.net.Gateway.String())}}
	for _, c := range steady {
		ports = append(ports, c.HostPort)
		checks = append(checks, check{w.ctrName(c), dns.TypeSRV, wantSRV(c.HostPort)})
	}
	checks = append(checks,
		check{steadySvc + "." + zone, dns.TypeSRV, wantSRV(ports...)},
		check{w.ctrName(keep), dns.TypeSRV, wantSRV(keep.HostPort)},
		check{churnSvc + "." + zone, dns.TypeSRV, wantSRVWithin([]int{keep.HostPort}, ch.known)},
		check{"nope-" + w.run + "." + zone, dns.TypeA, wantNX},
	)
	p := newProber(w.dns.Addr, checks)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopLoad := p.run(ctx, 4, 0)
	cctx, stopChurn := context.WithCancel(ctx)
	churnDone := ch.run(cctx, 500*time.Millisecond) // not a wait: the churn's pace
	time.Sleep(loadBeforeKill)

	leader, err := cl.Leader()
	if err != nil {
		t.Fatal(err)
	}
	hostIdx := func() uint64 {
		pair, _, err := w.consul.KV().Get(record.HostKey(prefix, w.host), nil)
		if err != nil || pair == nil {
			return 0
		}
		return pair.ModifyIndex
	}
	idxBefore := hostIdx()
	ch.mu.Lock()
	changesBefore := ch.changes
	ch.mu.Unlock()
	t.Logf("killing the leader %s (%s)", leader.Name, leader.IP)
	killed := time.Now()
	cl.Kill(leader)
	// The election as the surviving servers see it, then as clients do
	// (through the agent, with a write).
	raft, _ := waitFor(testenv.ClusterElectionWait, func() bool {
		for _, n := range cl.Servers {
			if n == leader {
				continue
			}
			if l, err := cl.NodeClient(n, "").Status().Leader(); err == nil && l != "" && l != leader.IP.String()+":8300" {
				return true
			}
		}
		return false
	})
	newLeader, err := cl.WaitLeader(testenv.ClusterElectionWait)
	if err != nil {
		t.Fatal(err)
	}
	election := time.Since(killed)
	ch.mu.Lock()
	changesDuring := ch.changes - changesBefore
	ch.mu.Unlock()
	t.Logf("new leader %s after %s", newLeader.Name, election.Round(time.Millisecond))
	// The exporter writes again: the host document (whose rev rises with
	// every change) moves past where it was at the kill.
	resume, ok := waitFor(testenv.ExporterRecoverWait, func() bool { return hostIdx() > idxBefore })
	if !ok {
		t.Errorf("the exporter wrote nothing within %v after the election", testenv.ExporterRecoverWait)
	}
	resume += election
	time.Sleep(churnAfterElection)
	stopChurn()
	churnDone()
	conv, ok := waitFor(w.servedWait(), func() bool { ok, _ := converged(); return ok })
	if !ok {
		_, why := converged()
		t.Errorf("DNS and KV did not converge to Docker within %v after the churn stopped: %s", w.servedWait(), why)
	}
	cancel()
	stopLoad()
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
		t.Errorf("%d failed or wrong answers of %d queries; first: %v", f, p.queries.Load(), p.Samples())
	}
	cl.Start(leader) // back to three, so the cleanup is as usual
	fault(t, 1, "queries", p.queries.Load(), "failed_answers", p.failures.Load(), "timeouts", p.timeouts.Load(),
		"raft_election_ms", raft.Milliseconds(), "election_ms", election.Milliseconds(), "kv_write_resume_ms", resume.Milliseconds(),
		"container_changes", changes, "changes_during_election", changesDuring, "converge_after_churn_ms", conv.Milliseconds())
}
