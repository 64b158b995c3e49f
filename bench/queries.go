package bench

import (
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
)

// QueryConfig is how part 1 measures.
type QueryConfig struct {
	Perf     DNSPerf
	Loader   Loader
	NQueries int           // distinct queries in the data file
	OutDir   string        // raw outputs: query files, zone file, profiles
	Profile  time.Duration // CPU/allocs profile length; 0: none
	Rounds   int           // interleaved rounds per server; the median is reported
	// WithMetrics also measures a berth whose Corefile adds the prometheus
	// plugin, the Corefile of part 3's server.
	WithMetrics bool
}

// ServerResult is one server's figures on one dataset: every round, and
// the median rounds (dnsperf by queries/s, loader by p99).
type ServerResult struct {
	Server   string
	Perf     PerfResult
	Load     LoadResult
	Rounds   []PerfResult
	Loads    []LoadResult
	LoadAvgs []string // /proc/loadavg before each dnsperf round: other work on the machine shows here
	Lost     int      // dnsperf's lost queries over all rounds
	Sent     int
	// GCs is how many garbage collections the server's Go runtime ran
	// during each loader round (the tail's usual cause on a large heap),
	// nil for a server without metrics.
	GCs []int
	// AtRate is the open loop's rounds (see measureAtRate), if measured.
	AtRate *RateResult `json:",omitempty"`
}

// RateResult is one server's loader rounds at a fixed rate, the same for
// every server measured: the median round by p99, every round, and the
// garbage collections during each.
type RateResult struct {
	Rate  float64
	Load  LoadResult
	Loads []LoadResult
	GCs   []int
}

// QPSRange is the lowest and highest queries/s of the rounds.
func (s *ServerResult) QPSRange() (lo, hi float64) {
	for i, r := range s.Rounds {
		if i == 0 || r.QPS < lo {
			lo = r.QPS
		}
		if r.QPS > hi {
			hi = r.QPS
		}
	}
	return lo, hi
}

type target struct {
	name, addr, qfile string
	qs                []Query
	metrics           *Server // the server, to count its GC cycles; nil without metrics
}

// loadRound is one loader run on tg, and how many GC cycles the server ran
// during it (-1 when it has no metrics to say).
func loadRound(t *TB, l Loader, tg target) (LoadResult, int) {
	gcs := func() float64 {
		if tg.metrics == nil || tg.metrics.Metrics == "" {
			return -1
		}
		m, err := tg.metrics.Scrape("go_gc_duration_seconds_count")
		if err != nil {
			return -1
		}
		return m[""]
	}
	before := gcs()
	load, err := l.Run(t.Context(), tg.addr, tg.qs)
	t.Check(err, tg.name+" loader")
	after := gcs()
	if before < 0 || after < 0 {
		return load, -1
	}
	return load, int(after - before)
}

// measureRounds runs cfg.Rounds rounds; each round runs dnsperf, then the
// loader, on every target, starting from a different target each round, so
// that a burst of other work on the machine hits each server alike. The
// reported figure is the median round.
func measureRounds(t *TB, set string, cfg QueryConfig, targets []target) []ServerResult {
	ctx := t.Context()
	out := make([]ServerResult, len(targets))
	for i, tg := range targets {
		out[i].Server = tg.name
		// A second of warm-up, not counted.
		_, _ = Loader{Concurrency: 4, Duration: time.Second, Timeout: time.Second}.Run(ctx, tg.addr, tg.qs)
	}
	for round := range max(1, cfg.Rounds) {
		for k := range targets {
			i := (k + round) % len(targets)
			tg := targets[i]
			r := &out[i]
			r.LoadAvgs = append(r.LoadAvgs, loadAvg())
			perf, err := cfg.Perf.Run(ctx, tg.addr, tg.qfile)
			t.Check(err, tg.name)
			load, gcs := loadRound(t, cfg.Loader, tg)
			r.Rounds = append(r.Rounds, perf)
			r.Loads = append(r.Loads, load)
			if gcs >= 0 {
				r.GCs = append(r.GCs, gcs)
			}
			r.Lost += perf.Lost
			r.Sent += perf.Sent
			t.Logf("%s: round %d: %s: %.0f q/s (dnsperf), loader %.0f q/s p99 %s", set, round+1, tg.name, perf.QPS, load.QPS, load.P99)
		}
	}
	for i := range out {
		r := &out[i]
		perfs := slices.Clone(r.Rounds)
		slices.SortFunc(perfs, func(a, b PerfResult) int { return cmp.Compare(a.QPS, b.QPS) })
		r.Perf = perfs[len(perfs)/2]
		r.Load = medianByP99(r.Loads)
	}
	return out
}

