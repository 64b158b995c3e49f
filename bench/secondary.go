package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
)

// dnssdPerName is how many instances part 4 gives one port name, so one
// DNS-SD list (_<name>._tcp.<zone> PTR, one record per instance). Part 1's
// datasets name every 80/tcp http: 3,000 and 30,000 PTRs in one RRset,
// more than a DNS message holds, and BIND 9.18 fails the transfer ("ran
// out of space") even with max-records-per-type lifted (see RunSecondary).
// Lists of 500 load.
const dnssdPerName = 500

// SecondaryConfig is how part 4 measures.
type SecondaryConfig struct {
	D           Dataset
	Probes      int           // measured changes per series
	ProbeBudget time.Duration // ... unless this time is up (at least 5)
	// Gaps are the series: each the pause after a change has reached the
	// secondary, before the next change. Default 600 ms, then 0. 600 ms
	// is longer than berth's NOTIFY coalescing (250 ms, notifyGap in
	// plugin/notify.go) and BIND's SOA-query rate limiter (its default
	// serial-query-rate of 20/s runs as ticks of 500 ms), so each change
	// is notified and fetched on its own; at 0 the next change comes as
	// soon as the last one is answered, and meets both.
	Gaps   []time.Duration
	OutDir string // named's log is saved here
}

// Transfer is one zone transfer: as named logs an incoming one ("Transfer
// completed: ..."), or as the driver counted its own.
type Transfer struct {
	Messages, Records int
	Bytes             int64 // DNS messages, without TCP's two-byte length prefixes
	Secs              float64
	Serial            uint32
}

// SecondaryProbes is one series of changes.
type SecondaryProbes struct {
	Gap time.Duration
	// KV commit -> the changed port in the answer, probe by probe: berth's
	// own answer (the baseline) and named's.
	Primary, Secondary []time.Duration
	Transfers          []Transfer // named's transfers during the series
	// Berth's counters over the series: transfers served by kind (ixfr,
	// axfr) and NOTIFY rounds by result.
	BerthXfr, Notifies map[string]float64
	LoadAvg            string // before the series
}

// SecondaryResult is part 4 on one dataset: a BIND 9 secondary following
// berth as its hidden primary.
type SecondaryResult struct {
	D             Dataset
	BIND          string        // named -v
	PublishTime   time.Duration // the dataset into Consul KV
	FirstLoad     time.Duration // berth: process start -> ready
	SecondaryLoad time.Duration // named started -> it serves berth's serial
	First         Transfer      // named's first transfer: the whole zone
	AXFR          Transfer      // the driver's own AXFR of the zone from berth
	Series        []SecondaryProbes
	IXFR          Transfer // the driver's own IXFR of the last probe's change
}

