package bench

import (
	"bufio"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Env is what the run ran on and with.
type Env struct {
	Date                                 string
	NProc                                int
	CPU, Kernel                          string
	Go, CoreDNS, Consul, DNSPerf, Docker string
	Perf                                 DNSPerf
	Loader                               Loader
	Rounds                               int
	Commit, Binaries, Warning            string
	CoreDNSEnv                           string
	Total                                time.Duration
	LoadAvgStart, LoadAvgEnd             string
}

// GoBench is one line of `go test -bench` output.
type GoBench struct {
	Name                    string
	NsOp, BytesOp, AllocsOp float64
}

var reBench = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op\s+([\d.]+) B/op\s+([\d.]+) allocs/op`)

// ParseGoBench reads `go test -bench -benchmem` output.
func ParseGoBench(out string) []GoBench {
	var bs []GoBench
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		m := reBench.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		b := GoBench{Name: m[1]}
		b.NsOp, _ = strconv.ParseFloat(m[2], 64)
		b.BytesOp, _ = strconv.ParseFloat(m[3], 64)
		b.AllocsOp, _ = strconv.ParseFloat(m[4], 64)
		bs = append(bs, b)
	}
	return bs
}

// Report is the whole run.
type Report struct {
	Env      Env
	GoBench  []GoBench
	GoErr    string
	Queries  []*QueryResult
	QueryErr []string
	Prop     *PropResult
	PropErr  string
	Scale    *ScaleResult
	ScaleErr string
	// Part 3's fleet figures (bench/fleet.go), one result per layout and
	// size.
	Fleet    []*ScaleResult
	FleetErr []string
	Rec      *ReconcileResult
	RecErr   string
	// Parts 2 and 3's exporter runs again with the containers on Podman.
	PropPodman    *PropResult
	PropPodmanErr string
	RecPodman     *ReconcileResult
	RecPodmanErr  string
	// Part 4, one result per size (bench/secondary.go).
	Secondary    []*SecondaryResult
	SecondaryErr []string
	// Part 5, from `make bench-large`'s saved report (bench/large.json),
	// not measured by this run; nil when there is none.
	Large    *LargeResult
	Analysis string
}

// Dist summarizes durations.
type Dist struct {
	N                  int
	P50, P90, P99, Max time.Duration
}

// Distribution of ds (unsorted is fine).
func Distribution(ds []time.Duration) Dist {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return Dist{}
	}
	return Dist{N: len(s), P50: Percentile(s, 50), P90: Percentile(s, 90), P99: Percentile(s, 99), Max: s[len(s)-1]}
}

func (d Dist) String() string {
	if d.N == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%s / %s / %s / %s", ms(d.P50), ms(d.P90), ms(d.P99), ms(d.Max))
}

func ms(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d < time.Millisecond:
		return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}

func num(f float64) string {
	s := strconv.FormatFloat(f, 'f', 0, 64)
	n := len(s)
	if n <= 3 {
		return s
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (n-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func kib(b float64) string { return fmt.Sprintf("%.1f KiB", b/1024) }

func ratio(a, b float64) string {
	if b == 0 {
		return "n/a"
	}
	if a/b < 0.1 {
		return fmt.Sprintf("%.4fx", a/b)
	}
	return fmt.Sprintf("%.2fx", a/b)
}

func dratio(a, b time.Duration) string { return ratio(float64(a), float64(b)) }

// Markdown renders the report as bench/results.md.
func (r *Report) Markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	r.header(p)
	p("## Summary\n\n")
	p("| # | figure | Berth | baseline (same run) | ratio |\n| --- | --- | --- | --- | --- |\n")
	r.summaryQueries(p)
	r.summaryPropagation(p)
	r.summaryScale(p)
	r.summaryFleet(p)
	r.summaryReconcile(p)
	r.secondarySummary(p)
	r.largeSummary(p)
	r.notMeasured(p)
	r.queriesMarkdown(p)
	r.propagationMarkdown(p)
	r.scaleMarkdown(p)
	r.fleetMarkdown(p)
	r.reconcileMarkdown(p)
	r.secondaryMarkdown(p)
	r.largeMarkdown(p)
	if r.Analysis != "" {
		p("%s\n", strings.TrimSpace(r.Analysis))
	}
	return b.String()
}

// printf writes to the report being rendered.
type printf = func(format string, args ...any)

// header is the run's date, machine and versions.
func (r *Report) header(p printf) {
	e := r.Env
	p("# Berth benchmarks\n\n")
	p("Written by `make bench` (`hack/bench.sh`, driver `bench/cmd/berthbench`) on %s; the whole run took %s.\n\n", e.Date, e.Total.Round(time.Second))
	p("Machine: %d cores (`nproc`), %s, Linux %s; load average %s at the start, %s at the end (the machine may be shared: every measurement below also notes the load average before it).\n\n", e.NProc, e.CPU, e.Kernel, e.LoadAvgStart, e.LoadAvgEnd)
	p("Versions: CoreDNS %s (`bin/coredns`, stock plugins plus berth), Consul %s, dnsperf %s, %s, Docker Engine %s. Berth at commit `%s` (%s).\n\n", e.CoreDNS, e.Consul, e.DNSPerf, e.Go, e.Docker, e.Commit, e.Binaries)
	if e.CoreDNSEnv != "" {
		p("**Experiment:** every bin/coredns ran with `%s` in its environment.\n\n", e.CoreDNSEnv)
	}
	if e.Warning != "" {
		p("**Warning:** %s.\n\n", e.Warning)
	}
	p("Every figure stands next to a baseline measured in the same run, and the ratio is figure / baseline. Nothing here is a test: no figure fails the run. Raw outputs (query files, zone files, profiles) are in `bench/out/`, which is not committed.\n\n")
}

// summaryQueries is part 1's rows of the summary: queries/s and latency against the file plugin and Consul DNS, then the Go benchmarks.
func (r *Report) summaryQueries(p printf) {
	e := r.Env
	for _, q := range r.Queries {
		br, fr, cr := q.Server("berth"), q.Server("file"), q.Server("consul")
		n := num(float64(q.D.Instances()))
		p("| 1 | queries/s, %s instances (dnsperf) | %s | file plugin %s | **%s** (goal ≥ 1.20x) |\n", n, num(br.Perf.QPS), num(fr.Perf.QPS), ratio(br.Perf.QPS, fr.Perf.QPS))
		p("| 1 | queries/s, %s instances (dnsperf), Consul DNS | Consul %s | file plugin %s | %s |\n", n, num(cr.Perf.QPS), num(fr.Perf.QPS), ratio(cr.Perf.QPS, fr.Perf.QPS))
		p("| 1 | queries/s, %s instances: berth vs Consul DNS | %s | Consul DNS %s | %s |\n", n, num(br.Perf.QPS), num(cr.Perf.QPS), ratio(br.Perf.QPS, cr.Perf.QPS))
		p("| 1 | p99 latency, %s instances (loader, %d in flight) | %s | file plugin %s | %s |\n", n, e.Loader.Concurrency, ms(br.Load.P99), ms(fr.Load.P99), dratio(br.Load.P99, fr.Load.P99))
		p("| 1 | p99 latency, %s instances, Consul DNS | Consul %s | file plugin %s | %s |\n", n, ms(cr.Load.P99), ms(fr.Load.P99), dratio(cr.Load.P99, fr.Load.P99))
		p("| 1 | lost queries, %s instances (dnsperf, all rounds) | %d of %s | file plugin %d of %s, Consul %d of %s | |\n", n, br.Lost, num(float64(br.Sent)), fr.Lost, num(float64(fr.Sent)), cr.Lost, num(float64(cr.Sent)))
	}
	if q := r.memoryQuery(); q != nil && q.Records > 0 {
		memoryRows(p, "1", num(float64(q.D.Instances()))+" instances", int64(q.Records), q.Memory, q.FileMemory)
	}
	for _, kind := range []string{"SRV", "A", "TXT", "NXDOMAIN"} {
		bb, fb := r.bench("BenchmarkServeDNS/"+kind), r.bench("BenchmarkServeDNSFilePlugin/"+kind)
		if bb == nil || fb == nil {
			continue
		}
		p("| 1 | ServeDNS %s in process (Go benchmark): ns/op, allocs/op | %.0f ns, %.0f allocs | file plugin %.0f ns, %.0f allocs | %s time, %s allocs |\n",
			kind, bb.NsOp, bb.AllocsOp, fb.NsOp, fb.AllocsOp, ratio(bb.NsOp, fb.NsOp), ratio(bb.AllocsOp, fb.AllocsOp))
	}
}

// summaryPropagation is part 2's rows of the summary.
func (r *Report) summaryPropagation(p printf) {
	if pr := r.Prop; pr != nil {
		st := pr.startDists()
		sp := pr.stopDists()
		p("| 2 | `docker start` returned → SRV answered, p50 / p90 / p99 / max (n=%d) | %s | `docker start` call itself, p50 %s | %s |\n", st["ret"].N, st["ret"], ms(st["call"].P50), dratio(st["ret"].P50, st["call"].P50))
		p("| 2 | start event → SRV answered | %s | | |\n", st["event"])
		p("| 2 | `docker stop`/`kill` returned → record gone (n=%d) | %s | the stop/kill call itself, p50 %s | %s |\n", sp["ret"].N, sp["ret"], ms(sp["call"].P50), dratio(sp["ret"].P50, sp["call"].P50))
		p("| 2 | die event → record gone | %s | | |\n", sp["event"])
		if pp := r.PropPodman; pp != nil {
			pst, psp := pp.startDists(), pp.stopDists()
			p("| 2 | Podman: start returned → SRV answered (n=%d) | %s | Docker, same run: p50 %s | %s (p50) |\n", pst["ret"].N, pst["ret"], ms(st["ret"].P50), dratio(pst["ret"].P50, st["ret"].P50))
			p("| 2 | Podman: stop/kill returned → record gone (n=%d) | %s | Docker, same run: p50 %s | %s (p50) |\n", psp["ret"].N, psp["ret"], ms(sp["ret"].P50), dratio(psp["ret"].P50, sp["ret"].P50))
		}
	}
}

// summaryScale is part 3's rows of the summary.
func (r *Report) summaryScale(p printf) {
	if s := r.Scale; s != nil && len(s.FirstLoad) > 0 {
		n := num(float64(s.D.Instances()))
		p("| 3 | first full load, %s instances (process start → ready; empty berth: %s) | %s | the driver's own List of the whole prefix: %s | %s |\n", n, ms(s.EmptyLoad), s.firstLoadText(), s.rawFetchText(), dratio(s.FirstLoadMedian(), s.RawFetch))
		per := float64(s.Loaded.RSS-s.Empty.RSS) / float64(s.D.Instances()) * 10000
		if q := r.query(30000); q != nil && q.FileMemory.RSS > 0 {
			fper := float64(q.FileMemory.RSS-s.Empty.RSS) / float64(q.D.Instances()) * 10000
			p("| 3 | resident memory per 10,000 instances | %s | file plugin, same records (30,000-instance zone): %s | %s |\n", mib(int64(per)), mib(int64(fper)), ratio(per, fper))
		} else {
			p("| 3 | resident memory per 10,000 instances | %s | empty berth: %s RSS | |\n", mib(int64(per)), mib(s.Empty.RSS))
		}
		qd, cd := Distribution(s.Quiet), Distribution(s.Churn)
		p("| 3 | KV commit → answer changed, under %d-host churn, p50 / p90 / p99 / max (n=%d) | %s | same without churn, %s | %s (p50) |\n", s.D.Hosts/100, cd.N, cd, qd, dratio(cd.P50, qd.P50))
		per1 := bytesPerChange(s.QuietBytes)
		p("| 3 | bytes from Consul per change | %s (%s) | whole prefix, one GET: %s | %s |\n", kib(per1), kinds(s.QuietBytes), kib(float64(s.RawPrefixBytes)), ratio(per1, float64(s.RawPrefixBytes)))
		if q := r.query(3000); q != nil && q.Server("berth+metrics").Perf.QPS > 0 {
			b3 := q.Server("berth+metrics").Perf.QPS
			p("| 3 | queries/s at %s instances (dnsperf; Corefile with prometheus) | %s | 3,000 instances, same Corefile: %s | %s |\n", n, num(s.Server.Perf.QPS), num(b3), ratio(s.Server.Perf.QPS, b3))
		} else {
			p("| 3 | queries/s at %s instances (dnsperf) | %s | | |\n", n, num(s.Server.Perf.QPS))
		}
	}
	if a, b := r.bench("BenchmarkZoneLoad/hosts=50"), r.bench("BenchmarkZoneLoad/hosts=150"); a != nil && b != nil {
		p("| 3 | index build, 150 hosts x 30 containers (Go benchmark ZoneLoad) | %s, %s allocs | 50 hosts x 30: %s | %s (3.00x if linear in hosts) |\n",
			ms(time.Duration(b.NsOp)), num(b.AllocsOp), ms(time.Duration(a.NsOp)), ratio(b.NsOp, a.NsOp))
	}
	if a, b := r.bench("BenchmarkZoneUpdate/hosts=100"), r.bench("BenchmarkZoneUpdate/hosts=300"); a != nil && b != nil {
		p("| 3 | one host's change, zone of 300 hosts x 30 (Go benchmark ZoneUpdate) | %s, %s allocs | zone of 100 hosts x 30: %s | %s (1.00x if independent of zone size) |\n",
			ms(time.Duration(b.NsOp)), num(b.AllocsOp), ms(time.Duration(a.NsOp)), ratio(b.NsOp, a.NsOp))
	}
}

// summaryReconcile is the exporter's rows of the summary.
func (r *Report) summaryReconcile(p printf) {
	if rc := r.Rec; rc != nil {
		syn, ex, up, re := rc.run("Publisher alone, from empty"), rc.run("exporter, from empty"), rc.run("exporter, up to date"), rc.run("restarted exporter, up to date")
		if li := rc.run(listInspectRun); ex != nil && li != nil {
			p("| 3 | exporter: reconcile a host of %d containers from empty, one pass | %s, %d writes in %d txns | the engine's own list + one inspect per container (the driver, %d at a time as the exporter): %s | **%s** (goal ≤ 2x) |\n", rc.Containers, ms(ex.Time), ex.Sets+ex.Deletes, ex.Txns, inspectParallel, ms(li.Time), dratio(ex.Time, li.Time))
		}
		if ex != nil && syn != nil {
			p("| 3 | exporter: reconcile a host of %d containers from empty | %s, %d writes in %d txns | Publisher alone (no Docker): %s | %s |\n", rc.Containers, ms(ex.Time), ex.Sets+ex.Deletes, ex.Txns, ms(syn.Time), dratio(ex.Time, syn.Time))
		}
		if up != nil && ex != nil {
			p("| 3 | exporter: the same host up to date | %s, %d writes | from empty: %s | %s |\n", ms(up.Time), up.Sets+up.Deletes+up.Txns, ms(ex.Time), dratio(up.Time, ex.Time))
		}
		if re != nil && ex != nil {
			p("| 3 | exporter restarted, host of %d containers up to date: KV writes | **%d** documents set or deleted, %d transactions (goal 0), in %s | from empty: %d documents, %d transactions, in %s | %s (time) |\n", rc.Containers, re.Sets+re.Deletes, re.Txns, ms(re.Time), ex.Sets+ex.Deletes, ex.Txns, ms(ex.Time), dratio(re.Time, ex.Time))
		}
		if rp := r.RecPodman; rp != nil && ex != nil {
			if pex, pup := rp.run("exporter, from empty"), rp.run("exporter, up to date"); pex != nil && pup != nil {
				p("| 3 | exporter on Podman: reconcile a host of %d containers from empty | %s, %d writes in %d txns | Docker, same run: %s | %s |\n", rp.Containers, ms(pex.Time), pex.Sets+pex.Deletes, pex.Txns, ms(ex.Time), dratio(pex.Time, ex.Time))
				if up != nil {
					p("| 3 | exporter on Podman: the same host up to date | %s, %d writes | Docker, same run: %s | %s |\n", ms(pup.Time), pup.Sets+pup.Deletes+pup.Txns, ms(up.Time), dratio(pup.Time, up.Time))
				}
			}
		}
	}
}

// notMeasured lists the parts that failed, after the summary.
func (r *Report) notMeasured(p printf) {
	p("\n")
	for _, errs := range [][]string{{r.GoErr}, r.QueryErr, {r.PropErr}, {r.PropPodmanErr}, {r.ScaleErr}, r.FleetErr, {r.RecErr}, {r.RecPodmanErr}, r.SecondaryErr} {
		for _, err := range errs {
			if err != "" {
				p("**Not measured:** %s\n\n", err)
			}
		}
	}
}

// queriesMarkdown is part 1 in detail.
func (r *Report) queriesMarkdown(p printf) {
	e := r.Env
	// Part 1 in detail.
	p("## 1. Query throughput and latency\n\n")
	p("Data: `Dataset` in `bench/data.go`: hosts with 30 containers each, 3 instances per service on 3 neighbouring hosts, every container publishing 80/tcp (http), every fifth service also 9090/tcp; written into Consul KV through the exporter's own `Publisher` (one session per host) and, for Consul's DNS, registered in its catalog (one node per host, one service instance per container). Query mix, in random order, the same file for berth and file: ¼ SRV `_80._tcp.<service>`, ¼ A `<service>`, ¼ TXT `<container>.<host>.hosts`, ¼ A of a name that does not exist (NXDOMAIN). Consul gets the same mix in its names: SRV and A `<service>.service.consul`, A `<host>.node.consul` (Consul has no per-container name), A of a missing service.\n\n")
	p("Servers, one measured at a time (the others idle): `bin/coredns` with `berth` (no cache); `bin/coredns` with `file`, the zone file being berth's own AXFR, so the records are identical; Consul's DNS interface of the same agent. Both CoreDNS Corefiles hold the data plugin, `transfer`, `pprof` and `ready` only.\n\n")
	p("Tools: **dnsperf** %s (`%s`, UDP) for queries/s, mean latency and lost queries; dnsperf 2.10 reports no percentiles, so **loader** (`bench/load.go`, miekg/dns wire format, %d workers each with one query in flight on its own UDP socket, %s, %s timeout) gives the latency distribution on the same query file. The machine may be shared with other work, so each server is measured in %d interleaved rounds (each round one dnsperf run then one loader run per server, every round starting with the next server), after a one-second warm-up; the figures are the median round (dnsperf by queries/s, loader by p99), with the range of the rounds' queries/s.\n\n", e.DNSPerf, e.Perf, e.Loader.Concurrency, e.Loader.Duration, e.Loader.Timeout, e.Rounds)
	for _, q := range r.Queries {
		p("### %s instances (%s services on %d hosts)\n\n", num(float64(q.D.Instances())), num(float64(q.D.Services())), q.D.Hosts)
		p("%d records in the zone; KV written in %s, catalog in %s; berth's first load %s, %s RSS / %s live heap after it (file plugin: %s RSS / %s live heap). Answers compared between berth and file on %d of the queries: %d differ.\n\n",
			q.Records, ms(q.PublishTime), ms(q.CatalogTime), ms(q.FirstLoad), mib(q.Memory.RSS), mib(q.Memory.HeapAlloc), mib(q.FileMemory.RSS), mib(q.FileMemory.HeapAlloc), q.Checked, q.Differ)
		if q.DiffExample != "" {
			p("<details><summary>first difference</summary>\n\n```\n%s\n```\n</details>\n\n", q.DiffExample)
		}
		p("| server | q/s (dnsperf): median (min–max) | mean latency (dnsperf) | lost / sent (dnsperf) | q/s (loader) | mean | p50 | p99 | p99.9 | max | lost (loader) | rcodes (loader) | load avg before each round |\n")
		p("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
		for _, s := range q.Servers {
			p("%s\n", serverRow(s))
		}
		p("\nConsul's DNS settings (agent defaults, from `/v1/agent/self`): %s.\n\n", q.ConsulDNS)
		if q.BerthCPUTop != "" {
			p("<details><summary>pprof: berth under dnsperf, CPU (top 25)</summary>\n\n```\n%s```\n</details>\n\n", q.BerthCPUTop)
			p("<details><summary>pprof: berth under dnsperf, allocated bytes (top 15)</summary>\n\n```\n%s```\n</details>\n\n", q.BerthAllocTop)
			p("<details><summary>pprof: berth under dnsperf, CPU of the plugin's ServeDNS and its callees (`-peek`)</summary>\n\n```\n%s```\n</details>\n\n", q.BerthPeek)
			p("<details><summary>pprof: file plugin under dnsperf, CPU (top 25)</summary>\n\n```\n%s```\n</details>\n\n", q.FileCPUTop)
			p("<details><summary>pprof: file plugin under dnsperf, CPU of its ServeDNS and callees (`-peek`)</summary>\n\n```\n%s```\n</details>\n\n", q.FilePeek)
		}
	}
	if len(r.GoBench) > 0 {
		p("### In process (`go test -run '^$' -bench 'ServeDNS|Zone' -benchmem ./plugin`)\n\n")
		p("`ServeDNS`: same data shape as the 3,000-instance set, no network: the plugin's own cost per query. `+pack` also packs the reply as the server would; `FilePlugin` is the baseline, the file plugin serving the same records. `ZoneLoad`: building the index host after host as the first full load does (30 containers per host); `ZoneUpdate`: one host's change in a loaded index. Compare the sizes: time per load growing with the square of the hosts, time per change with the number of hosts, show the index-update cost described under part 3.\n\n")
		p("| benchmark | ns/op | B/op | allocs/op |\n| --- | --- | --- | --- |\n")
		for _, gb := range r.GoBench {
			p("| %s | %.0f | %.0f | %.0f |\n", gb.Name, gb.NsOp, gb.BytesOp, gb.AllocsOp)
		}
		p("\n")
	}
}

// propagationMarkdown is part 2 in detail.
func (r *Report) propagationMarkdown(p printf) {
	if pr := r.Prop; pr != nil {
		p("## 2. Propagation latency\n\n")
		p("%d containers of the test service image (FROM scratch, 80/tcp published on 0.0.0.0, label `berth.service=prop-NNN`), created beforehand, started one at a time and then stopped (even ones, `docker stop`) or killed (odd ones, `docker kill`) one at a time, through the Docker API. The exporter is `bin/berth-exporter` (`--advertise-addr 198.18.255.1`, an address of the benchmarking range that is only data here: the driver asks DNS, it never dials), berth is `bin/coredns`, both against one Consul agent. The driver asks `_80._tcp.prop-NNN.%s` SRV every millisecond until the answer changes, holds a blocking query on the host's container keys (when the KV write landed) and a Docker event subscription (the engine's time stamp of `start` / `die`).\n\n", len(pr.Starts), strings.TrimSuffix(Zone, "."))
		propTable(p, pr)
		if pp := r.PropPodman; pp != nil {
			p("\n### The same on Podman\n\n")
			p("The same run on a rootful Podman 4 API service started by the driver (`podman system service` on a socket of its own; the exporter is pointed at it with `DOCKER_HOST`), the test image built there, %d containers. Their 80/tcp is published on a host port the driver names, below the kernel's ephemeral range: in a run of 2026-12-01 a start failed because the port Podman had given the container, created minutes before, was in use by then (`portsBelowEphemeral` in `bench/propagation.go`).\n\n", len(pp.Starts))
			propTable(p, pp)
		}
		p("\n")
	}
}

// propTable is one engine's propagation intervals.
func propTable(p printf, pr *PropResult) {
	p("| interval | p50 / p90 / p99 / max |\n| --- | --- |\n")
	st, sp := pr.startDists(), pr.stopDists()
	p("| `docker start` call (Docker itself) | %s |\n", st["call"])
	p("| `docker start` returned → SRV answered | %s |\n", st["ret"])
	p("| start event → SRV answered | %s |\n", st["event"])
	p("| · start event → KV write seen (exporter: event, inspect, transaction) | %s |\n", st["event→kv"])
	p("| · KV write seen → SRV answered (berth: blocking query returns, host fetch, index update) | %s |\n", st["kv→dns"])
	p("| `docker stop`/`kill` call (Docker itself) | %s |\n", sp["call"])
	p("| `docker stop`/`kill` returned → record gone | %s |\n", sp["ret"])
	p("| die event → record gone | %s |\n", sp["event"])
	p("| · die event → KV delete seen | %s |\n", sp["event→kv"])
	p("| · KV delete seen → record gone | %s |\n", sp["kv→dns"])
	for _, m := range []string{"stop", "kill"} {
		p("| only `docker %s`: returned → record gone | %s |\n", m, pr.methodDist(m))
	}
	if pr.ExporterEventToKV != "" {
		p("\nThe exporter's own `berth_exporter_event_to_kv_seconds`: %s.\n", pr.ExporterEventToKV)
	}
}

// rawFetchText is the driver's List of the whole prefix, the baseline of
// the first load: the median, and each List when there were several.
func (s *ScaleResult) rawFetchText() string {
	if len(s.RawFetches) < 2 {
		return ms(s.RawFetch) // a report saved before rawListRuns
	}
	return medianText(s.RawFetch, s.RawFetches)
}

// FirstLoadMedian is the first load a fresh server usually takes: the
// median of the samples (ScaleConfig.LoadRuns; reports saved before it
// have one).
func (s *ScaleResult) FirstLoadMedian() time.Duration { return Distribution(s.FirstLoad).P50 }

func (s *ScaleResult) firstLoadText() string {
	if len(s.FirstLoad) < 2 {
		return ms(s.FirstLoadMedian())
	}
	return medianText(s.FirstLoadMedian(), s.FirstLoad)
}

// medianText is median, with the samples it is the median of.
func medianText(median time.Duration, samples []time.Duration) string {
	each := make([]string, len(samples))
	for i, d := range samples {
		each[i] = ms(d)
	}
	return fmt.Sprintf("%s (median of %s)", ms(median), strings.Join(each, ", "))
}

// scaleMarkdown is part 3 in detail.
func (r *Report) scaleMarkdown(p printf) {
	if s := r.Scale; s != nil {
		p("## 3. Scale\n\n")
		p("A synthetic producer (`bench.Producer`, which drives the exporter's own `exporter.Publisher`, one per host, one session each) wrote %s hosts x %d containers = %s instances (%s services) in KV layout %s (`record.WriteMode`) in %s (%d transactions). %s records indexed.\n\n",
			num(float64(s.D.Hosts)), s.D.PerHost, num(float64(s.D.Instances())), num(float64(s.D.Services())), modeText(s.Mode), ms(s.PublishTime), s.Txns, num(float64(s.Records)))
		p("| figure | value |\n| --- | --- |\n")
		for i, fl := range s.FirstLoad {
			p("| first full load, sample %d (process start → `ready` answers 200) | %s |\n", i+1, ms(fl))
		}
		p("| the same for a berth with an empty prefix (CoreDNS start-up alone) | %s |\n", ms(s.EmptyLoad))
		p("| process start → first answer (SERVFAIL while loading), sample 1 | %s |\n", ms(s.FirstServing))
		p("| the driver's List of the host index (`hosts/` in layout 1, `shards/` in layout 2) and `containers/` through the Consul API client | %s |\n", s.rawFetchText())
		p("| RSS / live heap, empty berth | %s / %s |\n", mib(s.Empty.RSS), mib(s.Empty.HeapAlloc))
		p("| RSS / live heap, %s instances (after a forced GC) | %s / %s |\n", num(float64(s.D.Instances())), mib(s.Loaded.RSS), mib(s.Loaded.HeapAlloc))
		p("| per 10,000 instances, RSS / live heap | %s / %s |\n", mib((s.Loaded.RSS-s.Empty.RSS)*10000/int64(s.D.Instances())), mib((s.Loaded.HeapAlloc-s.Empty.HeapAlloc)*10000/int64(s.D.Instances())))
		p("| KV commit → answer changed, quiet, p50 / p90 / p99 / max (n=%d) | %s |\n", len(s.Quiet), Distribution(s.Quiet))
		p("| the same while %d hosts (1%%) each change a container every %s: %d changes in %.1f s | %s |\n", s.D.Hosts/100, s.churnInterval(), s.ChurnChanges, s.ChurnSeconds, Distribution(s.Churn))
		p("| bytes read from Consul per change (quiet; `coredns_berth_consul_received_bytes_total`, by request kind) | %s: %s |\n", kib(bytesPerChange(s.QuietBytes)), kinds(s.QuietBytes))
		p("| one host's subtree / the host list (layout 1) / one shard's keys (layout 2) / the whole container prefix, one GET each | %s / %s / %s / %s |\n", kib(float64(s.RawHostBytes)), kib(float64(s.RawHostsBytes)), kib(float64(s.RawShardBytes)), kib(float64(s.RawPrefixBytes)))
		p("| bytes read from Consul per second under churn | %s/s: %s |\n", kib(bytesPerChange(s.ChurnBytesPerSec)), kindsPerSec(s.ChurnBytesPerSec))
		p("\nQueries at this size, measured as in part 1 (%d rounds, medians), on the server above (its Corefile has the prometheus plugin):\n\n", len(s.Server.Rounds))
		p("| server | q/s (dnsperf): median (min–max) | mean latency (dnsperf) | lost / sent (dnsperf) | q/s (loader) | mean | p50 | p99 | p99.9 | max | lost (loader) | rcodes (loader) | load avg before each round |\n")
		p("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
		p("%s\n", serverRow(s.Server))
		p("\n")
	}
}

// reconcileMarkdown is the exporter's reconcile in detail.
func (r *Report) reconcileMarkdown(p printf) {
	if rc := r.Rec; rc != nil {
		p("### Exporter reconcile\n\n")
		p("One host with %d running containers of the test image (created and started in %s, 4 at a time). `exporter` rows run the exporter package in this process (`exporter.New` and `Exporter.Once`: a full listing, one inspect per container, the Publisher's diff and transactions) against the local engine and a fresh Consul agent; `Publisher alone` publishes %d synthetic documents for one host, the Consul half without Docker; `the engine alone` is the driver's own listing and one inspect per container, one at a time as the exporter's reconcile makes them (`exporter/reconcile.go`), just before the exporter's first pass: the baseline of issue 11's goal (a pass from empty within 2x of it). Writes are the exporter's own counters (documents set + deleted); `subtree index moved` is Consul's index of the host's keys, checked independently.\n\n", rc.Containers, ms(rc.StartAll), rc.Containers)
		p("| run | time | documents set | deleted | transactions | subtree index moved |\n| --- | --- | --- | --- | --- | --- |\n")
		for _, x := range rc.Runs {
			p("| %s | %s | %d | %d | %d | %v |\n", x.What, ms(x.Time), x.Sets, x.Deletes, x.Txns, x.IndexMoved)
		}
		p("\n")
	}
	if rp := r.RecPodman; rp != nil {
		p("### Exporter reconcile on Podman\n\n")
		p("The same runs with %d containers of the test image on a rootful Podman 4 API service (created and started in %s).\n\n", rp.Containers, ms(rp.StartAll))
		p("| run | time | documents set | deleted | transactions | subtree index moved |\n| --- | --- | --- | --- | --- | --- |\n")
		for _, x := range rp.Runs {
			p("| %s | %s | %d | %d | %d | %v |\n", x.What, ms(x.Time), x.Sets, x.Deletes, x.Txns, x.IndexMoved)
		}
		p("\n")
	}
}

func serverRow(s ServerResult) string {
	lo, hi := s.QPSRange()
	return fmt.Sprintf("| %s | %s (%s–%s) | %s | %d / %s | %s | %s | %s | %s | %s | %s | %d | %s | %s |", s.Server, num(s.Perf.QPS), num(lo), num(hi),
		ms(s.Perf.MeanLatency), s.Lost, num(float64(s.Sent)),
		num(s.Load.QPS), ms(s.Load.Mean), ms(s.Load.P50), ms(s.Load.P99), ms(s.Load.P999), ms(s.Load.Max), s.Load.Lost,
		RcodeString(s.Load.Rcodes), strings.Join(s.LoadAvgs, "; "))
}

func (r *Report) bench(name string) *GoBench {
	for i := range r.GoBench {
		if r.GoBench[i].Name == name {
			return &r.GoBench[i]
		}
	}
	return nil
}

// memoryQuery is the part 1 set whose memory per record the summary shows:
// 30,000 instances, or the largest measured (-quick runs only 3,000).
func (r *Report) memoryQuery() *QueryResult {
	if q := r.query(30000); q != nil {
		return q
	}
	var best *QueryResult
	for _, q := range r.Queries {
		if best == nil || q.D.Instances() > best.D.Instances() {
			best = q
		}
	}
	return best
}

// memoryRows are the summary rows of memory per record, berth against the
// file plugin holding berth's own AXFR of the same zone (issue 11's goal:
// at or below it). Both figures are the whole process's, after a forced GC.
func memoryRows(p printf, part, what string, records int64, berth, file Memory) {
	per := func(b int64) float64 { return float64(b) / float64(records) }
	p("| %s | resident memory per record, %s (%s records; RSS / records) | %.0f B (%s) | file plugin, same records: %.0f B (%s) | **%s** (goal ≤ 1.00x) |\n",
		part, what, num(float64(records)), per(berth.RSS), mib(berth.RSS), per(file.RSS), mib(file.RSS), ratio(per(berth.RSS), per(file.RSS)))
	p("| %s | live heap per record, %s | %.0f B (%s) | file plugin, same records: %.0f B (%s) | %s |\n",
		part, what, per(berth.HeapAlloc), mib(berth.HeapAlloc), per(file.HeapAlloc), mib(file.HeapAlloc), ratio(per(berth.HeapAlloc), per(file.HeapAlloc)))
}

func (r *Report) query(instances int) *QueryResult {
	for _, q := range r.Queries {
		if q.D.Instances() == instances {
			return q
		}
	}
	return nil
}

func (rc *ReconcileResult) run(what string) *Reconcile {
	for i := range rc.Runs {
		if rc.Runs[i].What == what {
			return &rc.Runs[i]
		}
	}
	return nil
}

func (s *ScaleResult) churnInterval() string { return s.ChurnIntervalText }

func dists(ts []Timing) map[string]Dist {
	var call, ret, ev, evkv, kvdns []time.Duration
	for _, t := range ts {
		call = append(call, t.Returned.Sub(t.Call))
		ret = append(ret, t.DNS.Sub(t.Returned))
		if !t.Event.IsZero() {
			ev = append(ev, t.DNS.Sub(t.Event))
		}
		if !t.Event.IsZero() && !t.KV.IsZero() {
			evkv = append(evkv, t.KV.Sub(t.Event))
		}
		if !t.KV.IsZero() {
			kvdns = append(kvdns, t.DNS.Sub(t.KV))
		}
	}
	return map[string]Dist{"call": Distribution(call), "ret": Distribution(ret), "event": Distribution(ev),
		"event→kv": Distribution(evkv), "kv→dns": Distribution(kvdns)}
}

func (pr *PropResult) startDists() map[string]Dist { return dists(pr.Starts) }
func (pr *PropResult) stopDists() map[string]Dist  { return dists(pr.Stops) }

func (pr *PropResult) methodDist(m string) Dist {
	var ds []time.Duration
	for _, t := range pr.Stops {
		if t.Method == m {
			ds = append(ds, t.DNS.Sub(t.Returned))
		}
	}
	return Distribution(ds)
}
