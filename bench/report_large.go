package bench

import (
	"fmt"
	"strings"
	"time"
)

// largeSummary is part 5's rows of the summary, from the saved report of
// `make bench-large` (bench/large.json): issue 11's goals at a million
// instances.
func (r *Report) largeSummary(p printf) {
	l := r.Large
	if l == nil || l.Scale == nil {
		return
	}
	s, n := l.Scale, num(float64(l.D.Instances()))
	when := "`make bench-large`, " + l.Env.Date
	if len(s.FirstLoad) > 0 {
		p("| 5 | first full load, %s instances, layout 2 (process start → ready; %s) | %s | the driver's own List of the whole prefix: %s | **%s** (goal ≤ 1.50x) |\n", n, when, s.firstLoadText(), s.rawFetchText(), dratio(s.FirstLoadMedian(), s.RawFetch))
	}
	if l.Records > 0 && s.Loaded.RSS > 0 {
		if l.FileErr != "" {
			p("| 5 | resident memory per record, %s instances (%s records) | %.0f B (%s) | file plugin, same records: not measured: %s | |\n",
				n, num(float64(l.Records)), float64(s.Loaded.RSS)/float64(l.Records), mib(s.Loaded.RSS), l.FileErr)
		} else {
			memoryRows(p, "5", n+" instances", l.Records, s.Loaded, l.FileMemory)
		}
	}
	if b, bs := l.Server("berth"), l.Server("berth-small"); b.Perf.QPS > 0 && bs.Perf.QPS > 0 {
		p("| 5 | queries/s at %s instances (dnsperf; Corefile with prometheus) | %s | %s instances, same Corefile and run: %s | **%s** (goal ≥ 0.80x) |\n",
			n, num(b.Perf.QPS), num(float64(l.Small.Instances())), num(bs.Perf.QPS), ratio(b.Perf.QPS, bs.Perf.QPS))
	}
	if b, f := l.Server("berth"), l.Server("file"); b.Load.P99 > 0 && f.Load.P99 > 0 {
		if b.AtRate != nil && f.AtRate != nil {
			p("| 5 | p99 latency at %s instances under the same load: %s q/s for both, open loop (loader, %d in flight; half what the slower answered closed loop) | %s | file plugin, same records, Corefile and load: %s | **%s** (goal ≤ 1.00x) |\n",
				n, num(l.EqualRate), l.Env.Loader.Concurrency, ms(b.AtRate.Load.P99), ms(f.AtRate.Load.P99), dratio(b.AtRate.Load.P99, f.AtRate.Load.P99))
		}
		p("| 5 | p99 latency at %s instances, each server at its own saturation (loader closed loop, %d in flight: berth %s q/s, file plugin %s q/s) | %s | file plugin, same records and Corefile: %s | %s |\n",
			n, l.Env.Loader.Concurrency, num(b.Load.QPS), num(f.Load.QPS), ms(b.Load.P99), ms(f.Load.P99), dratio(b.Load.P99, f.Load.P99))
	}
	if len(s.Quiet) > 0 {
		b := bytesPerChange(s.QuietBytes)
		p("| 5 | bytes from Consul per single-host change at %s hosts x %d (n=%d) | %s (%s) | the changed host's subtree, one GET: %s | %s |\n",
			num(float64(l.D.Hosts)), l.D.PerHost, len(s.Quiet), kib(b), kinds(s.QuietBytes), kib(float64(s.RawHostBytes)), ratio(b, float64(s.RawHostBytes)))
	}
	if s.ChurnMeasured {
		cd, qd := Distribution(s.Churn), Distribution(s.Quiet)
		p("| 5 | change → answer at %s hosts x %d under 1%% host churn (%d hosts each once per %s; %.0f s), p50 / p90 / p99 / max (n=%d) | %s | no churn: %s | %s (p99; goal: p99 < 1 s) |\n",
			num(float64(l.D.Hosts)), l.D.PerHost, churnHosts(s), s.ChurnIntervalText, s.ChurnSeconds, cd.N, cd, qd, dratio(cd.P99, qd.P99))
	}
}