func medianByP99(loads []LoadResult) LoadResult {
	sorted := slices.Clone(loads)
	slices.SortFunc(sorted, func(a, b LoadResult) int { return cmp.Compare(a.P99, b.P99) })
	return sorted[len(sorted)/2]
}

// measureAtRate runs the loader open loop at rate queries a second on every
// target, in cfg.Rounds interleaved rounds as measureRounds does, and adds
// each target's rounds to its result in out (by name). Closed, the loop
// asks a faster server more queries, so its tail is measured at a higher
// load than a slower server's; at one rate for all, the tails compare
// under the same load.
func measureAtRate(t *TB, set string, cfg QueryConfig, targets []target, rate float64, out []ServerResult) {
	l := cfg.Loader
	l.Rate = rate
	res := make([]*RateResult, len(targets))
	for i := range targets {
		res[i] = &RateResult{Rate: rate}
		for k := range out {
			if out[k].Server == targets[i].name {
				out[k].AtRate = res[i]
			}
		}
	}
	for round := range max(1, cfg.Rounds) {
		for k := range targets {
			i := (k + round) % len(targets)
			load, gcs := loadRound(t, l, targets[i])
			res[i].Loads = append(res[i].Loads, load)
			if gcs >= 0 {
				res[i].GCs = append(res[i].GCs, gcs)
			}
			t.Logf("%s: round %d at %.0f q/s: %s: loader %.0f q/s p99 %s, %d lost, %d GC cycles", set, round+1, rate, targets[i].name, load.QPS, load.P99, load.Lost, gcs)
		}
	}
	for _, r := range res {
		r.Load = medianByP99(r.Loads)
	}
}

// QueryResult is part 1 on one dataset.
type QueryResult struct {
	D             Dataset
	PublishTime   time.Duration
	CatalogTime   time.Duration
	Records       int // resource records in berth's zone transfer
	FirstLoad     time.Duration
	Memory        Memory
	FileMemory    Memory
	Checked       int
	Differ        int
	DiffExample   string
	Servers       []ServerResult // berth, file, consul
	BerthCPUTop   string
	BerthAllocTop string
	BerthPeek     string // the plugin's ServeDNS and what it calls
	FilePeek      string
	FileCPUTop    string
	ConsulDNS     string // Consul's DNS settings as the agent reports them
}

// Server returns the named server's result.
func (r *QueryResult) Server(name string) *ServerResult {
	for i := range r.Servers {
		if r.Servers[i].Server == name {
			return &r.Servers[i]
		}
	}
	return &ServerResult{Server: name}
}

