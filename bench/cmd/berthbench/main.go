// Command berthbench runs Berth's benchmark suite (issue #5) and writes
// bench/results.md: query throughput and latency of berth against CoreDNS's
// file plugin and Consul's DNS interface, propagation latency of real
// containers through the exporter, scale to 100,000 instances and the cost
// of a change from 100 to 10,000 hosts, the exporter's reconcile, and a
// BIND secondary following berth by NOTIFY and IXFR. `make bench` runs it
// through hack/bench.sh, which builds the binaries and installs dnsperf and
// BIND first. With -large (`make bench-large`) it runs only the million-
// instance part and saves it as bench/large.json, which the next run
// renders as part 5.
//
// It needs bin/coredns and bin/berth-exporter (BERTH_COREDNS and
// BERTH_EXPORTER, else built from the tree), Consul (BERTH_CONSUL, else
// hack/get-consul.sh), dnsperf and BIND's named, and a Docker Engine. All
// traffic stays on 127.0.0.1; every container it creates carries the label
// berth.test=bench and is removed at the end.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/moby/moby/client"

	"github.com/berthdns/berth/bench"
	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
)

func main() {
	var (
		out        = flag.String("out", "bench/results.md", "the report to write")
		outDir     = flag.String("outdir", "bench/out", "raw outputs: query files, zone files, profiles")
		analysis   = flag.String("analysis", "bench/analysis.md", "hand-written notes appended to the report")
		parts      = flag.String("parts", "go,queries,propagation,scale,reconcile,secondary", "which parts to run")
		duration   = flag.Duration("duration", 10*time.Second, "length of each dnsperf run")
		rounds     = flag.Int("rounds", 3, "interleaved rounds of dnsperf and loader per server (median reported)")
		clients    = flag.Int("dnsperf-clients", 4, "dnsperf -c")
		threads    = flag.Int("dnsperf-threads", 2, "dnsperf -T")
		outstand   = flag.Int("dnsperf-outstanding", 100, "dnsperf -q")
		loadDur    = flag.Duration("loader-duration", 5*time.Second, "length of each loader run")
		loadConc   = flag.Int("loader-concurrency", 8, "loader workers, one query in flight each")
		profile    = flag.Duration("profile", 10*time.Second, "CPU/allocs profile length (0: none)")
		nQueries   = flag.Int("queries", 100000, "distinct queries in each data file")
		containers = flag.Int("containers", 100, "containers for the propagation test")
		reconcile  = flag.Int("reconcile", 1000, "containers for the exporter reconcile on Docker")
		recPodman  = flag.Int("reconcile-podman", 200, "containers for the exporter reconcile on Podman (slower to create)")
		scaleHosts = flag.Int("scale-hosts", 1000, "hosts of the scale test")
		scalePer   = flag.Int("scale-per-host", 100, "containers per host of the scale test")
		loadRuns   = flag.Int("scale-load-runs", 3, "fresh servers whose first load the scale test measures (median reported, as for the List)")
		churn      = flag.Duration("churn-interval", time.Second, "each churning host changes a container this often")
		probes     = flag.Int("probes", 50, "changes measured, quiet and under churn each")
		budget     = flag.Duration("probe-budget", 90*time.Second, "time limit of the quiet and of the churn probes each (at least 5 probes)")
		secProbes  = flag.Int("secondary-probes", 50, "changes measured through the BIND secondary, per size")
		secBudget  = flag.Duration("secondary-budget", 90*time.Second, "time limit of the secondary probes per size (at least 5 probes)")
		fleetHosts = flag.String("fleet-hosts", "100,10000", "fleet sizes of part 3's fleet figures, in hosts (the first and the last are compared)")
		fleetPer   = flag.Int("fleet-per-host", 10, "containers per host of the fleet figures")
		fleetRef   = flag.Bool("fleet-layout1", true, "also measure the fleet sizes in KV layout 1 (the reference: what a change cost before)")
		fleetInt   = flag.Duration("fleet-churn-interval", time.Minute, "fleet churn: each of 1% of the hosts changes once this often")
		fleetDur   = flag.Duration("fleet-churn-duration", 2*time.Minute, "fleet churn: measured this long at the largest size, layout 2")
		large      = flag.Bool("large", false, "run only `make bench-large`: a million instances, saved as -large-report")
		largeRep   = flag.String("large-report", "bench/large.json", "the saved report of -large, rendered by a normal run as part 5 (-quick -large: outdir/large.json)")
		largeHosts = flag.Int("large-hosts", 10000, "hosts of -large")
		largePer   = flag.Int("large-per-host", 100, "containers per host of -large")
		largePar   = flag.Int("large-parallel", 8, "hosts published at a time by -large")
		largeFileT = flag.Duration("large-file-timeout", 10*time.Minute, "-large: the file plugin's load of berth's AXFR, at most")
		largeFileM = flag.Float64("large-file-max-rss-gib", 0, "-large: the file plugin's resident memory, at most (0: what the machine has available when it starts, less 1 GiB)")
		quick      = flag.Bool("quick", false, "small sizes and short runs, to try the suite out")
		coreEnv    = flag.String("coredns-env", "", "VAR=value[,VAR=value]: added to every bin/coredns's environment (experiments; noted in the report)")
		render     = flag.String("render", "", "only render this saved report (outdir/report.json) with the current analysis")
	)
	flag.Parse()
	log.SetFlags(log.Ltime)
	if *quick {
		*duration, *loadDur, *profile, *rounds = 3*time.Second, 2*time.Second, 2*time.Second, 2
		*nQueries, *containers, *reconcile, *recPodman = 2000, 6, 10, 10
		*fleetHosts, *fleetInt, *fleetDur = "20,200", 5*time.Second, 10*time.Second
		*largeHosts, *largePer, *largeFileT = 200, 10, time.Minute
		if *large && !flagSet("large-report") {
			*largeRep = filepath.Join(*outDir, "large.json")
		}
		*scaleHosts, *scalePer, *probes, *budget = 100, 10, 5, 10*time.Second
		*secProbes, *secBudget = 5, 10*time.Second
	}
	if *large && !*quick && !flagSet("rounds") {
		// At a million instances a GC cycle takes seconds and comes every
		// half minute or so under load: five rounds, so that the median
		// round is not decided by where one cycle fell.
		*rounds = 5
	}
	if *render != "" {
		b, err := os.ReadFile(*render)
		if err != nil {
			log.Fatal(err)
		}
		r := &bench.Report{}
		if err := json.Unmarshal(b, r); err != nil {
			log.Fatal(err)
		}
		write(r, *analysis, *out, *largeRep)
		return
	}
	if *coreEnv != "" {
		bench.CoreDNSEnv = strings.Split(*coreEnv, ",")
	}
	want := map[string]bool{}
	for _, p := range strings.Split(*parts, ",") {
		want[strings.TrimSpace(p)] = true
	}
	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		log.Fatal(err)
	}
	outAbs, _ := filepath.Abs(*outDir)

	began := time.Now()
	r := &bench.Report{}
	r.Env = environment()
	r.Env.Perf = bench.DNSPerf{Clients: *clients, Threads: *threads, Outstanding: *outstand, Duration: *duration}
	r.Env.Rounds = *rounds
	r.Env.CoreDNSEnv = *coreEnv
	r.Env.Loader = bench.Loader{Concurrency: *loadConc, Duration: *loadDur, Timeout: time.Second}
	save := func() {
		r.Env.Total = time.Since(began)
		if b, err := json.MarshalIndent(r, "", "  "); err == nil {
			_ = os.WriteFile(filepath.Join(outAbs, "report.json"), b, 0o644)
		}
	}
	qcfg := bench.QueryConfig{Perf: r.Env.Perf, Loader: r.Env.Loader, NQueries: *nQueries, OutDir: outAbs, Profile: *profile, Rounds: *rounds}

	if *large {
		maxRSS := int64(*largeFileM * (1 << 30))
		cfg := bench.LargeConfig{
			D:     bench.Dataset{Name: "large", Prefix: "large", Hosts: *largeHosts, PerHost: *largePer, Replicas: 3},
			Small: querySets(true)[0], Parallel: *largePar, FileTimeout: *largeFileT, FileMaxRSS: maxRSS,
			ChurnInterval: *fleetInt, ChurnDuration: *fleetDur, Probes: *probes, ProbeBudget: *budget, Query: qcfg}
		runLarge(cfg, r.Env, began, *largeRep)
		return
	}

	if want["go"] {
		log.Printf("go benchmarks: ServeDNS, Zone")
		cmd := exec.Command("go", "test", "-run", "^$", "-bench", "ServeDNS|Zone", "-benchmem", "-count", "1", "./plugin")
		o, err := cmd.CombinedOutput()
		_ = os.WriteFile(filepath.Join(outAbs, "gobench.txt"), o, 0o644)
		r.GoBench = bench.ParseGoBench(string(o))
		if err != nil || len(r.GoBench) == 0 {
			r.GoErr = fmt.Sprintf("Go benchmarks: `go test -bench ServeDNS ./plugin` failed: %v: %s", err, lastLines(string(o), 5))
		}
	}
	if want["queries"] {
		sets := querySets(*quick)
		for i, d := range sets {
			cfg := qcfg
			if i > 0 {
				cfg.Profile = 0 // one profile is enough: the 3,000-instance set
			} else {
				cfg.WithMetrics = true // the baseline of part 3's queries/s
			}
			err := bench.Section("queries "+d.Name, func(t *bench.TB) {
				r.Queries = append(r.Queries, bench.RunQueries(t, d, cfg))
			})
			if err != nil {
				r.QueryErr = append(r.QueryErr, err.Error())
				log.Print(err)
			}
			save()
		}
	}
	if want["propagation"] {
		err := bench.Section("propagation", func(t *bench.TB) {
			r.Prop = bench.RunPropagation(t, bench.PropConfig{Containers: *containers, Poll: time.Millisecond}, bench.DockerEngine(t))
		})
		if err != nil {
			r.PropErr = err.Error()
			log.Print(err)
		}
		save()
		// The same on Podman, beside Docker's in this run.
		err = bench.Section("propagation on podman", func(t *bench.TB) {
			r.PropPodman = bench.RunPropagation(t, bench.PropConfig{Containers: *containers, Poll: time.Millisecond}, bench.PodmanEngine(t))
		})
		if err != nil {
			r.PropPodmanErr = err.Error()
			log.Print(err)
		}
		save()
	}
	if want["scale"] {
		d := bench.Dataset{Name: "scale", Prefix: "scale", Hosts: *scaleHosts, PerHost: *scalePer, Replicas: 3}
		err := bench.Section("scale", func(t *bench.TB) {
			r.Scale = bench.RunScale(t, bench.ScaleConfig{D: d, Mode: record.WriteV2, ChurnHosts: max(1, d.Hosts/100),
				ChurnInterval: *churn, Probes: *probes, ProbeBudget: *budget, LoadRuns: *loadRuns, Query: qcfg})
		})
		if err != nil {
			r.ScaleErr = err.Error()
			log.Print(err)
		}
		save()
	}
	if want["scale"] || want["fleet"] {
		sizes, err := parseSizes(*fleetHosts)
		if err != nil {
			log.Fatal(err)
		}
		modes := []record.WriteMode{record.WriteV2}
		if *fleetRef {
			modes = append(modes, record.WriteV1)
		}
		for _, mode := range modes {
			for i, hosts := range sizes {
				fc := bench.FleetConfig{Mode: mode, Hosts: hosts, PerHost: *fleetPer, Probes: *probes, ProbeBudget: *budget}
				if mode == record.WriteV2 && i == len(sizes)-1 {
					fc.ChurnInterval, fc.ChurnDuration = *fleetInt, *fleetDur
				}
				err := bench.Section(fmt.Sprintf("fleet layout %s, %d hosts", mode, hosts), func(t *bench.TB) {
					r.Fleet = append(r.Fleet, bench.RunFleet(t, fc))
				})
				if err != nil {
					r.FleetErr = append(r.FleetErr, err.Error())
					log.Print(err)
				}
				save()
			}
		}
	}
	if want["reconcile"] {
		err := bench.Section("reconcile", func(t *bench.TB) {
			r.Rec = bench.RunReconcile(t, *reconcile, bench.DockerEngine(t))
		})
		if err != nil {
			r.RecErr = err.Error()
			log.Print(err)
		}
		err = bench.Section("reconcile on podman", func(t *bench.TB) {
			r.RecPodman = bench.RunReconcile(t, *recPodman, bench.PodmanEngine(t))
		})
		if err != nil {
			r.RecPodmanErr = err.Error()
			log.Print(err)
		}
	}

	if want["secondary"] {
		for _, d := range querySets(*quick) {
			err := bench.Section("secondary "+d.Name, func(t *bench.TB) {
				r.Secondary = append(r.Secondary, bench.RunSecondary(t, bench.SecondaryConfig{D: d,
					Probes: *secProbes, ProbeBudget: *secBudget, OutDir: outAbs}))
			})
			if err != nil {
				r.SecondaryErr = append(r.SecondaryErr, err.Error())
				log.Print(err)
			}
			save()
		}
	}

	r.Env.LoadAvgEnd = loadAvg()
	if now := binaryHashes(); now != r.Env.Binaries {
		r.Env.Warning = "bin/coredns or bin/berth-exporter changed during the run (" + r.Env.Binaries + " at the start, " + now + " at the end): parts of this run measured different builds"
		log.Print(r.Env.Warning)
	}
	save()
	write(r, *analysis, *out, *largeRep)
}