// largeMarkdown is part 5 in detail, or that it was not measured.
func (r *Report) largeMarkdown(p printf) {
	l := r.Large
	if l == nil {
		p("## 5. A million instances\n\nNot measured: run `make bench-large` (it writes `bench/large.json`, which `make bench` renders here).\n\n")
		return
	}
	p("## 5. A million instances (from `make bench-large` on %s)\n\n", l.Env.Date)
	p("Measured by `make bench-large` (`hack/bench.sh -large`), not by the run above: its report is `bench/large.json`, rendered here; it took %s, at commit `%s` (%s), load average %s at the start and %s at the end.\n\n",
		l.Env.Total.Round(time.Second), l.Env.Commit, l.Env.Binaries, l.Env.LoadAvgStart, l.Env.LoadAvgEnd)
	if l.Env.Warning != "" {
		p("**Warning:** %s.\n\n", l.Env.Warning)
	}
	if l.Err != "" {
		p("**Not measured past this point:** %s\n\n", l.Err)
	}
	s := l.Scale
	if s == nil {
		return
	}
	p("A synthetic producer (`bench.Producer`, the exporter's own `Publisher`, one per host) wrote %s hosts x %d containers = %s instances (%s services) in KV layout 2, %d hosts at a time, in %s (%d transactions). One berth (`bin/coredns`, prometheus in its Corefile) loaded it; its zone transfer, written to `bench/out/%s.zone`, is the file plugin's zone, served with the same Corefile. Queries/s and latency are measured as in part 1 (%d rounds, medians), beside a berth on %s instances (part 1's smaller set) in the same Consul agent and run. Then the file plugin is stopped and the change figures are measured as part 3's fleet figures.\n\n",
		num(float64(l.D.Hosts)), l.D.PerHost, num(float64(l.D.Instances())), num(float64(l.D.Services())), l.Parallel, ms(s.PublishTime), s.Txns, l.D.Name, len(l.Server("berth").Rounds), num(float64(l.Small.Instances())))
	p("| figure | value |\n| --- | --- |\n")
	if len(s.FirstLoad) > 0 {
		p("| berth's first full load (process start → `ready` answers 200) | %s |\n", s.firstLoadText())
	}
	p("| the driver's List of the host index and `containers/` through the Consul API client | %s |\n", s.rawFetchText())
	p("| records indexed (`coredns_berth_records`) / in the zone transfer | %s / %s |\n", num(float64(s.Records)), num(float64(l.Records)))
	p("| AXFR from berth, written to the zone file | %s, %s |\n", ms(l.AXFRTime), mib(l.ZoneBytes))
	p("| berth RSS / live heap (after a forced GC) | %s / %s |\n", mib(s.Loaded.RSS), mib(s.Loaded.HeapAlloc))
	if l.FileErr != "" {
		p("| the file plugin on the same zone | not measured: %s |\n", l.FileErr)
	} else {
		p("| the file plugin: load (process start → first answer), RSS / live heap | %s, %s / %s |\n", ms(l.FileLoad), mib(l.FileMemory.RSS), mib(l.FileMemory.HeapAlloc))
	}
	p("| KV commit → answer, quiet, p50 / p90 / p99 / max (n=%d) | %s |\n", len(s.Quiet), Distribution(s.Quiet))
	p("| bytes read from Consul per change, quiet | %s: %s |\n", kib(bytesPerChange(s.QuietBytes)), kinds(s.QuietBytes))
	if s.ChurnMeasured {
		p("| under churn: %d hosts each change once per %s, %d changes in %.0f s, commit → answer p50 / p90 / p99 / max | %s |\n", churnHosts(s), s.ChurnIntervalText, s.ChurnChanges, s.ChurnSeconds, Distribution(s.Churn))
		p("| bytes read from Consul per second under churn | %s/s: %s |\n", kib(bytesPerChange(s.ChurnBytesPerSec)), kindsPerSec(s.ChurnBytesPerSec))
	}
	p("| one GET: the changed host's subtree / one shard's keys / the whole container prefix | %s / %s / %s |\n", kib(float64(s.RawHostBytes)), kib(float64(s.RawShardBytes)), kib(float64(s.RawPrefixBytes)))
	if l.HeapTop != "" {
		p("\n<details><summary>pprof: berth's live heap after the first load, in use (top 20; `bench/out/%s.berth.heap.pb.gz`)</summary>\n\n```\n%s```\n</details>\n", l.D.Name, l.HeapTop)
	}
	if len(l.Servers) > 0 {
		p("\n| server | q/s (dnsperf): median (min–max) | mean latency (dnsperf) | lost / sent (dnsperf) | q/s (loader) | mean | p50 | p99 | p99.9 | max | lost (loader) | rcodes (loader) | load avg before each round |\n")
		p("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
		for _, sv := range l.Servers {
			p("%s\n", serverRow(sv))
		}
		p("\nThe loader's rounds, each server's rounds in order: p99, and the garbage collections its runtime ran during the round (from its prometheus plugin). Closed loop, each server at its own saturation; open loop, every server at the same rate.\n\n")
		p("| server | closed loop: p99 (GC cycles) | open loop: rate | q/s | p50 | p99 | p99.9 | max | lost | rounds' p99 (GC cycles) |\n")
		p("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
		for _, sv := range l.Servers {
			p("| %s | %s |", sv.Server, roundsP99(sv.Loads, sv.GCs))
			if a := sv.AtRate; a != nil {
				p(" %s | %s | %s | %s | %s | %s | %d | %s |\n", num(a.Rate), num(a.Load.QPS), ms(a.Load.P50), ms(a.Load.P99), ms(a.Load.P999), ms(a.Load.Max), a.Load.Lost, roundsP99(a.Loads, a.GCs))
			} else {
				p(" not measured | | | | | | | |\n")
			}
		}
	}
	p("\n")
}

// roundsP99 is each round's p99, with the GC cycles during it when known.
func roundsP99(loads []LoadResult, gcs []int) string {
	parts := make([]string, len(loads))
	for i, l := range loads {
		parts[i] = ms(l.P99)
		if i < len(gcs) {
			parts[i] += fmt.Sprintf(" (%d)", gcs[i])
		}
	}
	return strings.Join(parts, ", ")
}
