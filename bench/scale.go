package bench

import (
	"context"
	"fmt"
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
	Mode          record.WriteMode // the KV layout the producer writes (record/layout.go)
	ChurnHosts    int              // hosts that change continuously (1%)
	ChurnInterval time.Duration    // each churning host changes one container this often
	// ChurnDuration > 0 makes the churn's own changes the measured ones,
	// each timed from its commit to its answer, for this long, with no
	// probe beside them: the change rate is then exactly ChurnHosts per
	// ChurnInterval (the fleet figures, bench/fleet.go). 0: probes are
	// measured under the churn.
	ChurnDuration   time.Duration
	Probes          int           // measured changes, quiet and under churn each
	ProbeBudget     time.Duration // ... unless this time is up (at least 5 each)
	PublishParallel int           // hosts published at a time; 0: 8
	LoadRuns        int           // fresh servers whose first load is measured; 0: 1
	Query           QueryConfig
}

// ScaleResult is part 3 (without the exporter figures).
type ScaleResult struct {
	D                 Dataset
	Mode              record.WriteMode // the KV layout written
	PublishTime       time.Duration
	Txns              int
	RawFetch          time.Duration   // the driver's own List of hosts/ and containers/ through the Consul API: the median of RawFetches
	RawFetches        []time.Duration // each of those Lists, in order (rawListRuns)
	RawPrefixBytes    int64           // HTTP body of one GET of <prefix>/containers/?recurse
	RawHostBytes      int64           // ... of one host's <prefix>/containers/<host>/?recurse
	RawHostsBytes     int64           // ... of <prefix>/hosts/?recurse (layout 1's host list)
	RawShardBytes     int64           // ... of one shard's keys, <prefix>/shards/<ss>/?keys (layout 2)
	FirstLoad         []time.Duration // process start -> ready
	FirstServing      time.Duration   // process start -> first answer (SERVFAIL), the first sample
	EmptyLoad         time.Duration   // the same for a berth with nothing to load
	Empty, Loaded     Memory
	Quiet, Churn      []time.Duration    // KV commit -> answer changed
	QuietBytes        map[string]float64 // per change, by request kind
	ChurnChanges      int64
	ChurnBytesPerSec  map[string]float64
	ChurnSeconds      float64
	ChurnMeasured     bool // Churn holds the churn's own changes (ChurnDuration), not probes
	Records           int64
	Server            ServerResult // queries/s and latency at this size, measured like part 1
	ChurnIntervalText string
}

// RunScale is part 3: a synthetic producer writes 1,000 hosts x 100
// containers through the exporter's Publisher; berth loads them, and is
// measured for load time, memory, change latency quiet and under 1% host
// churn, bytes per change, and queries/s.
func RunScale(t *TB, cfg ScaleConfig) *ScaleResult {
	r := newScaleRun(t, cfg)
	r.publish()
	r.rawCosts()
	r.startEmpty()
	r.startLoaded()
	r.quietProbes()
	r.churnProbes()
	r.queries()
	return r.res
}

func newScaleRun(t *TB, cfg ScaleConfig) *scaleRun {
	return &scaleRun{t: t, cfg: cfg, d: cfg.D, ctx: t.Context(), rng: rand.New(rand.NewPCG(7, 7)), port: 50000,
		res: &ScaleResult{D: cfg.D, Mode: cfg.Mode, ChurnIntervalText: cfg.ChurnInterval.String()}}
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
	// A server stopped after its first load (LoadRuns) leaves its blocking
	// queries open in Consul until they time out, and Consul counts them
	// against the driver's address (200 connections by default).
	r.consul = testenv.StartConsul(t, testenv.ConsulOptions{ExtraHCL: `limits { http_max_conns_per_client = 2000 }`})
	r.client = r.consul.Client()
	t.Logf("%s: publishing %d instances on %d hosts, KV layout %s", d.Name, d.Instances(), d.Hosts, r.cfg.Mode)
	start := time.Now()
	prod, err := NewProducer(r.client, d, r.cfg.Mode)
	t.Check(err, "producer")
	parallel := r.cfg.PublishParallel
	if parallel <= 0 {
		parallel = 8
	}
	t.Check(prod.PublishAll(r.ctx, parallel), "publish")
	r.prod = prod
	r.res.PublishTime = time.Since(start)
	r.res.Txns = prod.Stats.Txns
	t.Logf("%s: published in %s (%d transactions)", d.Name, r.res.PublishTime.Round(time.Millisecond), r.res.Txns)
}