// runLarge is `make bench-large`: part 5 alone, its report saved as
// report after every step (a failure keeps what was measured), and its
// summary printed.
func runLarge(cfg bench.LargeConfig, env bench.Env, began time.Time, report string) {
	if cfg.FileMaxRSS <= 0 {
		cfg.FileMaxRSS = memAvailable() - 1<<30
	}
	res := &bench.LargeResult{Env: env}
	save := func() {
		res.Env.Total = time.Since(began)
		res.Env.LoadAvgEnd = loadAvg()
		if b, err := json.MarshalIndent(res, "", "  "); err == nil {
			if err := os.WriteFile(report, b, 0o644); err != nil {
				log.Print(err)
			}
		}
	}
	err := bench.Section("large", func(t *bench.TB) {
		t.Cleanup(save)
		bench.RunLarge(t, cfg, res)
	})
	if err != nil {
		res.Err = err.Error()
		log.Print(err)
	}
	if now := binaryHashes(); now != res.Env.Binaries {
		res.Env.Warning = "bin/coredns or bin/berth-exporter changed during the run (" + res.Env.Binaries + " at the start, " + now + " at the end)"
	}
	save()
	// Its summary rows, then its section, as make bench will render them.
	md := (&bench.Report{Large: res}).Markdown()
	if i := strings.Index(md, "## Summary"); i >= 0 {
		rest := md[i:]
		if j := strings.Index(rest, "\n## 1."); j >= 0 {
			fmt.Println(rest[:j])
		}
	}
	if i := strings.Index(md, "## 5."); i >= 0 {
		fmt.Println(md[i:])
	}
	log.Printf("wrote %s", report)
}

