package berth

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
	"github.com/hashicorp/consul/api"
	"github.com/miekg/dns"
	"golang.org/x/time/rate"
)

// startBoundedWatcher is startWatcher with the per-host read bound and byte
// rate lowered, so that a test can pass them with little data.
func startBoundedWatcher(t *testing.T, c *testenv.Consul, hostBytes, hostRate int64, bound ...func(*watcher)) *watched {
	t.Helper()
	// The bounds live in the plugin's own Consul client (its transport).
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Token = c.HTTP, ""
	client, err := newConsulClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	kv := client.KV()
	z := newTestZone(nil)
	w := &watched{zone: z, loaded: make(chan struct{})}
	var once sync.Once
	wt := newWatcher(kv, kvPrefix, []*Zone{z}, time.Hour, func() { once.Do(func() { close(w.loaded) }) }, nil)
	wt.hostBytes, wt.hostRate = hostBytes, hostRate
	for _, b := range bound {
		b(wt)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); wt.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-w.loaded:
	case <-time.After(testenv.ZoneStartWait):
		t.Fatalf("no first load from Consul within %v", testenv.ZoneStartWait)
	}
	return w
}

// TestWatchOversizeHost proves a host whose container documents are over
// the read bound is cut off while they are read: it keeps what was served
// for it, is reported once, and every other host goes on changing.
func TestWatchOversizeHost(t *testing.T) {
	c := testenv.StartConsul(t, testenv.ConsulOptions{})
	kv := c.Client().KV()
	good := mkHost("good", "192.0.2.10")
	publish(t, kv, good, ctrOp(t, "good", mkCtr("a1", "web-1", "web", "none", mkPort(80, "tcp", "http", "192.0.2.10", 1001))))
	bad := mkHost("bad", "192.0.2.66")
	publish(t, kv, bad, ctrOp(t, "bad", mkCtr("b1", "api-1", "api", "none", mkPort(80, "tcp", "http", "192.0.2.66", 6001))))
	w := startBoundedWatcher(t, c, 256<<10, 1<<30)
	testenv.Eventually(t, testenv.ZoneChangeWait, "the bad host's first state", w.has("api.c.example.org.", dns.TypeA, "api.c.example.org. 30 IN A 192.0.2.66"))

	before := testenv.MetricValue(invalidRecords.WithLabelValues("oversize"))
	// 8 documents of 60 KiB: each under the document limit, together over
	// the host's 256 KiB (one at a time: a transaction holds 512 KiB).
	for i := range 8 {
		op := rawOp("bad", fmt.Sprintf("%064x", i+1), `{"v":1,"pad":"`+strings.Repeat("x", 60<<10)+`"}`)
		if _, err := kv.Put(&api.KVPair{Key: op.key, Value: op.value}, nil); err != nil {
			t.Fatal(err)
		}
	}
	publish(t, kv, bad)
	testenv.Eventually(t, testenv.ZoneChangeWait, "the oversize host reported", func() error {
		if testenv.MetricValue(invalidRecords.WithLabelValues("oversize")) != before+1 {
			return fmt.Errorf("oversize counted %v times, want 1", testenv.MetricValue(invalidRecords.WithLabelValues("oversize"))-before)
		}
		return nil
	})
	w.check(t, "api.c.example.org.", dns.TypeA, "api.c.example.org. 30 IN A 192.0.2.66")

	publish(t, kv, good, ctrOp(t, "good", mkCtr("a2", "web-2", "web", "none", mkPort(80, "tcp", "http", "192.0.2.10", 1002))))
	testenv.Eventually(t, testenv.ZoneChangeWait, "the good host changes", w.has("web-2.good.hosts.c.example.org.", dns.TypeA, "web-2.good.hosts.c.example.org. 30 IN A 192.0.2.10"))
	publish(t, kv, bad) // the same oversize subtree at a new rev: read again, not reported again
	publish(t, kv, good, ctrOp(t, "good", mkCtr("a3", "web-3", "web", "none", mkPort(80, "tcp", "http", "192.0.2.10", 1003))))
	testenv.Eventually(t, testenv.ZoneChangeWait, "the good host changes again", w.has("web-3.good.hosts.c.example.org.", dns.TypeA, "web-3.good.hosts.c.example.org. 30 IN A 192.0.2.10"))
	if n := testenv.MetricValue(invalidRecords.WithLabelValues("oversize")) - before; n != 1 {
		t.Errorf("oversize reported %v times while it lasted, want once", n)
	}
	w.check(t, "api.c.example.org.", dns.TypeA, "api.c.example.org. 30 IN A 192.0.2.66")
}

