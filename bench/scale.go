package bench

import (
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
)

// ScaleConfig is how part 3 measures.
type ScaleConfig struct {
	D             Dataset
	ChurnHosts    int           // hosts that change continuously (1%)
	ChurnInterval time.Duration // each churning host changes one container this often
	Probes        int           // measured changes, quiet and under churn each
	ProbeBudget   time.Duration // ... unless this time is up (at least 5 each)
	Query         QueryConfig
}

// ScaleResult is part 3 (without the exporter figures).
type ScaleResult struct {
	D                 Dataset
	PublishTime       time.Duration
	Txns              int
	RawFetch          time.Duration   // the driver's own List of hosts/ and containers/ through the Consul API
	RawPrefixBytes    int64           // HTTP body of one GET of <prefix>/containers/?recurse
	RawHostBytes      int64           // ... of one host's <prefix>/containers/<host>/?recurse
	RawHostsBytes     int64           // ... of <prefix>/hosts/?recurse
	FirstLoad         []time.Duration // process start -> ready
	FirstServing      time.Duration   // process start -> first answer (SERVFAIL), the first sample
	EmptyLoad         time.Duration   // the same for a berth with nothing to load
	Empty, Loaded     Memory
	Quiet, Churn      []time.Duration    // KV commit -> answer changed
	QuietBytes        map[string]float64 // per change, by request kind
	ChurnChanges      int64
	ChurnBytesPerSec  map[string]float64
	ChurnSeconds      float64
	Records           int64
	Server            ServerResult // queries/s and latency at this size, measured like part 1
	ChurnIntervalText string
}

