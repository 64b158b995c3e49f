package berth

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/hashicorp/consul/api"
	"github.com/miekg/dns"
)

// These tests run the watcher against a real Consul agent (never a mock) and
// write documents as the exporter does: a host's container documents and
// its host document (rev bumped) in one Consul transaction. They share the
// process-global metrics, so they do not run in parallel with each other.

const kvPrefix = "berth"

// kvOp is one write of a publish transaction.
type kvOp struct {
	key   string
	value []byte
	del   bool
}

func ctrOp(t testing.TB, host string, c *record.Container) kvOp {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return kvOp{key: record.ContainerKey(kvPrefix, host, c.ID), value: b}
}

func rawOp(host, id string, value string) kvOp {
	return kvOp{key: record.ContainerKey(kvPrefix, host, id), value: []byte(value)}
}

func delOp(host, id string) kvOp {
	return kvOp{key: record.ContainerKey(kvPrefix, host, id), del: true}
}

// testLayout is the KV layout publish writes host documents in; forLayouts
// runs a test in each.
var testLayout = record.WriteV1

// forLayouts runs test once with hosts in layout 1 and once in layout 2.
func forLayouts(t *testing.T, test func(t *testing.T)) {
	for _, mode := range []record.WriteMode{record.WriteV1, record.WriteV2} {
		t.Run("layout"+string(mode), func(t *testing.T) {
			testLayout = mode
			defer func() { testLayout = record.WriteV1 }()
			test(t)
		})
	}
}

// hostDocOps are the operations that write h's document in testLayout.
func hostDocOps(h *record.Host, doc []byte) api.KVTxnOps {
	var ops api.KVTxnOps
	if testLayout.Writes(record.LayoutV1) {
		ops = append(ops, &api.KVTxnOp{Verb: api.KVSet, Key: record.HostKey(kvPrefix, h.Name), Value: doc})
	}
	if testLayout.Writes(record.LayoutV2) {
		ops = append(ops, &api.KVTxnOp{Verb: api.KVDeleteTree, Key: record.HostRevPrefix(kvPrefix, h.Name)},
			&api.KVTxnOp{Verb: api.KVSet, Key: record.HostRevKey(kvPrefix, h.Name, h.Rev), Value: doc})
	}
	return ops
}