// TestWatchFlappingHost proves a host that changes faster than its read
// allowance has its changes coalesced (deferred, counted) while another
// host's changes are answered meanwhile, and that its last state is served
// once it stops.
func TestWatchFlappingHost(t *testing.T) {
	c := testenv.StartConsul(t, testenv.ConsulOptions{})
	kv := c.Client().KV()
	good := mkHost("good", "192.0.2.10")
	publish(t, kv, good, ctrOp(t, "good", mkCtr("a1", "web-1", "web", "none", mkPort(80, "tcp", "http", "192.0.2.10", 1001))))
	flap := mkHost("flap", "192.0.2.77")
	publish(t, kv, flap, ctrOp(t, "flap", mkCtr("f1", "api-1", "api", "none", mkPort(80, "tcp", "http", "192.0.2.77", 7000))))
	// A few hundred bytes a second, after a burst of 8 KiB: the flapping
	// host's reads of about a kilobyte each are soon over it.
	const hostBytes, hostRate = 4 << 10, 512 // the bound of one read, and the allowance a second
	w := startBoundedWatcher(t, c, hostBytes, hostRate)
	deferredBefore := testenv.MetricValue(hostFetchesDeferred)

	ctx, stop := context.WithCancel(context.Background())
	flapped := make(chan int)
	ctr := func(port int) []byte {
		b, _ := json.Marshal(mkCtr("f1", "api-1", "api", "none", mkPort(80, "tcp", "http", "192.0.2.77", port)))
		return b
	}
	go func() {
		port, published := 7000, 7000
		for ctx.Err() == nil {
			port++
			flap.Rev++
			doc, _ := json.Marshal(flap)
			ok, _, _, err := kv.Txn(api.KVTxnOps{
				{Verb: api.KVSet, Key: record.ContainerKey(kvPrefix, "flap", strings.Repeat("f1", 32)), Value: ctr(port)},
				{Verb: api.KVSet, Key: record.HostKey(kvPrefix, "flap"), Value: doc},
			}, nil)
			if err == nil && ok {
				published = port
			}
			time.Sleep(testenv.PollInterval) // not a wait: the flapping host's pace, one change per poll
		}
		flapped <- published
	}()
	// The allowance's burst (twice hostBytes) is spent by at most eight
	// reads of the ~1 KiB host, one change round each.
	testenv.Eventually(t, 2*hostBytes/(1<<10)*testenv.ZoneChangeWait, "the flapping host deferred", func() error {
		if testenv.MetricValue(hostFetchesDeferred) <= deferredBefore {
			return fmt.Errorf("no deferral counted")
		}
		return nil
	})
	publish(t, kv, good, ctrOp(t, "good", mkCtr("a2", "web-2", "web", "none", mkPort(80, "tcp", "http", "192.0.2.10", 1002))))
	testenv.Eventually(t, testenv.ZoneChangeWait, "the good host's change while the other flaps", w.has("web-2.good.hosts.c.example.org.", dns.TypeA, "web-2.good.hosts.c.example.org. 30 IN A 192.0.2.10"))
	stop()
	last := <-flapped
	// Its last state is read once the allowance's debt, at most one read
	// of hostBytes, is repaid at hostRate, and then in one round.
	const repaid = hostBytes / hostRate * time.Second
	testenv.Eventually(t, repaid+testenv.ZoneChangeWait, "the flapping host's last state", w.has("api-1.flap.hosts.c.example.org.", dns.TypeSRV,
		fmt.Sprintf("api-1.flap.hosts.c.example.org. 30 IN SRV 10 10 %d flap.hosts.c.example.org.", last)))
}

// sameShard returns n host names in one shard of layout 2.
func sameShard(n int) []string {
	byShard := map[string][]string{}
	for i := 0; ; i++ {
		name := fmt.Sprintf("host-%d", i)
		s := record.Shard(name)
		byShard[s] = append(byShard[s], name)
		if len(byShard[s]) == n {
			return byShard[s]
		}
	}
}