// RunScale is part 3: a synthetic producer writes 1,000 hosts x 100
// containers through the exporter's Publisher; berth loads them, and is
// measured for load time, memory, change latency quiet and under 1% host
// churn, bytes per change, and queries/s.
func RunScale(t *TB, cfg ScaleConfig) *ScaleResult {
	ctx := t.Context()
	d := cfg.D
	res := &ScaleResult{D: d, ChurnIntervalText: cfg.ChurnInterval.String()}
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	client := consul.Client()

	t.Logf("scale: publishing %d instances on %d hosts", d.Instances(), d.Hosts)
	start := time.Now()
	prod, err := NewProducer(client, d)
	t.Check(err, "producer")
	t.Check(prod.PublishAll(ctx, 8), "publish")
	res.PublishTime = time.Since(start)
	res.Txns = prod.Stats.Txns
	t.Logf("scale: published in %s (%d transactions)", res.PublishTime.Round(time.Millisecond), res.Txns)

	// What a reader of the whole prefix pays, measured by the driver.
	start = time.Now()
	_, _, err = client.KV().List(record.HostsPrefix(d.Prefix), nil)
	t.Check(err, "list hosts")
	pairs, _, err := client.KV().List(record.AllContainersPrefix(d.Prefix), nil)
	t.Check(err, "list containers")
	res.RawFetch = time.Since(start)
	if len(pairs) != d.Instances() {
		t.Fatalf("consul holds %d container documents, want %d", len(pairs), d.Instances())
	}
	res.RawPrefixBytes = bodySize(t, consul.HTTP, record.AllContainersPrefix(d.Prefix))
	res.RawHostBytes = bodySize(t, consul.HTTP, record.ContainersPrefix(d.Prefix, d.HostName(d.Hosts/2)))
	res.RawHostsBytes = bodySize(t, consul.HTTP, record.HostsPrefix(d.Prefix))

	// Memory of a berth with nothing to serve: the baseline.
	empty := StartBerth(t, consul.HTTP, "empty-prefix", ServerOptions{})
	ready, err := empty.WaitReady(time.Minute)
	t.Check(err, "empty berth")
	res.EmptyLoad = ready.Sub(empty.Started)
	res.Empty, err = empty.Memory()
	t.Check(err, "memory")

	s := StartBerth(t, consul.HTTP, d.Prefix, ServerOptions{Metrics: true})
	ready, err = s.WaitReady(5 * time.Minute)
	t.Check(err, "berth")
	res.FirstLoad = append(res.FirstLoad, ready.Sub(s.Started))
	res.FirstServing = s.Serving.Sub(s.Started)
	t.Logf("scale: first load %s", res.FirstLoad[0].Round(time.Millisecond))
	res.Loaded, err = s.Memory()
	t.Check(err, "memory")
	if recs, err := s.Scrape("coredns_berth_records"); err == nil {
		for _, v := range recs {
			res.Records = int64(v)
		}
	}

	// Changes: host h's container c gets a new host port; the answer for
	// <container>.<host>.hosts SRV shows it.
	rng := rand.New(rand.NewPCG(7, 7))
	port := 50000
	probe := func(h int) (time.Duration, error) {
		c := rng.IntN(d.PerHost)
		port++
		qname := d.ContainerName(h, c) + "." + d.HostName(h) + ".hosts." + Zone
		if err := prod.SetHostPort(ctx, h, c, port); err != nil {
			return 0, err
		}
		committed := time.Now()
		want := uint16(port)
		seen, err := pollDNS(ctx, s.Addr, qname, time.Millisecond, 30*time.Second, func(r *dns.Msg) bool {
			for _, rr := range r.Answer {
				if srv, ok := rr.(*dns.SRV); ok && srv.Port == want {
					return true
				}
			}
			return false
		})
		return seen.Sub(committed), err
	}
	// Hosts that neither churn nor are probed twice in a row.
	probeHost := func(i int) int { return cfg.ChurnHosts + (i*37)%(d.Hosts-cfg.ChurnHosts) }

	bytesNow := func() map[string]float64 {
		m, err := s.Scrape("coredns_berth_consul_received_bytes_total")
		t.Check(err, "scrape")
		out := map[string]float64{}
		for k, v := range m {
			out[trimLabel(k)] = v
		}
		return out
	}
	time.Sleep(time.Second)
	before := bytesNow()
	budget := time.Now().Add(cfg.ProbeBudget)
	for i := 0; i < cfg.Probes && (i < 5 || time.Now().Before(budget)); i++ {
		lat, err := probe(probeHost(i))
		t.Check(err, "quiet probe")
		res.Quiet = append(res.Quiet, lat)
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	after := bytesNow()
	res.QuietBytes = map[string]float64{}
	for k, v := range after {
		res.QuietBytes[k] = (v - before[k]) / float64(len(res.Quiet))
	}

	// Churn: ChurnHosts hosts each change one container every interval.
	t.Logf("scale: churn on %d hosts every %s", cfg.ChurnHosts, cfg.ChurnInterval)
	cctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var changes atomic.Int64
	var churnErr atomic.Value
	for h := range cfg.ChurnHosts {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(h), 11))
			tick := time.NewTicker(cfg.ChurnInterval)
			defer tick.Stop()
			// Spread the hosts over the interval.
			time.Sleep(time.Duration(h) * cfg.ChurnInterval / time.Duration(cfg.ChurnHosts))
			for {
				select {
				case <-cctx.Done():
					return
				case <-tick.C:
				}
				if err := prod.SetHostPort(cctx, h, r.IntN(d.PerHost), 30000+r.IntN(10000)); err != nil {
					if cctx.Err() == nil {
						churnErr.Store(err)
					}
					return
				}
				changes.Add(1)
			}
		})
	}
	time.Sleep(2 * time.Second) // let churn reach its steady state
	before = bytesNow()
	c0, t0 := changes.Load(), time.Now()
	budget = time.Now().Add(cfg.ProbeBudget)
	for i := 0; i < cfg.Probes && (i < 5 || time.Now().Before(budget)); i++ {
		lat, err := probe(probeHost(i + cfg.Probes))
		t.Check(err, "probe under churn")
		res.Churn = append(res.Churn, lat)
		time.Sleep(50 * time.Millisecond)
	}
	after = bytesNow()
	res.ChurnSeconds = time.Since(t0).Seconds()
	res.ChurnChanges = changes.Load() - c0
	stop()
	wg.Wait()
	if err, ok := churnErr.Load().(error); ok {
		t.Fatalf("churn: %v", err)
	}
	res.ChurnBytesPerSec = map[string]float64{}
	for k, v := range after {
		res.ChurnBytesPerSec[k] = (v - before[k]) / res.ChurnSeconds
	}

	// Queries per second at this size. Loading 100,000 instances again
	// for a server without the prometheus plugin would double the longest
	// step of the run, so this server (with prometheus in its query path)
	// is measured, against part 1's "berth+metrics" row. One more change,
	// seen, makes sure the watcher has caught up with the churn first.
	if _, err := probe(probeHost(2 * cfg.Probes)); err != nil {
		t.Fatalf("catching up after churn: %v", err)
	}
	time.Sleep(time.Second)
	q := s
	qs := d.Queries(cfg.Query.NQueries, Zone)
	qfile := filepath.Join(cfg.Query.OutDir, d.Name+".queries")
	t.Check(WriteQueryFile(qfile, qs), "query file")
	res.Server = measureRounds(t, d.Name, cfg.Query, []target{{"berth+metrics", q.Addr, qfile, qs}})[0]
	return res
}

// bodySize is the length of Consul's response body for a recursive GET of
// prefix, uncompressed.
func bodySize(t *TB, consulHTTP, prefix string) int64 {
	req, _ := http.NewRequest("GET", "http://"+consulHTTP+"/v1/kv/"+prefix+"?recurse=true", nil)
	resp, err := http.DefaultTransport.RoundTrip(req)
	t.Check(err, "GET "+prefix)
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	t.Check(err, "GET "+prefix)
	return n
}

func trimLabel(l string) string {
	_, v, _ := strings.Cut(l, `"`)
	v, _, _ = strings.Cut(v, `"`)
	return v
}