// RunSecondary is part 4 on dataset d: berth serves d from Consul as the
// hidden primary of a real BIND 9 secondary (transfer `to` its address
// only); each probe changes one container's host port in Consul and polls
// both berth and named until they answer it, and named's log gives the
// bytes of each transfer it made, against the bytes of the whole zone.
func RunSecondary(t *TB, cfg SecondaryConfig) *SecondaryResult {
	ctx := t.Context()
	d := cfg.D
	if d.PortNames == 0 {
		d.PortNames = (d.Instances() + dnssdPerName - 1) / dnssdPerName
	}
	gaps := cfg.Gaps
	if len(gaps) == 0 {
		gaps = []time.Duration{600 * time.Millisecond, 0}
	}
	res := &SecondaryResult{D: d}
	res.BIND = firstLineOf(exec.Command(testenv.NamedBinary(t), "-v").CombinedOutput())
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})

	t.Logf("%s: publishing %d instances on %d hosts", d.Name, d.Instances(), d.Hosts)
	start := time.Now()
	prod, err := NewProducer(consul.Client(), d, record.WriteV2)
	t.Check(err, "producer")
	t.Check(prod.PublishAll(ctx, 8), "publish")
	res.PublishTime = time.Since(start)

	bindPort := testenv.FreePort(t)
	s := StartBerth(t, consul.HTTP, d.Prefix, ServerOptions{Metrics: true,
		TransferTo: []string{"127.0.0.1:" + strconv.Itoa(bindPort)}})
	ready, err := s.WaitReady(5 * time.Minute)
	t.Check(err, "berth")
	res.FirstLoad = ready.Sub(s.Started)
	res.AXFR, _, err = countedTransfer(s.Addr, new(dns.Msg).SetAxfr(Zone))
	t.Check(err, "AXFR from berth")

	start = time.Now()
	// BIND 9.18.28 and later refuse, by default, a transfer with an RRset
	// of more than 100 records ("too many records (must not exceed 100)"),
	// and each DNS-SD list here holds up to dnssdPerName.
	bind := testenv.StartBINDSecondary(t, Zone, s.Addr, bindPort, "max-records-per-type 0;")
	t.Cleanup(func() {
		_ = os.WriteFile(filepath.Join(cfg.OutDir, d.Name+".named.log"), []byte(bind.Log()), 0o644)
	})
	t.Check(waitSameSerial(ctx, s.Addr, bind.Addr, 2*time.Minute), "named loads the zone")
	res.SecondaryLoad = time.Since(start)
	// named answers from the new zone a moment before it logs the
	// transfer: wait for the line (a run that read the log at once found
	// none for the 30,000-instance zone).
	testenv.Eventually(t, 10*time.Second, "named logs its first transfer", func() error {
		first := parseTransfers(bind.Log())
		if len(first) == 0 {
			return fmt.Errorf("named serves berth's serial, but its log has no completed transfer:\n%s", bind.Log())
		}
		res.First = first[0]
		return nil
	})
	t.Logf("%s: named serves berth's serial after %s (first transfer %d records, %d bytes)",
		d.Name, res.SecondaryLoad.Round(time.Millisecond), res.First.Records, res.First.Bytes)
	time.Sleep(time.Second)

	counters := func() (xfr, notify map[string]float64) {
		x, err := s.Scrape("coredns_berth_transfers_total")
		t.Check(err, "scrape")
		n, err := s.Scrape("coredns_berth_notifies_total")
		t.Check(err, "scrape")
		return x, n
	}
	rng := rand.New(rand.NewPCG(9, uint64(d.Instances())))
	port := 50000
	var lastFrom uint32 // berth's serial before the last probe's change
	probe := func(i int) (prim, sec time.Duration, err error) {
		h, c := (i*37)%d.Hosts, rng.IntN(d.PerHost)
		port++
		want := uint16(port)
		qname := d.ContainerName(h, c) + "." + d.HostName(h) + ".hosts." + Zone
		has := func(r *dns.Msg) bool {
			for _, rr := range r.Answer {
				if srv, ok := rr.(*dns.SRV); ok && srv.Port == want {
					return true
				}
			}
			return false
		}
		if lastFrom, err = serial(s.Addr); err != nil {
			return 0, 0, err
		}
		if err := prod.SetHostPort(ctx, h, c, port); err != nil {
			return 0, 0, err
		}
		committed := time.Now()
		type seen struct {
			at  time.Time
			err error
		}
		primary := make(chan seen, 1)
		go func() {
			at, err := pollDNS(ctx, s.Addr, qname, time.Millisecond, 30*time.Second, has)
			primary <- seen{at, err}
		}()
		at, err := pollDNS(ctx, bind.Addr, qname, time.Millisecond, 30*time.Second, has)
		p := <-primary
		if p.err != nil {
			return 0, 0, fmt.Errorf("berth, %s SRV port %d: %w", qname, port, p.err)
		}
		if err != nil {
			return 0, 0, fmt.Errorf("named, %s SRV port %d: %w", qname, port, err)
		}
		return p.at.Sub(committed), at.Sub(committed), nil
	}

	n := 0 // probes so far, all series
	for _, gap := range gaps {
		ps := SecondaryProbes{Gap: gap, LoadAvg: loadAvg()}
		mark := len(bind.Log())
		xfr0, not0 := counters()
		budget := time.Now().Add(cfg.ProbeBudget)
		for i := 0; i < cfg.Probes && (i < 5 || time.Now().Before(budget)); i++ {
			prim, sec, err := probe(n)
			n++
			t.Check(err, "probe")
			ps.Primary = append(ps.Primary, prim)
			ps.Secondary = append(ps.Secondary, sec)
			t.Check(waitSameSerial(ctx, s.Addr, bind.Addr, 30*time.Second), "named at berth's serial")
			time.Sleep(gap)
		}
		// named logs a transfer as it commits it, which is before it
		// answers from it; give the log a moment all the same.
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if len(parseTransfers(bind.Log()[mark:])) >= len(ps.Secondary) {
				break
			}
		}
		ps.Transfers = parseTransfers(bind.Log()[mark:])
		xfr1, not1 := counters()
		ps.BerthXfr, ps.Notifies = map[string]float64{}, map[string]float64{}
		for k, v := range xfr1 {
			ps.BerthXfr[labelValue(k, "kind")] = v - xfr0[k]
		}
		for k, v := range not1 {
			ps.Notifies[labelValue(k, "result")] = v - not0[k]
		}
		t.Logf("%s, gap %s: KV commit -> named %s, -> berth %s; %d transfers by named, berth served %v",
			d.Name, gap, Distribution(ps.Secondary), Distribution(ps.Primary), len(ps.Transfers), ps.BerthXfr)
		res.Series = append(res.Series, ps)
	}
	// The same IXFR named made for the last change, counted by the driver:
	// a check of named's figures.
	var ixfr []dns.RR
	res.IXFR, ixfr, err = countedTransfer(s.Addr, new(dns.Msg).SetIxfr(Zone, lastFrom, "ns.", "hostmaster."))
	t.Check(err, "IXFR from berth")
	t.Check(WriteZoneFile(filepath.Join(cfg.OutDir, d.Name+".ixfr"), ixfr), "IXFR file")
	return res
}

