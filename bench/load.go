package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// DNSPerf is how the suite runs dnsperf: UDP, Clients sockets, at most
// Outstanding queries in flight, for Duration, looping over the data file.
type DNSPerf struct {
	Clients     int
	Threads     int
	Outstanding int
	Duration    time.Duration
}

// Args are dnsperf's arguments for server addr and data file.
func (p DNSPerf) Args(addr, file string) []string {
	host, port, _ := net.SplitHostPort(addr)
	return []string{"-s", host, "-p", port, "-d", file, "-l", strconv.Itoa(int(p.Duration.Seconds())),
		"-c", strconv.Itoa(p.Clients), "-T", strconv.Itoa(p.Threads), "-q", strconv.Itoa(p.Outstanding), "-t", "2"}
}

// String is the settings in dnsperf's flags.
func (p DNSPerf) String() string {
	return fmt.Sprintf("-l %d -c %d -T %d -q %d -t 2", int(p.Duration.Seconds()), p.Clients, p.Threads, p.Outstanding)
}

// PerfResult is what dnsperf reported for one run.
type PerfResult struct {
	Sent, Completed, Lost int
	QPS                   float64
	MeanLatency           time.Duration
	MaxLatency            time.Duration
	StdDev                time.Duration
	Rcodes                string
	Output                string
}

var (
	rePerfInt   = regexp.MustCompile(`Queries (sent|completed|lost):\s+(\d+)`)
	rePerfQPS   = regexp.MustCompile(`Queries per second:\s+([\d.]+)`)
	rePerfLat   = regexp.MustCompile(`Average Latency \(s\):\s+([\d.]+) \(min ([\d.]+), max ([\d.]+)\)`)
	rePerfSD    = regexp.MustCompile(`Latency StdDev \(s\):\s+([\d.]+)`)
	rePerfCodes = regexp.MustCompile(`Response codes:\s+(.*)`)
)

// Run runs dnsperf against addr with the data file.
func (p DNSPerf) Run(ctx context.Context, addr, file string) (PerfResult, error) {
	cmd := exec.CommandContext(ctx, "dnsperf", p.Args(addr, file)...)
	out, err := cmd.CombinedOutput()
	r := PerfResult{Output: string(out)}
	if err != nil {
		return r, fmt.Errorf("dnsperf: %v\n%s", err, out)
	}
	for _, m := range rePerfInt.FindAllStringSubmatch(r.Output, -1) {
		n, _ := strconv.Atoi(m[2])
		switch m[1] {
		case "sent":
			r.Sent = n
		case "completed":
			r.Completed = n
		case "lost":
			r.Lost = n
		}
	}
	m := rePerfQPS.FindStringSubmatch(r.Output)
	if m == nil {
		return r, fmt.Errorf("dnsperf printed no queries per second:\n%s", out)
	}
	r.QPS, _ = strconv.ParseFloat(m[1], 64)
	if m := rePerfLat.FindStringSubmatch(r.Output); m != nil {
		r.MeanLatency = seconds(m[1])
		r.MaxLatency = seconds(m[3])
	}
	if m := rePerfSD.FindStringSubmatch(r.Output); m != nil {
		r.StdDev = seconds(m[1])
	}
	if m := rePerfCodes.FindStringSubmatch(r.Output); m != nil {
		r.Rcodes = strings.TrimSpace(m[1])
	}
	return r, nil
}

func seconds(s string) time.Duration {
	f, _ := strconv.ParseFloat(s, 64)
	return time.Duration(f * float64(time.Second))
}

// DNSPerfVersion is dnsperf's version line.
func DNSPerfVersion() string {
	out, _ := exec.Command("dnsperf", "-H").CombinedOutput()
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "Version "); ok {
			return v
		}
	}
	return "unknown"
}

// Loader is the suite's own load generator, for what dnsperf 2.10 does not
// report: latency percentiles. Concurrency workers each keep one query in
// flight on a UDP socket of their own and record every query's latency; a
// query unanswered within Timeout is lost.
//
// Without Rate the loop is closed: each worker sends its next query as soon
// as the last is answered, so a faster server is asked more, and its
// latency is measured at its own saturation. With Rate the loop is open:
// the workers send Rate queries a second between them on a fixed schedule,
// so that two servers are compared under the same load. A query the worker
// could not send on time because the server had not answered the one
// before counts its latency from its scheduled time, so a stall counts for
// every query it held up; one sent late only because the worker's own
// timer woke late counts from when it was sent.
type Loader struct {
	Concurrency int
	Duration    time.Duration
	Timeout     time.Duration
	Rate        float64 // queries a second over all workers; 0: closed loop
}