// TestWatchShardFlood proves a host that floods its layout 2 entry with
// keys (its ACL lets it write any key under it) cannot blind the readers of
// its shard: the shard's key list goes over its bound, the watcher reads
// the shard host by host, refuses the flooding host (reported once, its
// records kept as they were), and the other hosts of the shard go on
// changing.
func TestWatchShardFlood(t *testing.T) {
	c, good, noisy := shardNeighbours(t)
	kv := c.Client().KV()
	w := startBoundedWatcher(t, c, maxHostBytes, hostByteRate, func(wt *watcher) { wt.shardBytes, wt.entryBytes = 32<<10, 16<<10 })
	oversizeBefore := testenv.MetricValue(invalidRecords.WithLabelValues("oversize"))

	// 3,000 rev keys under its own entry: some 150 KiB of key list.
	for i := 0; i < 3000; i += 64 {
		var txn api.KVTxnOps
		for j := i; j < min(i+64, 3000); j++ {
			txn = append(txn, &api.KVTxnOp{Verb: api.KVSet, Key: record.HostRevKey(kvPrefix, noisy.Name, uint64(1000+j)), Value: []byte("{}")})
		}
		if ok, _, _, err := kv.Txn(txn, nil); err != nil || !ok {
			t.Fatalf("flood: %v", err)
		}
	}
	publish(t, kv, good, ctrOp(t, good.Name, mkCtr("a2", "web-2", "web", "none", mkPort(80, "tcp", "http", "192.0.2.10", 1002))))
	testenv.Eventually(t, testenv.ZoneChangeWait, "the good host's change beside the flood", w.has("web-2."+good.Name+".hosts.c.example.org.", dns.TypeA, "web-2."+good.Name+".hosts.c.example.org. 30 IN A 192.0.2.10"))
	w.check(t, "api-1."+noisy.Name+".hosts.c.example.org.", dns.TypeA, "api-1."+noisy.Name+".hosts.c.example.org. 30 IN A 192.0.2.66")
	publish(t, kv, good, ctrOp(t, good.Name, mkCtr("a3", "web-3", "web", "none", mkPort(80, "tcp", "http", "192.0.2.10", 1003))))
	testenv.Eventually(t, testenv.ZoneChangeWait, "another change beside the flood", w.has("web-3."+good.Name+".hosts.c.example.org.", dns.TypeA, "web-3."+good.Name+".hosts.c.example.org. 30 IN A 192.0.2.10"))
	if n := testenv.MetricValue(invalidRecords.WithLabelValues("oversize")) - oversizeBefore; n != 1 {
		t.Errorf("the flooding host was counted %v times, want once", n)
	}
}

// shardNeighbours starts Consul with two hosts of one layout 2 shard, good
// (web-1) and noisy (api-1), for the flood tests; the test's layout is 2
// until it ends.
func shardNeighbours(t *testing.T) (*testenv.Consul, *record.Host, *record.Host) {
	t.Helper()
	c := testenv.StartConsul(t, testenv.ConsulOptions{})
	kv := c.Client().KV()
	testLayout = record.WriteV2
	t.Cleanup(func() { testLayout = record.WriteV1 })
	names := sameShard(2)
	good, noisy := mkHost(names[0], "192.0.2.10"), mkHost(names[1], "192.0.2.66")
	publish(t, kv, good, ctrOp(t, good.Name, mkCtr("a1", "web-1", "web", "none", mkPort(80, "tcp", "http", "192.0.2.10", 1001))))
	publish(t, kv, noisy, ctrOp(t, noisy.Name, mkCtr("b1", "api-1", "api", "none", mkPort(80, "tcp", "http", "192.0.2.66", 6001))))
	return c, good, noisy
}

// TestWatchShardFloodAtFirstLoad proves a full load, which reads each
// shard with its documents, still reads a host with a flood of layout 2
// keys on its own, bounded: the flood is over the host's bound but within
// the shard's, and the host is refused (oversize) while its neighbour loads.
func TestWatchShardFloodAtFirstLoad(t *testing.T) {
	c, good, noisy := shardNeighbours(t)
	kv := c.Client().KV()
	var txn api.KVTxnOps
	for j := range 60 {
		txn = append(txn, &api.KVTxnOp{Verb: api.KVSet, Key: record.HostRevKey(kvPrefix, noisy.Name, uint64(1000+j)), Value: []byte("{}")})
	}
	if ok, _, _, err := kv.Txn(txn, nil); err != nil || !ok {
		t.Fatalf("flood: %v", err)
	}
	oversizeBefore := testenv.MetricValue(invalidRecords.WithLabelValues("oversize"))
	w := startBoundedWatcher(t, c, maxHostBytes, hostByteRate, func(wt *watcher) { wt.shardBytes, wt.entryBytes = 1<<20, 4<<10 })
	w.check(t, "web-1."+good.Name+".hosts.c.example.org.", dns.TypeA, "web-1."+good.Name+".hosts.c.example.org. 30 IN A 192.0.2.10")
	if n := testenv.MetricValue(invalidRecords.WithLabelValues("oversize")) - oversizeBefore; n != 1 {
		t.Errorf("the flooding host was counted oversize %v times at the first load, want once", n)
	}
}