// transfers are named's transfers over every series.
func (s *SecondaryResult) transfers() []Transfer {
	var xs []Transfer
	for _, ps := range s.Series {
		xs = append(xs, ps.Transfers...)
	}
	return xs
}

// reTransfer is named's line for a completed incoming transfer (BIND 9.18,
// category xfer-in).
var reTransfer = regexp.MustCompile(`Transfer completed: (\d+) messages, (\d+) records, (\d+) bytes, ([\d.]+) secs(?: \(\d+ bytes/sec\))?(?: \(serial (\d+)\))?`)

// parseTransfers reads every completed transfer out of named's log.
func parseTransfers(log string) []Transfer {
	var out []Transfer
	for _, m := range reTransfer.FindAllStringSubmatch(log, -1) {
		var x Transfer
		x.Messages, _ = strconv.Atoi(m[1])
		x.Records, _ = strconv.Atoi(m[2])
		x.Bytes, _ = strconv.ParseInt(m[3], 10, 64)
		x.Secs, _ = strconv.ParseFloat(m[4], 64)
		if m[5] != "" {
			s, _ := strconv.ParseUint(m[5], 10, 32)
			x.Serial = uint32(s)
		}
		out = append(out, x)
	}
	return out
}

// countingConn counts the bytes read through it.
type countingConn struct {
	net.Conn
	read atomic.Int64
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.read.Add(int64(n))
	return n, err
}

