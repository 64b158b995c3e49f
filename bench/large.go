package bench

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
)

// LargeConfig is how `make bench-large` measures (issue 11): a million
// instances, 10,000 hosts x 100 containers, in KV layout 2.
type LargeConfig struct {
	D     Dataset // the large dataset
	Small Dataset // the baseline of queries/s: part 1's 3,000 instances
	// Parallel is PublishAll's parallelism.
	Parallel int
	// The file plugin's load of berth's AXFR: at most FileTimeout, and at
	// most FileMaxRSS resident, else it is stopped and that is the figure.
	FileTimeout time.Duration
	FileMaxRSS  int64
	// 1% host churn: each of D.Hosts/100 hosts changes once per
	// ChurnInterval, measured for ChurnDuration.
	ChurnInterval, ChurnDuration time.Duration
	Probes                       int // quiet changes measured
	ProbeBudget                  time.Duration
	Query                        QueryConfig
}

// LargeResult is the large run, saved as bench/large.json and rendered by
// `make bench` as section 5.
type LargeResult struct {
	Env       Env
	D         Dataset
	Small     Dataset
	Parallel  int
	Scale     *ScaleResult // publish, the driver's List, first load, memory, bytes and latency per change
	Records   int64        // resource records in berth's AXFR
	AXFRTime  time.Duration
	ZoneBytes int64 // the zone file written from it
	// The file plugin on berth's AXFR: its load (process start -> first
	// answer) and memory, or why it could not be measured.
	FileLoad   time.Duration
	FileMemory Memory
	FileErr    string
	// dnsperf and the loader, as part 1: berth at D, berth at Small (same
	// Corefile), the file plugin at D (same Corefile).
	Servers []ServerResult
	// EqualRate is the rate at which berth and the file plugin are both
	// measured open loop (ServerResult.AtRate), 0 if not.
	EqualRate float64
	// Where berth's live heap goes at this size: `go tool pprof -top` of
	// its heap profile (in use, after the first load).
	HeapTop string
	Err     string // the run failed here; the figures before it stand
}

// Server returns the named server's result.
func (r *LargeResult) Server(name string) *ServerResult {
	for i := range r.Servers {
		if r.Servers[i].Server == name {
			return &r.Servers[i]
		}
	}
	return &ServerResult{Server: name}
}

// RunLarge is `make bench-large`: it fills res step by step, so that a
// failure leaves the figures measured before it.
func RunLarge(t *TB, cfg LargeConfig, res *LargeResult) {
	ctx := t.Context()
	d := cfg.D
	res.D, res.Small, res.Parallel = d, cfg.Small, cfg.Parallel
	r := newScaleRun(t, ScaleConfig{D: d, Mode: record.WriteV2, ChurnHosts: max(1, d.Hosts/100),
		ChurnInterval: cfg.ChurnInterval, ChurnDuration: cfg.ChurnDuration,
		Probes: cfg.Probes, ProbeBudget: cfg.ProbeBudget, PublishParallel: cfg.Parallel})
	res.Scale = r.res
	r.publish()
	r.rawCosts()
	// The driver's own List held the whole prefix (gigabytes at this
	// size): give it back before the servers need the memory.
	debug.FreeOSMemory()
	r.startLoaded()
	heap := filepath.Join(cfg.Query.OutDir, d.Name+".berth.heap.pb.gz")
	b, err := httpGetTimeout("http://"+r.s.Pprof+"/debug/pprof/heap", 5*time.Minute)
	t.Check(err, "heap profile")
	t.Check(os.WriteFile(heap, b, 0o644), "heap profile")
	res.HeapTop = PprofTop(heap, 20, "-sample_index=inuse_space")

	// Berth's own AXFR, straight to the zone file: ten million records
	// are not held in the driver.
	zonefile := filepath.Join(cfg.Query.OutDir, d.Name+".zone")
	start := time.Now()
	n, size, err := axfrToFile(r.s.Addr, Zone, zonefile)
	t.Check(err, "AXFR from berth")
	res.AXFRTime, res.Records, res.ZoneBytes = time.Since(start), n, size
	t.Logf("%s: AXFR of %d records (%s) in %s", d.Name, n, mib(size), res.AXFRTime.Round(time.Millisecond))

	file, load, err := startBigFile(t, zonefile, cfg.FileTimeout, cfg.FileMaxRSS)
	res.FileLoad = load
	if err != nil {
		res.FileErr = err.Error()
		t.Logf("%s: file plugin: %v", d.Name, err)
	} else {
		res.FileMemory, err = file.Memory()
		t.Check(err, "file memory")
		t.Logf("%s: file plugin loaded in %s, %s RSS", d.Name, load.Round(time.Millisecond), mib(res.FileMemory.RSS))
	}

	// The baseline of queries/s: 3,000 instances in the same Consul, the
	// same Corefile (prometheus included, as the large berth's).
	sp, err := NewProducer(r.client, cfg.Small, record.WriteV2)
	t.Check(err, "producer")
	t.Check(sp.PublishAll(ctx, 8), "publish the small set")
	small := StartBerth(t, r.consul.HTTP, cfg.Small.Prefix, ServerOptions{Metrics: true})
	_, err = small.WaitReady(2 * time.Minute)
	t.Check(err, "small berth")

	qs := d.Queries(cfg.Query.NQueries, Zone)
	qfile := filepath.Join(cfg.Query.OutDir, d.Name+".queries")
	t.Check(WriteQueryFile(qfile, qs), "query file")
	sqs := cfg.Small.Queries(cfg.Query.NQueries, Zone)
	sqfile := filepath.Join(cfg.Query.OutDir, cfg.Small.Name+".large-baseline.queries")
	t.Check(WriteQueryFile(sqfile, sqs), "query file")
	targets := []target{{"berth", r.s.Addr, qfile, qs, r.s}, {"berth-small", small.Addr, sqfile, sqs, small}}
	if file != nil {
		targets = append(targets, target{"file", file.Addr, qfile, qs, file})
	}
	res.Servers = measureRounds(t, d.Name, cfg.Query, targets)
	if b, f := res.Server("berth"), res.Server("file"); b.Load.QPS > 0 && f.Load.QPS > 0 {
		// The same load for both, at half of what the slower of the two
		// answered closed loop: under load, short of saturation.
		res.EqualRate = math.Round(min(b.Load.QPS, f.Load.QPS)/2/100) * 100
		measureAtRate(t, d.Name, cfg.Query, []target{targets[0], targets[2]}, res.EqualRate, res.Servers)
	}
	if file != nil {
		file.stop() // its memory back before the churn
	}

	r.quietProbes()
	r.churnProbes()
}