// TestReporterForgets proves the report-once state holds only the bad
// documents in KV now: bad keys that were deleted, or replaced by valid
// ones, are forgotten.
func TestReporterForgets(t *testing.T) {
	c := testenv.StartConsul(t, testenv.ConsulOptions{})
	kv := c.Client().KV()
	h := mkHost("h1", "192.0.2.10")
	var ops, dels []kvOp
	for i := range 500 {
		id := fmt.Sprintf("%064x", i+1)
		ops = append(ops, rawOp("h1", id, "not json"))
		dels = append(dels, delOp("h1", id))
	}
	publish(t, kv, h, ops...)
	z := newTestZone(nil)
	wt := newWatcher(kv, kvPrefix, []*Zone{z}, time.Hour, func() {}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), testenv.ZoneStartWait)
	defer cancel()
	if _, err := wt.fullLoad(ctx, false); err != nil {
		t.Fatal(err)
	}
	if n := wt.reports.size(); n != 500 {
		t.Fatalf("reporter remembers %d bad keys, want 500", n)
	}
	publish(t, kv, h, dels...)
	if _, err := wt.fullLoad(ctx, false); err != nil {
		t.Fatal(err)
	}
	if n := wt.reports.size(); n != 0 {
		t.Errorf("after the bad keys were deleted the reporter remembers %d", n)
	}
	publish(t, kv, h, rawOp("h1", fmt.Sprintf("%064x", 1), "still not json"))
	poll(ctx, t, wt)
	if n := wt.reports.size(); n != 1 {
		t.Errorf("one bad key again: the reporter remembers %d", n)
	}
	if _, err := kv.Delete(record.HostKey(kvPrefix, "h1"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := wt.fullLoad(ctx, false); err != nil {
		t.Fatal(err)
	}
	if n := wt.reports.size(); n != 0 {
		t.Errorf("the host gone, the reporter remembers %d of its keys", n)
	}
}

// TestLimitedLog proves bad-data warnings are held to the log's rate and
// what is held back is counted.
func TestLimitedLog(t *testing.T) {
	l := &limitedLog{limit: rate.NewLimiter(rate.Every(time.Hour), 5)}
	for i := range 100 {
		l.warningf("bad document %d", i)
	}
	if l.dropped != 95 {
		t.Errorf("%d warnings held back of 100 with a burst of 5, want 95", l.dropped)
	}
}

// TestWatchOversizeHostDefaultBound proves the default bound (16 MiB) holds
// against a subtree a little over it: one read can bring the rest of such a
// response, and the JSON decoder, which buffers the whole value, must still
// not get the bytes past the bound (plugin/consul.go, countingBody), or it
// completes the value and the host is served whole. Fault 9's hostile host
// found this.
func TestWatchOversizeHostDefaultBound(t *testing.T) {
	c := testenv.StartConsul(t, testenv.ConsulOptions{})
	kv := c.Client().KV()
	publish(t, kv, mkHost("good", "192.0.2.10"), ctrOp(t, "good", mkCtr("a1", "web-1", "web", "none", mkPort(80, "tcp", "http", "192.0.2.10", 1001))))
	w := startBoundedWatcher(t, c, maxHostBytes, hostByteRate)
	before := testenv.MetricValue(invalidRecords.WithLabelValues("oversize"))
	// 280 documents of 60 KiB: some 23 MB as Consul sends them (base64).
	for i := range 280 {
		op := rawOp("bad", fmt.Sprintf("%064x", i+1), `{"v":1,"pad":"`+strings.Repeat("x", 60<<10)+`"}`)
		if _, err := kv.Put(&api.KVPair{Key: op.key, Value: op.value}, nil); err != nil {
			t.Fatal(err)
		}
	}
	publish(t, kv, mkHost("bad", "192.0.2.66"))
	testenv.Eventually(t, testenv.ZoneChangeWait, "the oversize host reported", func() error {
		if n := testenv.MetricValue(invalidRecords.WithLabelValues("oversize")) - before; n != 1 {
			return fmt.Errorf("oversize counted %v times, want 1", n)
		}
		return nil
	})
	w.check(t, "bad.hosts.c.example.org.", dns.TypeA)
}