// countedTransfer makes the transfer m asks for (AXFR or IXFR) from addr
// and counts its messages, records and bytes as named does: the messages
// without TCP's length prefixes.
func countedTransfer(addr string, m *dns.Msg) (Transfer, []dns.RR, error) {
	var x Transfer
	var rrs []dns.RR
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return x, nil, err
	}
	cc := &countingConn{Conn: nc}
	tr := &dns.Transfer{Conn: &dns.Conn{Conn: cc}, ReadTimeout: time.Minute}
	start := time.Now()
	ch, err := tr.In(m, addr)
	if err != nil {
		nc.Close()
		return x, nil, err
	}
	for env := range ch { // In closes the connection at the end
		if env.Error != nil {
			return x, nil, env.Error
		}
		x.Messages++
		x.Records += len(env.RR)
		rrs = append(rrs, env.RR...)
		for _, rr := range env.RR {
			if soa, ok := rr.(*dns.SOA); ok {
				x.Serial = soa.Serial
			}
		}
	}
	x.Secs = time.Since(start).Seconds()
	x.Bytes = cc.read.Load() - 2*int64(x.Messages)
	return x, rrs, nil
}

// serial is the zone's SOA serial at addr.
func serial(addr string) (uint32, error) {
	m := new(dns.Msg)
	m.SetQuestion(Zone, dns.TypeSOA)
	r, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(m, addr)
	if err != nil {
		return 0, err
	}
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		return 0, fmt.Errorf("SOA from %s: %s, %d answers", addr, dns.RcodeToString[r.Rcode], len(r.Answer))
	}
	soa, ok := r.Answer[0].(*dns.SOA)
	if !ok {
		return 0, fmt.Errorf("SOA from %s: %v", addr, r.Answer[0])
	}
	return soa.Serial, nil
}