// LoadResult is one Loader run.
type LoadResult struct {
	Completed, Lost           int
	QPS                       float64
	Mean, P50, P99, P999, Max time.Duration
	Rcodes                    map[int]int
}

// Run asks addr the queries, round robin from a different offset per
// worker, until Duration has passed.
func (l Loader) Run(ctx context.Context, addr string, qs []Query) (LoadResult, error) {
	wire := make([][]byte, len(qs))
	for i, q := range qs {
		m := new(dns.Msg)
		m.SetQuestion(q.Name, q.Type)
		m.RecursionDesired = false
		b, err := m.Pack()
		if err != nil {
			return LoadResult{}, err
		}
		wire[i] = b
	}
	type worker struct {
		lat    []time.Duration
		lost   int
		rcodes map[int]int
		err    error
	}
	workers := make([]*worker, l.Concurrency)
	deadline := time.Now().Add(l.Duration)
	var wg sync.WaitGroup
	start := time.Now()
	for wi := range workers {
		w := &worker{rcodes: map[int]int{}, lat: make([]time.Duration, 0, 1<<16)}
		workers[wi] = w
		wg.Go(func() {
			conn, err := net.Dial("udp", addr)
			if err != nil {
				w.err = err
				return
			}
			defer conn.Close()
			buf := make([]byte, 65535)
			q := make([]byte, 512)
			id := uint16(wi << 10)
			// The open loop's schedule: one query every interval, the
			// workers' schedules staggered across it.
			var interval time.Duration
			var due, done time.Time // done: when the last query was answered or given up
			if l.Rate > 0 {
				interval = time.Duration(float64(len(workers)) / l.Rate * float64(time.Second))
				due = start.Add(interval * time.Duration(wi) / time.Duration(len(workers)))
			}
			for i := wi * len(wire) / len(workers); time.Now().Before(deadline) && ctx.Err() == nil; i++ {
				msg := wire[i%len(wire)]
				q = append(q[:0], msg...)
				id++
				q[0], q[1] = byte(id>>8), byte(id)
				heldUp := interval > 0 && done.After(due)
				if interval > 0 && !heldUp {
					time.Sleep(time.Until(due))
				}
				sent := time.Now()
				from := sent
				if heldUp {
					from = due
				}
				due = due.Add(interval)
				if _, err := conn.Write(q); err != nil {
					w.err = err
					return
				}
				for {
					_ = conn.SetReadDeadline(sent.Add(l.Timeout))
					n, err := conn.Read(buf)
					if err != nil {
						var ne net.Error
						if errors.As(err, &ne) && ne.Timeout() {
							w.lost++
							done = time.Now()
							break
						}
						w.err = err
						return
					}
					if n < 12 || buf[0] != byte(id>>8) || buf[1] != byte(id) {
						continue // a late answer to a query already counted lost
					}
					done = time.Now()
					w.lat = append(w.lat, done.Sub(from))
					w.rcodes[int(buf[3]&0x0f)]++
					break
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	var r LoadResult
	r.Rcodes = map[int]int{}
	var all []time.Duration
	for _, w := range workers {
		if w.err != nil {
			return r, w.err
		}
		all = append(all, w.lat...)
		r.Lost += w.lost
		for k, v := range w.rcodes {
			r.Rcodes[k] += v
		}
	}
	r.Completed = len(all)
	if r.Completed == 0 {
		return r, errors.New("no query answered")
	}
	slices.Sort(all)
	var sum time.Duration
	for _, d := range all {
		sum += d
	}
	r.QPS = float64(r.Completed) / elapsed.Seconds()
	r.Mean = sum / time.Duration(len(all))
	r.P50 = Percentile(all, 50)
	r.P99 = Percentile(all, 99)
	r.P999 = Percentile(all, 99.9)
	r.Max = all[len(all)-1]
	return r, nil
}

// Percentile of sorted durations, nearest rank.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p/100*float64(len(sorted))+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// RcodeString formats a rcode count map.
func RcodeString(m map[int]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", dns.RcodeToString[k], m[k]))
	}
	return strings.Join(parts, ", ")
}