// rawListRuns is how many times the driver Lists the whole prefix. The
// first List after the publish can take two to four times as long as the
// next ones (side runs at 100,000 instances: 4.0-5.4 s, then 1.2-3.5 s):
// the median of three is the List a reader usually pays, not that outlier.
const rawListRuns = 3

// rawCosts is what a reader of the whole prefix pays, measured by the
// driver itself: the baselines of the first load and of a change.
func (r *scaleRun) rawCosts() {
	t, d, res := r.t, r.d, r.res
	for range rawListRuns {
		start := time.Now()
		if r.cfg.Mode.Writes(record.LayoutV1) {
			_, _, err := r.client.KV().List(record.HostsPrefix(d.Prefix), nil)
			t.Check(err, "list hosts")
		}
		if r.cfg.Mode.Writes(record.LayoutV2) {
			_, _, err := r.client.KV().List(record.ShardsPrefix(d.Prefix), nil)
			t.Check(err, "list shards")
		}
		pairs, _, err := r.client.KV().List(record.AllContainersPrefix(d.Prefix), nil)
		t.Check(err, "list containers")
		res.RawFetches = append(res.RawFetches, time.Since(start))
		if len(pairs) != d.Instances() {
			t.Fatalf("consul holds %d container documents, want %d", len(pairs), d.Instances())
		}
	}
	res.RawFetch = Distribution(res.RawFetches).P50
	mid := d.HostName(d.Hosts / 2)
	res.RawPrefixBytes = bodySize(t, r.consul.HTTP, record.AllContainersPrefix(d.Prefix), "recurse")
	res.RawHostBytes = bodySize(t, r.consul.HTTP, record.ContainersPrefix(d.Prefix, mid), "recurse")
	res.RawHostsBytes = bodySize(t, r.consul.HTTP, record.HostsPrefix(d.Prefix), "recurse")
	res.RawShardBytes = bodySize(t, r.consul.HTTP, record.ShardPrefix(d.Prefix, record.Shard(mid)), "keys")
}

// startEmpty measures a berth with nothing to load: the baseline of the
// first load and of memory.
func (r *scaleRun) startEmpty() {
	t, res := r.t, r.res
	empty := StartBerth(t, r.consul.HTTP, "empty-prefix", ServerOptions{})
	ready, err := empty.WaitReady(time.Minute)
	t.Check(err, "empty berth")
	res.EmptyLoad = ready.Sub(empty.Started)
	res.Empty, err = empty.Memory()
	t.Check(err, "memory")
}

// startLoaded starts the berth under test, with metrics, and measures its
// first load of the dataset and its memory after it. With LoadRuns > 1 it
// starts a fresh server that many times, each after the last is stopped,
// and keeps the last.
func (r *scaleRun) startLoaded() {
	t, res := r.t, r.res
	for i := range max(r.cfg.LoadRuns, 1) {
		if r.s != nil {
			r.s.Stop()
		}
		s := StartBerth(t, r.consul.HTTP, r.d.Prefix, ServerOptions{Metrics: true})
		ready, err := s.WaitReady(30 * time.Minute)
		t.Check(err, "berth")
		r.s = s
		res.FirstLoad = append(res.FirstLoad, ready.Sub(s.Started))
		if i == 0 {
			res.FirstServing = s.Serving.Sub(s.Started)
		}
		t.Logf("%s: first load %s", r.d.Name, res.FirstLoad[i].Round(time.Millisecond))
	}
	var err error
	res.Loaded, err = r.s.Memory()
	t.Check(err, "memory")
	if recs, err := r.s.Scrape("coredns_berth_records"); err == nil {
		for _, v := range recs {
			res.Records = int64(v)
		}
	}
}