// deleteHostDoc deletes host's document in testLayout.
func deleteHostDoc(t testing.TB, kv *api.KV, host string) {
	t.Helper()
	var err error
	if testLayout.Writes(record.LayoutV1) {
		_, err = kv.Delete(record.HostKey(kvPrefix, host), nil)
	}
	if err == nil && testLayout.Writes(record.LayoutV2) {
		_, err = kv.DeleteTree(record.HostRevPrefix(kvPrefix, host), nil)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// publish writes ops and h's document with rev+1 in one transaction (in
// chunks of 60 operations for large hosts, the host document last, in
// testLayout), and returns the ModifyIndex of the host document.
func publish(t testing.TB, kv *api.KV, h *record.Host, ops ...kvOp) uint64 {
	t.Helper()
	h.Rev++
	doc, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	var index uint64
	for len(ops) > 0 || doc != nil {
		n := min(60, len(ops))
		var txn api.KVTxnOps
		for _, op := range ops[:n] {
			if op.del {
				txn = append(txn, &api.KVTxnOp{Verb: api.KVDelete, Key: op.key})
			} else {
				txn = append(txn, &api.KVTxnOp{Verb: api.KVSet, Key: op.key, Value: op.value})
			}
		}
		ops = ops[n:]
		if len(ops) == 0 {
			txn = append(txn, hostDocOps(h, doc)...)
			doc = nil
		}
		ok, resp, _, err := kv.Txn(txn, nil)
		if err != nil || !ok {
			t.Fatalf("consul txn: ok=%v err=%v resp=%+v", ok, err, resp)
		}
		if doc == nil {
			index = resp.Results[len(resp.Results)-1].ModifyIndex
		}
	}
	return index
}

// poll reads every source of the host index once, as the followers do, and
// applies what changed: a round of the watcher without its goroutines.
func poll(ctx context.Context, t *testing.T, wt *watcher) {
	t.Helper()
	for _, source := range append([]string{sourceV1}, record.Shards()...) {
		r := wt.readSource(ctx, source, 0, 0)
		r.gen = wt.gen
		if err := wt.handleReads(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
}

// watched is a zone fed by a running watcher.
type watched struct {
	zone   *Zone
	berth  *Berth
	loaded chan struct{}
}

// startWatcher runs a watcher on kv for one zone until the test ends, and
// waits for its first full load.
func startWatcher(t *testing.T, kv *api.KV, resync time.Duration) *watched {
	t.Helper()
	z := newTestZone(nil)
	w := &watched{zone: z, loaded: make(chan struct{}),
		berth: &Berth{Next: test.NextHandler(dns.RcodeRefused, nil), zones: map[string]*Zone{testOrigin: z}, names: plugin.Zones{testOrigin}}}
	var once sync.Once
	wt := newWatcher(kv, kvPrefix, []*Zone{z}, resync, func() { once.Do(func() { close(w.loaded) }) }, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		wt.run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(stopWait):
			t.Errorf("watcher did not stop within %v of its context ending", stopWait)
		}
	})
	select {
	case <-w.loaded:
	case <-time.After(testenv.ZoneStartWait):
		t.Fatalf("no first load from Consul within %v", testenv.ZoneStartWait)
	}
	if !z.Loaded() {
		t.Fatal("loaded callback ran but the zone is not marked loaded")
	}
	return w
}

// has reports whether z answers name/qtype with exactly want (zone-file
// lines); want nil means "the name does not exist".
func (w *watched) has(name string, qtype uint16, want ...string) func() error {
	return func() error {
		ans, _, _, res := w.zone.Lookup(name, qtype)
		if want == nil {
			if res != NameError {
				return fmt.Errorf("%s exists, want NXDOMAIN", name)
			}
			return nil
		}
		got := make([]string, 0, len(ans))
		for _, rr := range ans {
			got = append(got, rr.String())
		}
		slices.Sort(got)
		if w := rrStrings(want...); !slices.Equal(got, w) {
			return fmt.Errorf("%s %s = %v, want %v", name, dns.TypeToString[qtype], got, w)
		}
		return nil
	}
}

func (w *watched) check(t *testing.T, name string, qtype uint16, want ...string) {
	t.Helper()
	if err := w.has(name, qtype, want...)(); err != nil {
		t.Error(err)
	}
}

// TestWatchFollowsConsul proves the zone follows KV: the first load serves
// what is there, added and changed containers show, a host document that
// is deleted takes its containers away (though their documents remain), and
// a host that comes back brings them back.
func TestWatchFollowsConsul(t *testing.T) {
	forLayouts(t, func(t *testing.T) {
		consul := testenv.StartConsul(t, testenv.ConsulOptions{})
		kv := consul.Client().KV()
		h1 := mkHost("h1", "192.0.2.10")
		h2 := mkHost("h2", "192.0.2.20")
		web1 := mkCtr("a1", "web-1", "web", record.HealthHealthy, mkPort(80, "tcp", "http", "192.0.2.10", 1001))
		publish(t, kv, h1, ctrOp(t, "h1", web1))

		w := startWatcher(t, kv, time.Hour)
		// Right after the first load, without polling.
		w.check(t, "web.c.example.org.", dns.TypeSRV, "web.c.example.org. 30 IN SRV 10 10 1001 h1.hosts.c.example.org.")
		w.check(t, "h1.hosts.c.example.org.", dns.TypeA, "h1.hosts.c.example.org. 30 IN A 192.0.2.10")

		web2 := mkCtr("a2", "web-2", "web", record.HealthHealthy, mkPort(80, "tcp", "http", "192.0.2.10", 1002))
		publish(t, kv, h1, ctrOp(t, "h1", web2))
		testenv.Eventually(t, testenv.ZoneChangeWait, "a container added", w.has("web.c.example.org.", dns.TypeSRV,
			"web.c.example.org. 30 IN SRV 10 10 1001 h1.hosts.c.example.org.", "web.c.example.org. 30 IN SRV 10 10 1002 h1.hosts.c.example.org."))

		web1.Health = record.HealthUnhealthy
		publish(t, kv, h1, ctrOp(t, "h1", web1))
		testenv.Eventually(t, testenv.ZoneChangeWait, "a container turned unhealthy", w.has("web.c.example.org.", dns.TypeSRV,
			"web.c.example.org. 30 IN SRV 10 10 1002 h1.hosts.c.example.org."))
		w.check(t, "web-1.h1.hosts.c.example.org.", dns.TypeSRV, "web-1.h1.hosts.c.example.org. 30 IN SRV 10 10 1001 h1.hosts.c.example.org.")

		publish(t, kv, h1, delOp("h1", web2.ID))
		testenv.Eventually(t, testenv.ZoneChangeWait, "a container removed", w.has("web-2.h1.hosts.c.example.org.", dns.TypeA))

		web3 := mkCtr("b3", "web-3", "web", record.HealthNone, mkPort(80, "tcp", "http", "192.0.2.20", 2003))
		publish(t, kv, h2, ctrOp(t, "h2", web3))
		testenv.Eventually(t, testenv.ZoneChangeWait, "a second host", w.has("web.c.example.org.", dns.TypeSRV,
			"web.c.example.org. 30 IN SRV 10 10 2003 h2.hosts.c.example.org."))

		deleteHostDoc(t, kv, "h1")
		testenv.Eventually(t, testenv.ZoneChangeWait, "host document deleted", w.has("h1.hosts.c.example.org.", dns.TypeA))
		w.check(t, "web-1.h1.hosts.c.example.org.", dns.TypeA)
		w.check(t, "web.c.example.org.", dns.TypeA, "web.c.example.org. 30 IN A 192.0.2.20")
		if keys, _, err := kv.Keys(record.ContainersPrefix(kvPrefix, "h1"), "", nil); err != nil || len(keys) != 1 {
			t.Fatalf("h1's container documents should still be in KV: %v %v", keys, err)
		}

		publish(t, kv, h1)
		testenv.Eventually(t, testenv.ZoneChangeWait, "host document back", w.has("web-1.h1.hosts.c.example.org.", dns.TypeA,
			"web-1.h1.hosts.c.example.org. 30 IN A 192.0.2.10"))
	})
}

// TestWatchInvalidDocuments proves garbage written over a valid container
// document is skipped, counted once in invalid_records_total with its
// reason, and the last valid version keeps being served; that a document
// that is garbage from the start is never served; and that a valid version
// written later replaces the garbage.
func TestWatchInvalidDocuments(t *testing.T) {
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	kv := consul.Client().KV()
	h1 := mkHost("h1", "192.0.2.10")
	h2 := mkHost("h2", "192.0.2.20")
	web1 := mkCtr("a1", "web-1", "web", record.HealthHealthy, mkPort(80, "tcp", "http", "192.0.2.10", 1001))
	publish(t, kv, h1, ctrOp(t, "h1", web1))
	publish(t, kv, h2, ctrOp(t, "h2", mkCtr("b1", "other", "other", "none", mkPort(80, "tcp", "http", "192.0.2.20", 2001))))
	w := startWatcher(t, kv, time.Hour)

	valid := func(t *testing.T) {
		t.Helper()
		w.check(t, "web-1.h1.hosts.c.example.org.", dns.TypeSRV, "web-1.h1.hosts.c.example.org. 30 IN SRV 10 10 1001 h1.hosts.c.example.org.")
		w.check(t, "web-1.h1.hosts.c.example.org.", dns.TypeTXT,
			`web-1.h1.hosts.c.example.org. 30 IN TXT "service=web" "id=a1a1a1a1a1a1" "image=img:web-1" "health=healthy"`)
		w.check(t, "web.c.example.org.", dns.TypeA, "web.c.example.org. 30 IN A 192.0.2.10")
	}
	validJSON, _ := json.Marshal(web1)
	// A valid document whose fields are then spoiled one at a time.
	spoil := func(f func(m map[string]any)) string {
		var m map[string]any
		_ = json.Unmarshal(validJSON, &m)
		f(m)
		b, _ := json.Marshal(m)
		return string(b)
	}
	port0 := func(m map[string]any) map[string]any { return m["ports"].([]any)[0].(map[string]any) }
	garbage := []struct {
		name, reason, value string
	}{
		{"invalid JSON", "invalid", `{"v":1,"id":"a1a1`},
		{"version 2", "version", spoil(func(m map[string]any) { m["v"] = 2 })},
		{"port 70000", "invalid", spoil(func(m map[string]any) { port0(m)["port"] = 70000 })},
		{"addr not-an-ip", "invalid", spoil(func(m map[string]any) { port0(m)["addr"] = "not-an-ip" })},
		{"name with dots", "invalid", spoil(func(m map[string]any) { m["name"] = "web.1" })},
		{"id mismatching the key", "invalid", spoil(func(m map[string]any) { m["id"] = strings.Repeat("f", 64) })},
	}
	for i, g := range garbage {
		t.Run(g.name, func(t *testing.T) {
			before := testenv.MetricValue(invalidRecords.WithLabelValues(g.reason))
			// A marker container in the same transaction tells when the
			// watcher has applied it.
			marker := mkCtr(fmt.Sprintf("%02x", 0x10+i), fmt.Sprintf("marker-%d", i), "marker", "none", mkPort(9, "tcp", "", "192.0.2.10", 9000+i))
			publish(t, kv, h1, rawOp("h1", web1.ID, g.value), ctrOp(t, "h1", marker))
			testenv.Eventually(t, testenv.ZoneChangeWait, "marker", w.has(fmt.Sprintf("marker-%d.h1.hosts.c.example.org.", i), dns.TypeA,
				fmt.Sprintf("marker-%d.h1.hosts.c.example.org. 30 IN A 192.0.2.10", i)))
			if d := testenv.MetricValue(invalidRecords.WithLabelValues(g.reason)) - before; d != 1 {
				t.Errorf("invalid_records_total{reason=%q} rose by %v, want 1", g.reason, d)
			}
			valid(t)
		})
	}

	t.Run("counted once", func(t *testing.T) {
		// Another change of h1 re-reads the same garbage: not counted again.
		before := testenv.MetricValue(invalidRecords.WithLabelValues("invalid"))
		publish(t, kv, h1, ctrOp(t, "h1", mkCtr("99", "marker-once", "marker", "none", mkPort(9, "tcp", "", "192.0.2.10", 9100))))
		testenv.Eventually(t, testenv.ZoneChangeWait, "marker", w.has("marker-once.h1.hosts.c.example.org.", dns.TypeA, "marker-once.h1.hosts.c.example.org. 30 IN A 192.0.2.10"))
		if d := testenv.MetricValue(invalidRecords.WithLabelValues("invalid")) - before; d != 0 {
			t.Errorf("the same bad version was counted again: +%v", d)
		}
		valid(t)
	})

	t.Run("garbage from the start", func(t *testing.T) {
		before := testenv.MetricValue(invalidRecords.WithLabelValues("invalid"))
		ghost := mkCtr("77", "ghost", "ghost", "none", mkPort(80, "tcp", "http", "192.0.2.10", 7000))
		ghostJSON, _ := json.Marshal(ghost)
		bad := strings.Replace(string(ghostJSON), `"port":80`, `"port":70000`, 1)
		publish(t, kv, h1, rawOp("h1", ghost.ID, bad), ctrOp(t, "h1", mkCtr("98", "marker-ghost", "marker", "none", mkPort(9, "tcp", "", "192.0.2.10", 9101))))
		testenv.Eventually(t, testenv.ZoneChangeWait, "marker", w.has("marker-ghost.h1.hosts.c.example.org.", dns.TypeA, "marker-ghost.h1.hosts.c.example.org. 30 IN A 192.0.2.10"))
		if d := testenv.MetricValue(invalidRecords.WithLabelValues("invalid")) - before; d != 1 {
			t.Errorf("invalid_records_total{reason=invalid} rose by %v, want 1", d)
		}
		for _, name := range []string{"ghost.h1.hosts.c.example.org.", "ghost.c.example.org."} {
			w.check(t, name, dns.TypeA)
		}
	})

	t.Run("garbage host document", func(t *testing.T) {
		before := testenv.MetricValue(invalidRecords.WithLabelValues("invalid"))
		if _, err := kv.Put(&api.KVPair{Key: record.HostKey(kvPrefix, "h1"), Value: []byte(`{"v":1,"name":"h1","addrs":["not-an-ip"]}`)}, nil); err != nil {
			t.Fatal(err)
		}
		// A change on h2 after it: once that shows, the bad h1 was seen.
		publish(t, kv, h2, ctrOp(t, "h2", mkCtr("97", "marker-h2", "marker", "none", mkPort(9, "tcp", "", "192.0.2.20", 9102))))
		testenv.Eventually(t, testenv.ZoneChangeWait, "marker", w.has("marker-h2.h2.hosts.c.example.org.", dns.TypeA, "marker-h2.h2.hosts.c.example.org. 30 IN A 192.0.2.20"))
		if d := testenv.MetricValue(invalidRecords.WithLabelValues("invalid")) - before; d != 1 {
			t.Errorf("invalid_records_total{reason=invalid} rose by %v, want 1", d)
		}
		w.check(t, "h1.hosts.c.example.org.", dns.TypeA, "h1.hosts.c.example.org. 30 IN A 192.0.2.10")
		valid(t)
	})

	t.Run("valid version replaces garbage", func(t *testing.T) {
		web1.Ports[0].HostPort = 1500
		publish(t, kv, h1, ctrOp(t, "h1", web1))
		testenv.Eventually(t, testenv.ZoneChangeWait, "fixed document served", w.has("web-1.h1.hosts.c.example.org.", dns.TypeSRV,
			"web-1.h1.hosts.c.example.org. 30 IN SRV 10 10 1500 h1.hosts.c.example.org."))
	})
}

// TestWatchRefetchesOnlyChangedHost proves a change on one host costs the
// transfer of that host's container documents only, never the whole
// prefix: with 200 containers on host B, a change on host A reads far less
// than the full prefix (consul_received_bytes_total by request); and that
// the first load costs one request per host in either layout.
func TestWatchRefetchesOnlyChangedHost(t *testing.T) {
	forLayouts(t, func(t *testing.T) {
		consul := testenv.StartConsul(t, testenv.ConsulOptions{})
		kv := consul.Client().KV()
		ha := mkHost("ha", "192.0.2.10")
		hb := mkHost("hb", "192.0.2.20")
		publish(t, kv, ha, ctrOp(t, "ha", mkCtr("a1", "web-1", "web", "none", mkPort(80, "tcp", "http", "192.0.2.10", 1001))))
		var ops []kvOp
		for i := range 200 {
			c := mkCtr("b", fmt.Sprintf("app-%d", i), "app", "healthy", mkPort(8080, "tcp", "http-alt", "192.0.2.20", 20000+i))
			c.ID = fmt.Sprintf("%064x", 0xb000+i)
			c.Image = "registry.example.org/team/app:" + strings.Repeat("v", 40)
			ops = append(ops, ctrOp(t, "hb", c))
		}
		publish(t, kv, hb, ops...)

		cfg := api.DefaultConfig()
		cfg.Address = consul.HTTP
		cfg.Token = ""
		counting, err := newConsulClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		// The first load reads every host's documents, one request per
		// host in either layout (layout 2's host documents come with the
		// shards).
		fullBefore := testenv.MetricValue(consulBytes.WithLabelValues(requestHost))
		requestsBefore := testenv.MetricValue(consulRequests.WithLabelValues(requestHost))
		w := startWatcher(t, counting.KV(), time.Hour)
		fullLoad := testenv.MetricValue(consulBytes.WithLabelValues(requestHost)) - fullBefore
		if fullLoad < 100_000 {
			t.Fatalf("the first full load read %v bytes of container documents; the fixture should be over 100 kB", fullLoad)
		}
		if n := testenv.MetricValue(consulRequests.WithLabelValues(requestHost)) - requestsBefore; n != 2 {
			t.Errorf("the first full load made %v host requests for 2 hosts, want one each", n)
		}
		testenv.Eventually(t, testenv.ZoneChangeWait, "host B loaded", func() error {
			if ans, _, _, _ := w.zone.Lookup("app.c.example.org.", dns.TypeSRV); len(ans) != 200 {
				return fmt.Errorf("app SRV has %d records, want 200", len(ans))
			}
			return nil
		})

		hostBefore := testenv.MetricValue(consulBytes.WithLabelValues(requestHost))
		publish(t, kv, ha, ctrOp(t, "ha", mkCtr("a2", "web-2", "web", "none", mkPort(80, "tcp", "http", "192.0.2.10", 1002))))
		testenv.Eventually(t, testenv.ZoneChangeWait, "change on host A", w.has("web-2.ha.hosts.c.example.org.", dns.TypeA, "web-2.ha.hosts.c.example.org. 30 IN A 192.0.2.10"))
		hostBytes := testenv.MetricValue(consulBytes.WithLabelValues(requestHost)) - hostBefore
		t.Logf("whole container prefix: %.0f bytes; re-fetch after a change on host A: %.0f bytes", fullLoad, hostBytes)
		if hostBytes <= 0 {
			t.Errorf("no host fetch counted after a change on host A")
		}
		if hostBytes > fullLoad/20 {
			t.Errorf("a change on host A read %.0f bytes, over 5%% of the whole prefix (%.0f): host B was fetched too", hostBytes, fullLoad)
		}
	})
}

// TestWatchConsulDownAndBack proves that while Consul is down the zone keeps
// answering the last data and the stale gauge is 1, and that once Consul is
// back (same data directory) the watcher recovers by itself: stale goes
// back to 0 and a change made after the restart shows.
func TestWatchConsulDownAndBack(t *testing.T) {
	consul := testenv.StartConsul(t, testenv.ConsulOptions{Persistent: true})
	kv := consul.Client().KV()
	h1 := mkHost("h1", "192.0.2.10")
	publish(t, kv, h1, ctrOp(t, "h1", mkCtr("a1", "web-1", "web", "none", mkPort(80, "tcp", "http", "192.0.2.10", 1001))))
	w := startWatcher(t, consul.Client().KV(), time.Hour)
	testenv.Eventually(t, testenv.ZoneChangeWait, "stale 0", func() error {
		if v := testenv.MetricValue(stale.WithLabelValues(testOrigin)); v != 0 {
			return fmt.Errorf("stale = %v", v)
		}
		return nil
	})

	consul.Stop()
	testenv.Eventually(t, failWait, "stale after Consul stopped", func() error {
		if v := testenv.MetricValue(stale.WithLabelValues(testOrigin)); v != 1 {
			return fmt.Errorf("stale = %v, want 1", v)
		}
		return nil
	})
	// Still answering the last data, through the handler.
	if !w.berth.Ready() {
		t.Error("not Ready() while Consul is down")
	}
	rec := dnstest.NewRecorder(&test.ResponseWriter{})
	tc := test.Case{Qname: "web.c.example.org.", Qtype: dns.TypeSRV, Answer: []dns.RR{test.SRV("web.c.example.org. 30 IN SRV 10 10 1001 h1.hosts.c.example.org.")},
		Extra: []dns.RR{test.A("h1.hosts.c.example.org. 30 IN A 192.0.2.10")}}
	if _, err := w.berth.ServeDNS(context.Background(), rec, tc.Msg()); err != nil || rec.Msg == nil {
		t.Fatalf("no answer while Consul is down: %v", err)
	}
	if err := test.SortAndCheck(rec.Msg, tc); err != nil {
		t.Errorf("while Consul is down: %v", err)
	}

	consul.Start()
	kv = consul.Client().KV()
	publish(t, kv, h1, ctrOp(t, "h1", mkCtr("a2", "web-2", "web", "none", mkPort(80, "tcp", "http", "192.0.2.10", 1002))))
	testenv.Eventually(t, testenv.ZoneRecoverWait, "change after the restart", w.has("web.c.example.org.", dns.TypeSRV,
		"web.c.example.org. 30 IN SRV 10 10 1001 h1.hosts.c.example.org.", "web.c.example.org. 30 IN SRV 10 10 1002 h1.hosts.c.example.org."))
	testenv.Eventually(t, testenv.ZoneChangeWait, "stale back to 0", func() error {
		if v := testenv.MetricValue(stale.WithLabelValues(testOrigin)); v != 0 {
			return fmt.Errorf("stale = %v, want 0", v)
		}
		return nil
	})
}

// fill writes a filler key and returns its ModifyIndex: Consul's index now.
func fill(t *testing.T, kv *api.KV) uint64 {
	t.Helper()
	ok, resp, _, err := kv.Txn(api.KVTxnOps{&api.KVTxnOp{Verb: api.KVSet, Key: "filler", Value: []byte(time.Now().String())}}, nil)
	if err != nil || !ok {
		t.Fatalf("filler: %v", err)
	}
	return resp.Results[0].ModifyIndex
}

// TestWatchIndexReset proves that when Consul's index goes backwards (a -dev
// agent restarted: empty KV, index starting over) the watcher starts over
// and the zone converges to the new KV: a host only in the old KV goes, a
// new host comes, and a host in both is served with its new data.
func TestWatchIndexReset(t *testing.T) {
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	kv := consul.Client().KV()
	// Push the old agent's index well above where the new one will be, so
	// that no ModifyIndex of the new KV equals one of the old.
	for range 60 {
		fill(t, kv)
	}
	h1 := mkHost("h1", "192.0.2.10")
	h3 := mkHost("h3", "192.0.2.30")
	oldIndex := publish(t, kv, h1, ctrOp(t, "h1", mkCtr("a1", "web-1", "web", "none", mkPort(80, "tcp", "http", "192.0.2.10", 1001))))
	publish(t, kv, h3, ctrOp(t, "h3", mkCtr("c1", "old", "old", "none", mkPort(80, "tcp", "http", "192.0.2.30", 3001))))
	w := startWatcher(t, consul.Client().KV(), time.Hour)
	w.check(t, "old.c.example.org.", dns.TypeA, "old.c.example.org. 30 IN A 192.0.2.30")

	consul.Stop()
	consul.Start()
	kv = consul.Client().KV()
	h1 = mkHost("h1", "192.0.2.11")
	newIndex := publish(t, kv, h1, ctrOp(t, "h1", mkCtr("a9", "web-9", "web", "none", mkPort(80, "tcp", "http", "192.0.2.11", 1009))))
	if newIndex >= oldIndex {
		t.Fatalf("the restarted agent's index (%d) did not go below the old one (%d)", newIndex, oldIndex)
	}
	publish(t, kv, mkHost("h2", "192.0.2.20"), ctrOp(t, "h2", mkCtr("b1", "new", "new", "none", mkPort(80, "tcp", "http", "192.0.2.20", 2001))))

	testenv.Eventually(t, testenv.ZoneRecoverWait, "new host", w.has("new.c.example.org.", dns.TypeA, "new.c.example.org. 30 IN A 192.0.2.20"))
	testenv.Eventually(t, testenv.ZoneChangeWait, "host in both KVs", w.has("web.c.example.org.", dns.TypeSRV, "web.c.example.org. 30 IN SRV 10 10 1009 h1.hosts.c.example.org."))
	w.check(t, "h1.hosts.c.example.org.", dns.TypeA, "h1.hosts.c.example.org. 30 IN A 192.0.2.11")
	w.check(t, "web-1.h1.hosts.c.example.org.", dns.TypeA)
	w.check(t, "old.c.example.org.", dns.TypeA)
	w.check(t, "h3.hosts.c.example.org.", dns.TypeA)
}

// switchProxy is a TCP proxy whose upstream can be switched, dropping the
// connections it holds: the watcher's Consul address moving to another
// Consul (a cluster rebuilt from a snapshot, a failover to another DC's
// replica).
type switchProxy struct {
	ln       net.Listener
	mu       sync.Mutex
	upstream string
	down     bool // refuse connections: Consul is unreachable
	conns    map[net.Conn]bool
}

func startSwitchProxy(t *testing.T, upstream string) *switchProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &switchProxy{ln: ln, upstream: upstream, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { ln.Close(); p.dropAll() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			up, down := p.upstream, p.down
			p.mu.Unlock()
			if down {
				c.Close()
				continue
			}
			u, err := net.Dial("tcp", up)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[u] = true, true
			p.mu.Unlock()
			go func() { _, _ = io.Copy(u, c); u.Close(); c.Close() }()
			go func() { _, _ = io.Copy(c, u); u.Close(); c.Close() }()
		}
	}()
	return p
}

func (p *switchProxy) dropAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

// setDown(true) drops every connection and refuses new ones until
// setDown(false).
func (p *switchProxy) setDown(down bool) {
	p.mu.Lock()
	p.down = down
	p.mu.Unlock()
	if down {
		p.dropAll()
	}
}

func (p *switchProxy) switchTo(upstream string) {
	p.mu.Lock()
	p.upstream = upstream
	p.mu.Unlock()
	p.dropAll()
}

// indexAlignWait is how long TestWatchIndexResetSameModifyIndex tries to
// land one write on the same index in two agents: not a bound of Berth
// but a budget of attempts, each a few Consul writes on loopback, which
// testenv.ConsulRoundWait bounds one by one; three rounds' worth.
const indexAlignWait = 3 * testenv.ConsulRoundWait

// TestWatchIndexResetSameModifyIndex proves the watcher converges to a new
// KV after a reset even where a host document of the new KV happens to have
// the same ModifyIndex as the old one: ModifyIndex values of two index
// histories cannot be compared. The watcher's Consul is switched (through a
// proxy) from agent A to agent B, whose index is lower and whose h1
// document differs from A's but was written at the same index: what a
// Consul restored from an older snapshot, or restarted without its data and
// refilled by the exporters, can give.
func TestWatchIndexResetSameModifyIndex(t *testing.T) {
	a := testenv.StartConsul(t, testenv.ConsulOptions{})
	b := testenv.StartConsul(t, testenv.ConsulOptions{})
	kvA, kvB := a.Client().KV(), b.Client().KV()
	proxy := startSwitchProxy(t, a.HTTP)
	cfg := api.DefaultConfig()
	cfg.Address = proxy.ln.Addr().String()
	cfg.Token = ""
	client, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	w := startWatcher(t, client.KV(), time.Hour)

	// Bring both agents to the same index, then write h1 on each in one
	// transaction; retry until both land on the same ModifyIndex. An
	// agent's own writes (catalog sync, coordinates) can slip in between,
	// more often on a loaded machine: retry for a while, not a few times.
	var same uint64
	var port int
	var last string
	deadline := time.Now().Add(indexAlignWait)
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		ia, ib := fill(t, kvA), fill(t, kvB)
		for ia != ib {
			if ia < ib {
				ia = fill(t, kvA)
			} else {
				ib = fill(t, kvB)
			}
		}
		port = 1000 + attempt%1000
		// A new rev each attempt: Consul leaves a key whose value did not
		// change at its old ModifyIndex, so a retry with the same documents
		// could never land on the new index.
		ha, hb := mkHost("h1", "192.0.2.10"), mkHost("h1", "192.0.2.11")
		ha.Rev, hb.Rev = uint64(attempt)+1, uint64(attempt)+1
		xa := publish(t, kvA, ha, ctrOp(t, "h1", mkCtr("a1", "web-1", "web", "none", mkPort(80, "tcp", "http", "192.0.2.10", port))))
		xb := publish(t, kvB, hb, ctrOp(t, "h1", mkCtr("a9", "web-9", "web", "none", mkPort(80, "tcp", "http", "192.0.2.11", 1009))))
		if xa == xb {
			same = xa
			break
		}
		last = fmt.Sprintf("attempt %d: both at index %d, then h1 written at %d and %d", attempt, ia, xa, xb)
	}
	if same == 0 {
		t.Fatalf("could not write h1 at the same index on both agents; last %s", last)
	}
	// A moves on (its host list's index ends well above B's), B has a host
	// A does not.
	for range 10 {
		fill(t, kvA)
	}
	indexA := publish(t, kvA, mkHost("h3", "192.0.2.30"), ctrOp(t, "h3", mkCtr("c1", "old", "old", "none", mkPort(80, "tcp", "http", "192.0.2.30", 3001))))
	indexB := publish(t, kvB, mkHost("h2", "192.0.2.20"), ctrOp(t, "h2", mkCtr("b1", "new", "new", "none", mkPort(80, "tcp", "http", "192.0.2.20", 2001))))
	if indexB >= indexA {
		t.Fatalf("B's index %d is not below A's %d", indexB, indexA)
	}
	// The watcher has applied A's last h1 (the port tells which write) and h3.
	testenv.Eventually(t, testenv.ZoneChangeWait, "A's h1", w.has("web.c.example.org.", dns.TypeSRV, fmt.Sprintf("web.c.example.org. 30 IN SRV 10 10 %d h1.hosts.c.example.org.", port)))
	testenv.Eventually(t, testenv.ZoneChangeWait, "A's h3", w.has("old.c.example.org.", dns.TypeA, "old.c.example.org. 30 IN A 192.0.2.30"))

	// Consul goes away (the watcher sees its query fail), and comes back as
	// B: the index goes back from A's to B's.
	proxy.setDown(true)
	testenv.Eventually(t, failWait, "the watcher noticed Consul is gone", func() error {
		if v := testenv.MetricValue(stale.WithLabelValues(testOrigin)); v != 1 {
			return fmt.Errorf("stale = %v, want 1", v)
		}
		return nil
	})
	proxy.switchTo(b.HTTP)
	proxy.setDown(false)
	testenv.Eventually(t, testenv.ZoneRecoverWait, "B's new host", w.has("new.c.example.org.", dns.TypeA, "new.c.example.org. 30 IN A 192.0.2.20"))
	testenv.Eventually(t, testenv.ZoneChangeWait, "A's h3 gone", w.has("old.c.example.org.", dns.TypeA))
	// h1 on B was written at index %d, as h1 on A was: its new data must show.
	testenv.Eventually(t, testenv.ZoneChangeWait, fmt.Sprintf("B's h1 (ModifyIndex %d, as A's)", same), w.has("web.c.example.org.", dns.TypeSRV,
		"web.c.example.org. 30 IN SRV 10 10 1009 h1.hosts.c.example.org."))
	w.check(t, "h1.hosts.c.example.org.", dns.TypeA, "h1.hosts.c.example.org. 30 IN A 192.0.2.11")
}