// axfrToFile transfers zone from addr into a zone file, record by record,
// and returns the records and bytes written (the closing SOA left out).
func axfrToFile(addr, zone, path string) (records, size int64, err error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	m := new(dns.Msg)
	m.SetAxfr(zone)
	tr := &dns.Transfer{ReadTimeout: 5 * time.Minute}
	ch, err := tr.In(m, addr)
	if err != nil {
		return 0, 0, err
	}
	for env := range ch {
		if env.Error != nil {
			return records, size, env.Error
		}
		for _, rr := range env.RR {
			if rr.Header().Rrtype == dns.TypeSOA && records > 0 {
				continue // the transfer ends with the SOA again
			}
			k, _ := w.WriteString(rr.String())
			_ = w.WriteByte('\n')
			records++
			size += int64(k) + 1
		}
	}
	if err := w.Flush(); err != nil {
		return records, size, err
	}
	return records, size, f.Close()
}

// startBigFile runs bin/coredns with the file plugin on a zone too large
// for testenv.StartCoreDNS's 20 s start-up: the file plugin parses the
// whole zone before the server listens. It returns the server once it
// answers, and how long after the start that was; it stops the server and
// says why when it has not answered within timeout, or its resident memory
// went over maxRSS (the machine is shared with berth and Consul).
func startBigFile(t *TB, zonefile string, timeout time.Duration, maxRSS int64) (*Server, time.Duration, error) {
	ports := testenv.FreePorts(t, 4)
	s := &Server{Name: "file",
		Addr:    "127.0.0.1:" + strconv.Itoa(ports[0]),
		Pprof:   "127.0.0.1:" + strconv.Itoa(ports[1]),
		Ready:   "127.0.0.1:" + strconv.Itoa(ports[2]),
		Metrics: "127.0.0.1:" + strconv.Itoa(ports[3])}
	stanza := fmt.Sprintf("file %s {\n        reload 0\n    }", zonefile)
	path := filepath.Join(t.TempDir(), "Corefile")
	if err := os.WriteFile(path, []byte(corefile(s, stanza, ServerOptions{Metrics: true})), 0o644); err != nil {
		return nil, 0, err
	}
	out := &testenv.LockedBuffer{}
	cmd := exec.Command(testenv.CoreDNSBinary(t), "-conf", path, "-dns.port", strconv.Itoa(ports[0]))
	cmd.Env = append(os.Environ(), CoreDNSEnv...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	s.Started = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, 0, err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.out = out
	s.stop = func() {
		_ = cmd.Process.Kill()
		<-done
	}
	t.Cleanup(s.stop)
	c := &dns.Client{Timeout: 500 * time.Millisecond}
	var peak int64
	for {
		m := new(dns.Msg)
		m.SetQuestion("berth-probe.invalid.", dns.TypeA)
		if _, _, err := c.Exchange(m, s.Addr); err == nil {
			s.Serving = time.Now()
			return s, s.Serving.Sub(s.Started), nil
		}
		el := time.Since(s.Started)
		rss := processRSS(cmd.Process.Pid)
		peak = max(peak, rss)
		select {
		case <-done:
			return nil, el, fmt.Errorf("the file plugin exited after %s (peak RSS %s): %s", el.Round(time.Second), mib(peak), lastLinesOf(out.String(), 3))
		default:
		}
		if rss > maxRSS {
			s.stop()
			return nil, el, fmt.Errorf("the file plugin went over %s resident after %s, still loading: stopped", mib(maxRSS), el.Round(time.Second))
		}
		if el > timeout {
			s.stop()
			return nil, el, fmt.Errorf("the file plugin did not answer within %s (RSS %s): stopped", timeout, mib(rss))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func lastLinesOf(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " / ")
}