// probe changes a random container of host h to a new host port and
// returns how long after the KV commit its answer showed it.
func (r *scaleRun) probe(h int) (time.Duration, error) {
	r.port++
	return r.change(r.ctx, h, r.rng.IntN(r.d.PerHost), r.port)
}

// change sets container c of host h to hostPort and returns how long after
// the KV commit <container>.<host>.hosts SRV showed it. Changes of
// different hosts may run at once.
func (r *scaleRun) change(ctx context.Context, h, c, hostPort int) (time.Duration, error) {
	d := r.d
	qname := d.ContainerName(h, c) + "." + d.HostName(h) + ".hosts." + Zone
	if err := r.prod.SetHostPort(ctx, h, c, hostPort); err != nil {
		return 0, err
	}
	committed := time.Now()
	want := uint16(hostPort)
	seen, err := pollDNS(ctx, r.s.Addr, qname, time.Millisecond, 30*time.Second, func(m *dns.Msg) bool {
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
// container every interval, spread evenly over it: probes under the churn,
// or with ChurnDuration the churn's own changes.
func (r *scaleRun) churnProbes() {
	t, cfg, d, res := r.t, r.cfg, r.d, r.res
	measured := cfg.ChurnDuration > 0
	t.Logf("%s: churn on %d hosts every %s", d.Name, cfg.ChurnHosts, cfg.ChurnInterval)
	cctx, stop := context.WithCancel(r.ctx)
	defer stop()
	var (
		wg       sync.WaitGroup
		changes  atomic.Int64
		churnErr atomic.Value
		mu       sync.Mutex
		lats     []time.Duration
	)
	var before map[string]float64
	if measured {
		before = r.bytesNow()
	}
	began := time.Now()
	t0, end := began, began.Add(cfg.ChurnDuration)
	for h := range cfg.ChurnHosts {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(h), 11))
			// Host h changes at offset, offset + interval, ...: the
			// hosts spread evenly over the interval.
			offset := time.Duration(h) * cfg.ChurnInterval / time.Duration(cfg.ChurnHosts)
			for k := 0; ; k++ {
				at := began.Add(offset + time.Duration(k)*cfg.ChurnInterval)
				if measured && !at.Before(end) {
					return
				}
				select {
				case <-cctx.Done():
					return
				case <-time.After(time.Until(at)):
				}
				// A port this host has not set before: every change is a
				// change, which a measured one needs to be seen.
				port := 30000 + k%10000
				c := rng.IntN(d.PerHost)
				var err error
				if measured {
					var lat time.Duration
					lat, err = r.change(cctx, h, c, port)
					if err == nil {
						mu.Lock()
						lats = append(lats, lat)
						mu.Unlock()
					}
				} else {
					err = r.prod.SetHostPort(cctx, h, c, port)
				}
				if err != nil {
					if cctx.Err() == nil {
						churnErr.Store(fmt.Errorf("host %s: %w", d.HostName(h), err))
					}
					return
				}
				changes.Add(1)
			}
		})
	}
	var c0 int64
	if measured {
		// The churn's own changes are the measure: bytes from its start
		// to the last change's answer.
		wg.Wait()
		time.Sleep(time.Until(end)) // the window is the whole duration
		res.Churn, res.ChurnMeasured = lats, true
	} else {
		time.Sleep(2 * time.Second) // let churn reach its steady state
		before, t0, c0 = r.bytesNow(), time.Now(), changes.Load()
		res.Churn = r.probes(cfg.Probes, "probe under churn")
	}
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
	r.res.Server = measureRounds(t, d.Name, cfg.Query, []target{{"berth+metrics", r.s.Addr, qfile, qs, r.s}})[0]
}

// bodySize is the length of Consul's response body for a GET of prefix
// with the query parameter param (recurse, keys), uncompressed; 0 when
// nothing is there.
func bodySize(t *TB, consulHTTP, prefix, param string) int64 {
	req, _ := http.NewRequest("GET", "http://"+consulHTTP+"/v1/kv/"+prefix+"?"+param+"=true", nil)
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
