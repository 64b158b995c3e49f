package faults

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/berthdns/berth/internal/testenv"
)

// check is one query the prober sends and how its answer is judged: verify
// returns nil for a correct answer.
type check struct {
	name   string
	qtype  uint16
	verify func(*dns.Msg) error
}

// prober is the suite's load generator and answer checker (miekg/dns, not
// dnsperf): workers send the checks round robin over UDP, each waiting for
// its answer (a closed loop, so the rate is the highest the server and the
// machine sustain for that many workers), and count every query, every
// failure (timeout, error, or an answer verify rejects) and keep the first
// failures as samples.
type prober struct {
	addr   string
	checks atomic.Pointer[[]check]

	queries  atomic.Int64
	failures atomic.Int64
	timeouts atomic.Int64

	mu        sync.Mutex
	samples   []string
	latencies []latency // every 8th answer's, from workers that ended
}

// latency is one answer's round trip and when it came.
type latency struct {
	at time.Time
	rt time.Duration
}

// p99 is the 99th percentile round trip of the sampled answers that came
// between from and to; run's workers must have ended.
func (p *prober) p99(from, to time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	var rts []time.Duration
	for _, l := range p.latencies {
		if !l.at.Before(from) && l.at.Before(to) {
			rts = append(rts, l.rt)
		}
	}
	if len(rts) == 0 {
		return 0
	}
	slices.Sort(rts)
	return rts[len(rts)*99/100]
}

func newProber(addr string, checks []check) *prober {
	p := &prober{addr: addr}
	p.setChecks(checks)
	return p
}

func (p *prober) setChecks(c []check) { c = slices.Clone(c); p.checks.Store(&c) }

func (p *prober) fail(format string, args ...any) {
	p.failures.Add(1)
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.samples) < 20 {
		p.samples = append(p.samples, time.Now().Format("15:04:05.000")+" "+fmt.Sprintf(format, args...))
	}
}

// Samples are the first failures seen.
func (p *prober) Samples() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.samples)
}

// run starts workers that query until ctx ends, pausing pause between
// queries (0: none); the returned func waits for them.
func (p *prober) run(ctx context.Context, workers int, pause time.Duration) (wait func()) {
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() {
			c := &dns.Client{Net: "udp", Timeout: testenv.QueryTimeout}
			var mine []latency
			defer func() {
				p.mu.Lock()
				p.latencies = append(p.latencies, mine...)
				p.mu.Unlock()
			}()
			n := i
			for ctx.Err() == nil {
				checks := *p.checks.Load()
				ch := checks[n%len(checks)]
				n++
				m := new(dns.Msg)
				m.SetQuestion(ch.name, ch.qtype)
				r, rt, err := c.Exchange(m, p.addr)
				if ctx.Err() != nil {
					return // an answer cut short by the end is not counted
				}
				if p.queries.Add(1)%8 == 0 && err == nil {
					mine = append(mine, latency{time.Now(), rt})
				}
				switch {
				case err != nil:
					p.timeouts.Add(1)
					p.fail("%s %s: %v", ch.name, dns.TypeToString[ch.qtype], err)
				case r.Id != m.Id:
					p.fail("%s: answer ID %d for query %d", ch.name, r.Id, m.Id)
				default:
					if err := ch.verify(r); err != nil {
						p.fail("%s %s: %v", ch.name, dns.TypeToString[ch.qtype], err)
					}
				}
				if pause > 0 {
					time.Sleep(pause)
				}
			}
		})
	}
	return wg.Wait
}

// Verifiers.

// wantSRV: NOERROR, authoritative, exactly the SRV ports given.
func wantSRV(ports ...int) func(*dns.Msg) error {
	slices.Sort(ports)
	return func(r *dns.Msg) error {
		if r.Rcode != dns.RcodeSuccess || !r.Authoritative {
			return fmt.Errorf("rcode %s AA=%v", dns.RcodeToString[r.Rcode], r.Authoritative)
		}
		if got := srvPorts(r); !equalInts(got, ports) {
			return fmt.Errorf("SRV ports %v, want %v", got, ports)
		}
		return nil
	}
}

// wantSRVWithin: NOERROR, every port in must, every port in allowed(), no
// duplicates.
func wantSRVWithin(must []int, allowed func(int) bool) func(*dns.Msg) error {
	return func(r *dns.Msg) error {
		if r.Rcode != dns.RcodeSuccess || !r.Authoritative {
			return fmt.Errorf("rcode %s AA=%v", dns.RcodeToString[r.Rcode], r.Authoritative)
		}
		got := srvPorts(r)
		for i := 1; i < len(got); i++ {
			if got[i] == got[i-1] {
				return fmt.Errorf("duplicate SRV port %d in %v", got[i], got)
			}
		}
		for _, p := range must {
			if !slices.Contains(got, p) {
				return fmt.Errorf("SRV ports %v lack %d", got, p)
			}
		}
		for _, p := range got {
			if !allowed(p) {
				return fmt.Errorf("SRV port %d belongs to no container of this test", p)
			}
		}
		return nil
	}
}

// wantA: NOERROR with exactly the A records given.
func wantA(addrs ...string) func(*dns.Msg) error {
	slices.Sort(addrs)
	return func(r *dns.Msg) error {
		if r.Rcode != dns.RcodeSuccess || !r.Authoritative {
			return fmt.Errorf("rcode %s AA=%v", dns.RcodeToString[r.Rcode], r.Authoritative)
		}
		var got []string
		for _, rr := range r.Answer {
			if a, ok := rr.(*dns.A); ok {
				got = append(got, a.A.String())
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, addrs) {
			return fmt.Errorf("A %v, want %v", got, addrs)
		}
		return nil
	}
}

// wantNX: NXDOMAIN with the SOA.
func wantNX(r *dns.Msg) error {
	if r.Rcode != dns.RcodeNameError || len(r.Ns) == 0 {
		return fmt.Errorf("rcode %s, want NXDOMAIN with SOA", dns.RcodeToString[r.Rcode])
	}
	return nil
}