// waitSameSerial polls until the secondary serves the primary's serial.
func waitSameSerial(ctx context.Context, primary, secondary string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var p, s uint32
	var err error
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if p, err = serial(primary); err == nil {
			if s, err = serial(secondary); err == nil && s == p {
				return nil
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("not within %s: %w", timeout, err)
	}
	return fmt.Errorf("not within %s: primary at serial %d, secondary at %d", timeout, p, s)
}

// labelValue is label's value in a Prometheus label string.
func labelValue(labels, label string) string {
	for _, kv := range strings.Split(labels, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.TrimSpace(k) == label {
			return strings.Trim(v, `"`)
		}
	}
	return labels
}

func firstLineOf(out []byte, err error) string {
	if err != nil {
		return "unknown"
	}
	s, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return s
}

// transferStats are the mean and median bytes and the mean records of xs.
func transferStats(xs []Transfer) (meanBytes, medianBytes, meanRecords float64) {
	if len(xs) == 0 {
		return 0, 0, 0
	}
	bs := make([]float64, len(xs))
	for i, x := range xs {
		bs[i] = float64(x.Bytes)
		meanBytes += float64(x.Bytes)
		meanRecords += float64(x.Records)
	}
	slices.Sort(bs)
	medianBytes = bs[len(bs)/2]
	if len(bs)%2 == 0 {
		medianBytes = (bs[len(bs)/2-1] + bs[len(bs)/2]) / 2
	}
	return meanBytes / float64(len(xs)), medianBytes, meanRecords / float64(len(xs))
}

// seriesName describes a series of part 4 by its gap.
func seriesName(gap time.Duration) string {
	if gap == 0 {
		return "changes back to back"
	}
	return "one change at a time (" + ms(gap) + " apart)"
}

// secondarySummary is part 4's rows of the Summary table.
func (r *Report) secondarySummary(p func(string, ...any)) {
	for _, s := range r.Secondary {
		n := num(float64(s.D.Instances()))
		for _, ps := range s.Series {
			sd, pd := Distribution(ps.Secondary), Distribution(ps.Primary)
			p("| 4 | KV commit → BIND secondary answers, %s instances, %s, p50 / p90 / p99 / max (n=%d) | %s | berth (the primary) answers: %s | %s (p99; goal: p99 < 1 s) |\n",
				n, seriesName(ps.Gap), sd.N, sd, pd, dratio(sd.P99, pd.P99))
		}
		xs := s.transfers()
		mean, _, recs := transferStats(xs)
		p("| 4 | bytes per change to the secondary (IXFR, mean of %d; %.1f records), %s instances | %s | one AXFR of the zone: %s (%s records) | %s |\n",
			len(xs), recs, n, kib(mean), kib(float64(s.First.Bytes)), num(float64(s.First.Records)), fraction(mean, float64(s.First.Bytes)))
	}
}

// secondaryMarkdown is part 4's section.
func (r *Report) secondaryMarkdown(p func(string, ...any)) {
	if len(r.Secondary) == 0 {
		return
	}
	s0 := r.Secondary[0]
	p("## 4. A BIND secondary following berth (hidden primary)\n\n")
	p("Per size, in one run: a Consul agent with the dataset of part 1 written through the exporter's `Publisher`, except that 80/tcp is named `http-0` … `http-<k>` by service, %d instances per name (part 1 names them all `http`: see below); `bin/coredns` with berth, `prometheus` and `transfer { to 127.0.0.1:<named's port> }` (berth sends NOTIFY there, and transfers only to it); and a real %s configured as `testenv.StartBINDSecondary` configures it, plus `max-records-per-type 0` (berth's SOA refresh is 300 s, so only NOTIFY explains a quick update).\n\n", dnssdPerName, strings.TrimSpace(strings.Split(s0.BIND, "<id")[0]))
	p("Each probe changes the host port of one container in Consul (`Producer.SetHostPort`: the container's document and its host's rev in one transaction, as the exporter writes) and, from the moment Consul committed it, polls berth and named in parallel, every millisecond, for `<container>.<host>.hosts.%s` SRV until it shows the new port. After each probe the driver waits until named serves berth's serial; then, in the first series, 600 ms, so that each change is notified and fetched on its own (past berth's NOTIFY coalescing, 250 ms, and BIND's SOA-query rate limiter, 500 ms ticks); in the second, nothing: the next change comes as soon as the last one is answered. Bytes and records per transfer are named's own figures (its `Transfer completed: N messages, R records, B bytes` log lines: DNS messages without TCP length prefixes); the driver also made one AXFR and the last change's IXFR itself over a byte-counting connection, as a check.\n\n", strings.TrimSuffix(Zone, "."))
	p("Why the port names: with every 80/tcp named `http`, the DNS-SD list `_http._tcp.%s` holds one PTR per instance (3,000 and 30,000). BIND 9.18.28 and later refuse a transfer with an RRset of more than 100 records unless `max-records-per-type` allows it (`too many records (must not exceed 100)`), and with that lifted named still failed partway through the list (`ran out of space`): it never loaded part 1's zones. 3,000 such PTRs are more than one DNS message can carry; berth's own answer to that name over TCP is truncated too (2,046 of 3,000 PTRs in 65,525 bytes, TC set).\n\n", strings.TrimSuffix(Zone, "."))
	p("| figure |")
	for _, s := range r.Secondary {
		p(" %s instances (%s hosts, %d port names) |", num(float64(s.D.Instances())), num(float64(s.D.Hosts)), s.D.PortNames)
	}
	p("\n| --- |%s\n", strings.Repeat(" --- |", len(r.Secondary)))
	row := func(what string, f func(s *SecondaryResult) string) {
		p("| %s |", what)
		for _, s := range r.Secondary {
			p(" %s |", f(s))
		}
		p("\n")
	}
	row("records in the zone (the driver's AXFR, both SOAs counted)", func(s *SecondaryResult) string { return num(float64(s.AXFR.Records)) })
	row("berth's first load (process start → ready)", func(s *SecondaryResult) string { return ms(s.FirstLoad) })
	row("named started → serves berth's serial", func(s *SecondaryResult) string { return ms(s.SecondaryLoad) })
	row("named's first transfer (AXFR): messages, records, bytes, time", func(s *SecondaryResult) string {
		return fmt.Sprintf("%s, %s, %s, %.3f s", num(float64(s.First.Messages)), num(float64(s.First.Records)), kib(float64(s.First.Bytes)), s.First.Secs)
	})
	row("the driver's AXFR from berth: messages, records, bytes", func(s *SecondaryResult) string {
		return fmt.Sprintf("%s, %s, %s", num(float64(s.AXFR.Messages)), num(float64(s.AXFR.Records)), kib(float64(s.AXFR.Bytes)))
	})
	for k := range s0.Series {
		series := func(f func(ps SecondaryProbes) string) func(s *SecondaryResult) string {
			return func(s *SecondaryResult) string {
				if k >= len(s.Series) {
					return "n/a"
				}
				return f(s.Series[k])
			}
		}
		name := seriesName(s0.Series[k].Gap)
		row("**"+name+"**: load average before", series(func(ps SecondaryProbes) string { return ps.LoadAvg }))
		row("· KV commit → berth answers (baseline), p50 / p90 / p99 / max", series(func(ps SecondaryProbes) string { return Distribution(ps.Primary).String() }))
		row("· KV commit → named answers, p50 / p90 / p99 / max", series(func(ps SecondaryProbes) string { return Distribution(ps.Secondary).String() }))
		row("· named after berth, same probe, p50 / p90 / p99 / max", series(func(ps SecondaryProbes) string {
			var ds []time.Duration
			for i := range ps.Secondary {
				ds = append(ds, ps.Secondary[i]-ps.Primary[i])
			}
			return Distribution(ds).String()
		}))
		row("· probes; transfers named logged; berth served (by kind); NOTIFY rounds", series(func(ps SecondaryProbes) string {
			return fmt.Sprintf("%d; %d; ixfr %.0f, axfr %.0f; ok %.0f, failed %.0f", len(ps.Secondary), len(ps.Transfers),
				ps.BerthXfr["ixfr"], ps.BerthXfr["axfr"], ps.Notifies["ok"], ps.Notifies["failed"])
		}))
		row("· bytes per transfer: mean / median (min–max); records, mean", series(func(ps SecondaryProbes) string {
			mean, med, recs := transferStats(ps.Transfers)
			lo, hi := transferRange(ps.Transfers)
			return fmt.Sprintf("%.0f / %.0f (%d–%d); %.1f", mean, med, lo, hi, recs)
		}))
		row("· bytes per change: the series' transfers / probes", series(func(ps SecondaryProbes) string {
			var sum int64
			for _, x := range ps.Transfers {
				sum += x.Bytes
			}
			return fmt.Sprintf("%.0f", float64(sum)/float64(max(1, len(ps.Secondary))))
		}))
	}
	row("IXFR (mean, both series) / AXFR (named's first transfer), bytes", func(s *SecondaryResult) string {
		mean, _, _ := transferStats(s.transfers())
		return fraction(mean, float64(s.First.Bytes))
	})
	row("check: the driver's IXFR of the last change against named's last transfer (records, bytes)", func(s *SecondaryResult) string {
		named := Transfer{}
		if xs := s.transfers(); len(xs) > 0 {
			named = xs[len(xs)-1]
		}
		return fmt.Sprintf("%d, %d against %d, %d", s.IXFR.Records, s.IXFR.Bytes, named.Records, named.Bytes)
	})
	p("\nAn IXFR of one change: the four SOAs of the difference sequence (RFC 1995) and the records that changed, deleted and added: the container's SRV under `hosts`, its DNS-SD instance SRV, its service's SRV sets (`<service>`, `_80._tcp.<service>`, `_http-<k>._tcp.<service>`).\n\n")
}

// fraction is a / b as a ratio and, being small, as one in so many.
func fraction(a, b float64) string {
	if a <= 0 || b <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.6fx (1/%s)", a/b, num(b/a))
}

// transferRange is the fewest and most bytes of a transfer in xs.
func transferRange(xs []Transfer) (lo, hi int64) {
	for i, x := range xs {
		if i == 0 || x.Bytes < lo {
			lo = x.Bytes
		}
		hi = max(hi, x.Bytes)
	}
	return lo, hi
}
