// Command berthbench runs Berth's benchmark suite (issue #5) and writes
// bench/results.md: query throughput and latency of berth against CoreDNS's
// file plugin and Consul's DNS interface, propagation latency of real
// containers through the exporter, scale to 100,000 instances, and a BIND
// secondary following berth by NOTIFY and IXFR. `make bench` runs it
// through hack/bench.sh, which builds the binaries and installs dnsperf and
// BIND first.
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
	"strings"
	"time"

	"github.com/moby/moby/client"

	"github.com/berthdns/berth/bench"
	"github.com/berthdns/berth/internal/testenv"
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
		reconcile  = flag.Int("reconcile", 200, "containers for the exporter reconcile")
		scaleHosts = flag.Int("scale-hosts", 1000, "hosts of the scale test")
		scalePer   = flag.Int("scale-per-host", 100, "containers per host of the scale test")
		churn      = flag.Duration("churn-interval", time.Second, "each churning host changes a container this often")
		probes     = flag.Int("probes", 50, "changes measured, quiet and under churn each")
		budget     = flag.Duration("probe-budget", 90*time.Second, "time limit of the quiet and of the churn probes each (at least 5 probes)")
		secProbes  = flag.Int("secondary-probes", 50, "changes measured through the BIND secondary, per size")
		secBudget  = flag.Duration("secondary-budget", 90*time.Second, "time limit of the secondary probes per size (at least 5 probes)")
		quick      = flag.Bool("quick", false, "small sizes and short runs, to try the suite out")
		coreEnv    = flag.String("coredns-env", "", "VAR=value[,VAR=value]: added to every bin/coredns's environment (experiments; noted in the report)")
		render     = flag.String("render", "", "only render this saved report (outdir/report.json) with the current analysis")
	)
	flag.Parse()
	log.SetFlags(log.Ltime)
	if *quick {
		*duration, *loadDur, *profile, *rounds = 3*time.Second, 2*time.Second, 2*time.Second, 2
		*nQueries, *containers, *reconcile = 2000, 6, 10
		*scaleHosts, *scalePer, *probes, *budget = 100, 10, 5, 10*time.Second
		*secProbes, *secBudget = 5, 10*time.Second
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
		write(r, *analysis, *out)
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
			r.Scale = bench.RunScale(t, bench.ScaleConfig{D: d, ChurnHosts: max(1, d.Hosts/100),
				ChurnInterval: *churn, Probes: *probes, ProbeBudget: *budget, Query: qcfg})
		})
		if err != nil {
			r.ScaleErr = err.Error()
			log.Print(err)
		}
		save()
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
			r.RecPodman = bench.RunReconcile(t, *reconcile, bench.PodmanEngine(t))
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
	write(r, *analysis, *out)
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
func write(r *bench.Report, analysis, out string) {
	if b, err := os.ReadFile(analysis); err == nil {
		r.Analysis = string(b)
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
