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

	"github.com/hashicorp/consul/api"
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
	r := &scaleRun{t: t, cfg: cfg, d: cfg.D, ctx: t.Context(), rng: rand.New(rand.NewPCG(7, 7)), port: 50000,
		res: &ScaleResult{D: cfg.D, ChurnIntervalText: cfg.ChurnInterval.String()}}
	r.publish()
	r.rawCosts()
	r.startServers()
	r.quietProbes()
	r.churnProbes()
	r.queries()
	return r.res
}

// scaleRun is one run of part 3, step by step.
type scaleRun struct {
	t      *TB
	cfg    ScaleConfig
	d      Dataset
	ctx    context.Context
	res    *ScaleResult
	consul *testenv.Consul
	client *api.Client
	prod   *Producer
	s      *Server // berth serving the dataset
	rng    *rand.Rand
	port   int // the last host port a probe set
}

// publish starts Consul and writes the dataset through the producer.
func (r *scaleRun) publish() {
	t, d := r.t, r.d
	r.consul = testenv.StartConsul(t, testenv.ConsulOptions{})
	r.client = r.consul.Client()
	t.Logf("scale: publishing %d instances on %d hosts", d.Instances(), d.Hosts)
	start := time.Now()
	prod, err := NewProducer(r.client, d)
	t.Check(err, "producer")
	t.Check(prod.PublishAll(r.ctx, 8), "publish")
	r.prod = prod
	r.res.PublishTime = time.Since(start)
	r.res.Txns = prod.Stats.Txns
	t.Logf("scale: published in %s (%d transactions)", r.res.PublishTime.Round(time.Millisecond), r.res.Txns)
}

// rawCosts is what a reader of the whole prefix pays, measured by the
// driver itself: the baselines of the first load and of a change.
func (r *scaleRun) rawCosts() {
	t, d, res := r.t, r.d, r.res
	start := time.Now()
	_, _, err := r.client.KV().List(record.HostsPrefix(d.Prefix), nil)
	t.Check(err, "list hosts")
	pairs, _, err := r.client.KV().List(record.AllContainersPrefix(d.Prefix), nil)
	t.Check(err, "list containers")
	res.RawFetch = time.Since(start)
	if len(pairs) != d.Instances() {
		t.Fatalf("consul holds %d container documents, want %d", len(pairs), d.Instances())
	}
	res.RawPrefixBytes = bodySize(t, r.consul.HTTP, record.AllContainersPrefix(d.Prefix))
	res.RawHostBytes = bodySize(t, r.consul.HTTP, record.ContainersPrefix(d.Prefix, d.HostName(d.Hosts/2)))
	res.RawHostsBytes = bodySize(t, r.consul.HTTP, record.HostsPrefix(d.Prefix))
}

// startServers measures an empty berth (the memory baseline) and the first
// load of the dataset.
func (r *scaleRun) startServers() {
	t, res := r.t, r.res
	empty := StartBerth(t, r.consul.HTTP, "empty-prefix", ServerOptions{})
	ready, err := empty.WaitReady(time.Minute)
	t.Check(err, "empty berth")
	res.EmptyLoad = ready.Sub(empty.Started)
	res.Empty, err = empty.Memory()
	t.Check(err, "memory")

	s := StartBerth(t, r.consul.HTTP, r.d.Prefix, ServerOptions{Metrics: true})
	ready, err = s.WaitReady(5 * time.Minute)
	t.Check(err, "berth")
	r.s = s
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
}

// probe changes host h's container c to a new host port and returns how
// long after the KV commit <container>.<host>.hosts SRV showed it.
func (r *scaleRun) probe(h int) (time.Duration, error) {
	d := r.d
	c := r.rng.IntN(d.PerHost)
	r.port++
	qname := d.ContainerName(h, c) + "." + d.HostName(h) + ".hosts." + Zone
	if err := r.prod.SetHostPort(r.ctx, h, c, r.port); err != nil {
		return 0, err
	}
	committed := time.Now()
	want := uint16(r.port)
	seen, err := pollDNS(r.ctx, r.s.Addr, qname, time.Millisecond, 30*time.Second, func(m *dns.Msg) bool {
		for _, rr := range m.Answer {
			if srv, ok := rr.(*dns.SRV); ok && srv.Port == want {
				return true
			}
		}
		return false
	})
	return seen.Sub(committed), err
}