// memAvailable is the memory the machine has available now
// (/proc/meminfo MemAvailable), in bytes.
func memAvailable() int64 {
	b, _ := os.ReadFile("/proc/meminfo")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 8 << 30
}

// parseSizes reads a comma-separated list of host counts.
func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 2 {
			return nil, fmt.Errorf("-fleet-hosts %q: want host counts of at least 2, comma-separated", s)
		}
		out = append(out, n)
	}
	return out, nil
}

// flagSet reports whether the flag was given on the command line.
func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// querySets are the datasets of part 1, which part 4 uses too: 3,000 and
// 30,000 instances (only the first with -quick).
func querySets(quick bool) []bench.Dataset {
	sets := []bench.Dataset{
		{Name: "q3k", Prefix: "q3k", Hosts: 100, PerHost: 30, Replicas: 3},
		{Name: "q30k", Prefix: "q30k", Hosts: 1000, PerHost: 30, Replicas: 3},
	}
	if quick {
		return sets[:1]
	}
	return sets
}

// write renders r with the hand-written analysis into out, and prints the
// summary table.
func write(r *bench.Report, analysis, out, large string) {
	if b, err := os.ReadFile(analysis); err == nil {
		r.Analysis = string(b)
	}
	// Part 5 is measured by `make bench-large` alone; its saved report, if
	// any, is rendered with this run.
	if b, err := os.ReadFile(large); err == nil {
		l := &bench.LargeResult{}
		if err := json.Unmarshal(b, l); err != nil {
			log.Printf("%s: %v", large, err)
		} else {
			r.Large = l
		}
	}
	md := r.Markdown()
	if err := os.WriteFile(out, []byte(md), 0o644); err != nil {
		log.Fatal(err)
	}
	// The summary table on the terminal.
	if i := strings.Index(md, "## Summary"); i >= 0 {
		rest := md[i:]
		if j := strings.Index(rest, "\n## 1."); j >= 0 {
			rest = rest[:j]
		}
		fmt.Println(rest)
	}
	log.Printf("wrote %s", out)
}