// TestWatchSerialSnapshotRestore proves the serial is Consul's index of the
// data and never goes back, through a real snapshot restore: the restored
// KV's index is older than the served serial, so a running server keeps
// its serial (one more, as the records changed); a server started after
// the restore serves the restored index; and Consul's next write under the
// prefix, whose index is above every index before the restore, brings every
// server to one serial again.
func TestWatchSerialSnapshotRestore(t *testing.T) {
	c := testenv.StartConsul(t, testenv.ConsulOptions{})
	client := c.Client()
	kv := client.KV()
	serialIs := func(w *watched, want uint32) func() error {
		return func() error {
			if got := w.zone.SOA().Serial; got != want {
				return fmt.Errorf("serial %d, want %d", got, want)
			}
			return nil
		}
	}
	h1 := mkHost("h1", "192.0.2.10")
	web := func(port int) kvOp {
		return ctrOp(t, "h1", mkCtr("a1", "web-1", "web", "none", mkPort(80, "tcp", "http", "192.0.2.10", port)))
	}
	i1 := publish(t, kv, h1, web(1001))
	running := startWatcher(t, kv, time.Hour)
	testenv.Eventually(t, testenv.ZoneChangeWait, "serial of the first state", serialIs(running, uint32(i1)))

	snap, _, err := client.Snapshot().Save(nil)
	if err != nil {
		t.Fatalf("snapshot save: %v", err)
	}
	saved, err := io.ReadAll(snap)
	snap.Close()
	if err != nil {
		t.Fatal(err)
	}
	i2 := publish(t, kv, h1, web(1002))
	testenv.Eventually(t, testenv.ZoneChangeWait, "serial after a change", serialIs(running, uint32(i2)))
	i3 := publish(t, kv, mkHost("h2", "192.0.2.20"), ctrOp(t, "h2", mkCtr("b1", "api-1", "api", "none", mkPort(80, "tcp", "http", "192.0.2.20", 2001))))
	testenv.Eventually(t, testenv.ZoneChangeWait, "serial after a second change", serialIs(running, uint32(i3)))

	if err := client.Snapshot().Restore(nil, bytes.NewReader(saved)); err != nil {
		t.Fatalf("snapshot restore: %v", err)
	}
	// The restored data is served (h2 gone, the first port back) at a
	// serial one above the last: the index went back to i1.
	testenv.Eventually(t, testenv.ZoneRecoverWait, "restored data", running.has("api.c.example.org.", dns.TypeA))
	testenv.Eventually(t, testenv.ZoneChangeWait, "restored port", running.has("web.c.example.org.", dns.TypeSRV, "web.c.example.org. 30 IN SRV 10 10 1001 h1.hosts.c.example.org."))
	testenv.Eventually(t, testenv.ZoneChangeWait, "serial after the restore", serialIs(running, uint32(i3)+1))

	// A server started now knows only the restored index.
	started := startWatcher(t, kv, time.Hour)
	testenv.Eventually(t, testenv.ZoneChangeWait, "serial of a server started after the restore", serialIs(started, uint32(i1)))

	// The next write under the prefix overtakes every earlier index.
	i4 := publish(t, kv, h1, web(1004))
	if i4 <= i3+1 {
		t.Fatalf("the first write after the restore has index %d, not above %d", i4, i3+1)
	}
	testenv.Eventually(t, testenv.ZoneChangeWait, "running server at the new index", serialIs(running, uint32(i4)))
	testenv.Eventually(t, testenv.ZoneChangeWait, "started server at the new index", serialIs(started, uint32(i4)))
}