// probeHost is the host of probe i: neither churning nor probed twice in a
// row.
func (r *scaleRun) probeHost(i int) int {
	return r.cfg.ChurnHosts + (i*37)%(r.d.Hosts-r.cfg.ChurnHosts)
}

// bytesNow is berth's count of bytes read from Consul, by request kind.
func (r *scaleRun) bytesNow() map[string]float64 {
	m, err := r.s.Scrape("coredns_berth_consul_received_bytes_total")
	r.t.Check(err, "scrape")
	out := map[string]float64{}
	for k, v := range m {
		out[trimLabel(k)] = v
	}
	return out
}

// probes runs the probes of one series, at least 5, within the budget,
// starting at probe number first.
func (r *scaleRun) probes(first int, what string) []time.Duration {
	var lats []time.Duration
	budget := time.Now().Add(r.cfg.ProbeBudget)
	for i := 0; i < r.cfg.Probes && (i < 5 || time.Now().Before(budget)); i++ {
		lat, err := r.probe(r.probeHost(first + i))
		r.t.Check(err, what)
		lats = append(lats, lat)
		time.Sleep(50 * time.Millisecond)
	}
	return lats
}

// quietProbes measures change -> answer, and the bytes read per change,
// with nothing else changing.
func (r *scaleRun) quietProbes() {
	time.Sleep(time.Second)
	before := r.bytesNow()
	r.res.Quiet = r.probes(0, "quiet probe")
	time.Sleep(500 * time.Millisecond)
	after := r.bytesNow()
	r.res.QuietBytes = map[string]float64{}
	for k, v := range after {
		r.res.QuietBytes[k] = (v - before[k]) / float64(len(r.res.Quiet))
	}
}

// churnProbes measures the same while ChurnHosts hosts each change one
// container every interval.
func (r *scaleRun) churnProbes() {
	t, cfg, d, res := r.t, r.cfg, r.d, r.res
	t.Logf("scale: churn on %d hosts every %s", cfg.ChurnHosts, cfg.ChurnInterval)
	cctx, stop := context.WithCancel(r.ctx)
	var wg sync.WaitGroup
	var changes atomic.Int64
	var churnErr atomic.Value
	for h := range cfg.ChurnHosts {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(h), 11))
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
				if err := r.prod.SetHostPort(cctx, h, rng.IntN(d.PerHost), 30000+rng.IntN(10000)); err != nil {
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
	before := r.bytesNow()
	c0, t0 := changes.Load(), time.Now()
	res.Churn = r.probes(cfg.Probes, "probe under churn")
	after := r.bytesNow()
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
}

// queries measures queries per second at this size. Loading the dataset
// again for a server without the prometheus plugin would double the
// longest step of the run, so this server (with prometheus in its query
// path) is measured, against part 1's "berth+metrics" row. One more
// change, seen, makes sure the watcher has caught up with the churn first.
func (r *scaleRun) queries() {
	t, cfg, d := r.t, r.cfg, r.d
	if _, err := r.probe(r.probeHost(2 * cfg.Probes)); err != nil {
		t.Fatalf("catching up after churn: %v", err)
	}
	time.Sleep(time.Second)
	qs := d.Queries(cfg.Query.NQueries, Zone)
	qfile := filepath.Join(cfg.Query.OutDir, d.Name+".queries")
	t.Check(WriteQueryFile(qfile, qs), "query file")
	r.res.Server = measureRounds(t, d.Name, cfg.Query, []target{{"berth+metrics", r.s.Addr, qfile, qs}})[0]
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