func environment() bench.Env {
	e := bench.Env{Date: time.Now().UTC().Format("2006-01-02 15:04 MST"), NProc: runtime.NumCPU(), LoadAvgStart: loadAvg()}
	e.CPU = cpuModel()
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		e.Kernel = strings.TrimSpace(string(b))
	}
	e.Go = firstLine(run("go", "version"))
	e.Commit = firstLine(run("git", "describe", "--always", "--dirty", "--abbrev=12"))
	err := bench.Section("versions", func(t *bench.TB) {
		e.CoreDNS = firstLine(run(testenv.CoreDNSBinary(t), "-version"))
		e.Consul = firstLine(run(testenv.ConsulBinary(t), "version"))
	})
	if err != nil {
		log.Print(err)
	}
	e.CoreDNS = strings.TrimPrefix(e.CoreDNS, "CoreDNS-")
	e.Binaries = binaryHashes()
	e.Consul = strings.TrimPrefix(e.Consul, "Consul ")
	e.DNSPerf = bench.DNSPerfVersion()
	e.Docker = "unavailable"
	if cli, err := client.New(client.FromEnv); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if v, err := cli.ServerVersion(ctx, client.ServerVersionOptions{}); err == nil {
			e.Docker = v.Version
		}
		cancel()
		cli.Close()
	}
	return e
}

// binaryHashes identifies the binaries under test (short SHA-256 of each).
func binaryHashes() string {
	var parts []string
	for _, env := range []string{"BERTH_COREDNS", "BERTH_EXPORTER"} {
		path := os.Getenv(env)
		if path == "" {
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil {
			parts = append(parts, filepath.Base(path)+" missing")
			continue
		}
		sum := sha256.Sum256(b)
		parts = append(parts, fmt.Sprintf("%s %x", filepath.Base(path), sum[:6]))
	}
	return strings.Join(parts, ", ")
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

func run(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return "unknown"
	}
	return string(out)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(s)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " / ")
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := bytes.Fields(b)
	if len(f) < 3 {
		return "?"
	}
	return string(bytes.Join(f[:3], []byte(" ")))
}