// RunQueries is part 1 on dataset d: load it into Consul (KV through the
// exporter's Publisher, and the catalog), serve it with berth, with the
// file plugin from berth's own zone transfer, and with Consul's DNS
// interface, and measure each in turn with dnsperf and the Loader on the
// same query mix.
func RunQueries(t *TB, d Dataset, cfg QueryConfig) *QueryResult {
	ctx := t.Context()
	res := &QueryResult{D: d}
	consul := testenv.StartConsul(t, testenv.ConsulOptions{DNS: true})
	client := consul.Client()

	t.Logf("%s: publishing %d instances on %d hosts", d.Name, d.Instances(), d.Hosts)
	start := time.Now()
	prod, err := NewProducer(client, d, record.WriteV2)
	t.Check(err, "producer")
	t.Check(prod.PublishAll(ctx, 8), "publish")
	res.PublishTime = time.Since(start)
	start = time.Now()
	t.Check(d.RegisterCatalog(ctx, client, 16), "catalog")
	res.CatalogTime = time.Since(start)
	t.Logf("%s: KV %s, catalog %s", d.Name, res.PublishTime.Round(time.Millisecond), res.CatalogTime.Round(time.Millisecond))
	res.ConsulDNS = consulDNSConfig(consul)

	qs := d.Queries(cfg.NQueries, Zone)
	cqs := d.ConsulQueries(cfg.NQueries)
	qfile := filepath.Join(cfg.OutDir, d.Name+".queries")
	cqfile := filepath.Join(cfg.OutDir, d.Name+".consul.queries")
	t.Check(WriteQueryFile(qfile, qs), "query file")
	t.Check(WriteQueryFile(cqfile, cqs), "query file")

	berth := StartBerth(t, consul.HTTP, d.Prefix, ServerOptions{})
	ready, err := berth.WaitReady(2 * time.Minute)
	t.Check(err, "berth")
	res.FirstLoad = ready.Sub(berth.Started)
	res.Memory, err = berth.Memory()
	t.Check(err, "berth memory")

	rrs, err := AXFR(berth.Addr, Zone)
	t.Check(err, "AXFR from berth")
	res.Records = len(rrs)
	zonefile := filepath.Join(cfg.OutDir, d.Name+".zone")
	t.Check(WriteZoneFile(zonefile, rrs), "zone file")
	file := StartFile(t, zonefile, ServerOptions{})
	_, err = file.WaitReady(2 * time.Minute)
	t.Check(err, "file")
	res.FileMemory, err = file.Memory()
	t.Check(err, "file memory")

	res.Checked, res.Differ, res.DiffExample, err = SameAnswers(berth.Addr, file.Addr, qs, 400)
	t.Check(err, "comparing answers")
	checkConsul(t, "127.0.0.1:"+fmt.Sprint(consul.DNSPort), cqs)

	targets := []target{
		{"berth", berth.Addr, qfile, qs, nil},
		{"file", file.Addr, qfile, qs, nil},
		{"consul", "127.0.0.1:" + fmt.Sprint(consul.DNSPort), cqfile, cqs, nil},
	}
	if cfg.WithMetrics {
		bm := StartBerth(t, consul.HTTP, d.Prefix, ServerOptions{Metrics: true})
		_, err := bm.WaitReady(2 * time.Minute)
		t.Check(err, "berth+metrics")
		targets = append(targets, target{"berth+metrics", bm.Addr, qfile, qs, bm})
	}
	res.Servers = measureRounds(t, d.Name, cfg, targets)
	if cfg.Profile > 0 {
		profile := func(s *Server, focus string) (string, string, string) {
			t.Logf("%s: profiling %s under dnsperf", d.Name, s.Name)
			perf := cfg.Perf
			perf.Duration = cfg.Profile + 3*time.Second
			done := make(chan error, 1)
			go func() {
				_, err := perf.Run(ctx, s.Addr, qfile)
				done <- err
			}()
			time.Sleep(time.Second)
			cpu, allocs, err := s.Profile(ctx, cfg.OutDir, d.Name+"."+s.Name, cfg.Profile)
			t.Check(err, "profile")
			t.Check(<-done, "dnsperf while profiling")
			return PprofTop(cpu, 25), PprofTop(allocs, 15, "-sample_index=alloc_space"), Pprof(cpu, "-peek", focus)
		}
		res.BerthCPUTop, res.BerthAllocTop, res.BerthPeek = profile(berth, `plugin\.\(\*Berth\)\.ServeDNS$`)
		res.FileCPUTop, _, res.FilePeek = profile(file, `file\.File\.ServeDNS$`)
	}
	return res
}

// checkConsul makes sure Consul's DNS answers the mix as expected before it
// is measured: SRV and A of a service with records, NXDOMAIN for the rest.
func checkConsul(t *TB, addr string, qs []Query) {
	for _, q := range qs[:min(40, len(qs))] {
		r, err := Exchange(addr, q)
		t.Check(err, "consul DNS")
		wantNX := strings.HasPrefix(q.Name, "nx-")
		if wantNX != (r.Rcode == dns.RcodeNameError) || (!wantNX && len(r.Answer) == 0) {
			t.Fatalf("consul DNS answered %s %s with %s", q.Name, dns.TypeToString[q.Type], r)
		}
	}
}

// consulDNSConfig is the agent's DNS settings, as /v1/agent/self reports
// them.
func consulDNSConfig(c *testenv.Consul) string {
	body, err := httpGet("http://" + c.HTTP + "/v1/agent/self")
	if err != nil {
		return "unknown: " + err.Error()
	}
	var self struct {
		DebugConfig map[string]any
	}
	if err := json.Unmarshal(body, &self); err != nil {
		return "unknown: " + err.Error()
	}
	var parts []string
	for _, k := range []string{"DNSAllowStale", "DNSMaxStale", "DNSNodeTTL", "DNSServiceTTL", "DNSUseCache",
		"DNSUDPAnswerLimit", "DNSARecordLimit", "DNSEnableTruncate", "DNSOnlyPassing"} {
		if v, ok := self.DebugConfig[k]; ok {
			parts = append(parts, fmt.Sprintf("%s=%v", k, v))
		}
	}
	return strings.Join(parts, ", ")
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
