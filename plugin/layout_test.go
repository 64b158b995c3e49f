package berth

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
	"github.com/hashicorp/consul/api"
	"github.com/miekg/dns"
)

// moveHost writes h's document with rev+1 in the layouts of to, and deletes
// it from the others, in one transaction, as an exporter switching its
// --kv-layout does.
func moveHost(t *testing.T, kv *api.KV, h *record.Host, to record.WriteMode) {
	t.Helper()
	h.Rev++
	doc, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	txn := api.KVTxnOps{
		{Verb: api.KVDelete, Key: record.HostKey(kvPrefix, h.Name)},
		{Verb: api.KVDeleteTree, Key: record.HostRevPrefix(kvPrefix, h.Name)},
	}
	testLayout = to
	defer func() { testLayout = record.WriteV1 }()
	txn = append(txn, hostDocOps(h, doc)...)
	if ok, resp, _, err := kv.Txn(txn, nil); err != nil || !ok {
		t.Fatalf("consul txn: ok=%v err=%v resp=%+v", ok, err, resp)
	}
}

// TestWatchLayoutMove proves a host that moves from one layout to the other
// in one transaction never leaves the zone, whichever layout's read reaches
// the watcher first: the followers of the two layouts are independent, and
// the read of the layout the host left, arriving alone, must not take it
// away. The test stops the followers and hands the watcher each read
// itself, the one of the layout left first (the bad order).
func TestWatchLayoutMove(t *testing.T) {
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	kv := consul.Client().KV()
	h1 := mkHost("h1", "192.0.2.10")
	publish(t, kv, h1, ctrOp(t, "h1", mkCtr("a1", "web-1", "web", record.HealthHealthy, mkPort(80, "tcp", "http", "192.0.2.10", 1001))))
	// A second host in h1's shard, which stays in layout 2 throughout.
	other := ""
	for i := 0; other == ""; i++ {
		if name := "o" + string(rune('a'+i%26)) + string(rune('a'+i/26)); record.Shard(name) == record.Shard("h1") {
			other = name
		}
	}
	testLayout = record.WriteV2
	ho := mkHost(other, "192.0.2.20")
	publish(t, kv, ho, ctrOp(t, other, mkCtr("b1", "web-2", "web", record.HealthHealthy, mkPort(80, "tcp", "http", "192.0.2.20", 2001))))
	testLayout = record.WriteV1

	z := newTestZone(nil)
	wt := newWatcher(kv, kvPrefix, []*Zone{z}, time.Hour, func() {}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), testenv.ZoneStartWait)
	defer cancel()
	if _, err := wt.fullLoad(ctx, false); err != nil {
		t.Fatal(err)
	}
	wt.stopFollow()
	z.MarkLoaded()
	both := []string{
		"web.c.example.org. 30 IN SRV 10 10 1001 h1.hosts.c.example.org.",
		"web.c.example.org. 30 IN SRV 10 10 2001 " + other + ".hosts.c.example.org.",
	}
	served := func(step string, want ...string) {
		t.Helper()
		ans, _, _, _ := z.Lookup("web."+testOrigin, dns.TypeSRV)
		var got []string
		for _, rr := range ans {
			got = append(got, rr.String())
		}
		slices.Sort(got)
		if w := rrStrings(want...); !slices.Equal(got, w) {
			t.Fatalf("%s: web SRV = %v, want %v", step, got, w)
		}
	}
	served("layout 1", both...)

	deliver := func(source string) {
		t.Helper()
		r := wt.readSource(ctx, source, 0, 0)
		r.gen = wt.gen
		if err := wt.handleReads(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	shard := record.Shard("h1")
	for _, step := range []struct {
		to   record.WriteMode
		left string // the source of the layout h1 leaves ("": none), read first
	}{
		{record.WriteV2, sourceV1},
		{record.WriteV1, shard},
		{record.WriteBoth, ""},
		{record.WriteV2, sourceV1},
		{record.WriteBoth, ""},
		{record.WriteV1, shard},
	} {
		moveHost(t, kv, h1, step.to)
		name := "to layout " + string(step.to)
		if step.left != "" {
			deliver(step.left)
			served(name+", only the layout left read", both...)
		}
		deliver(sourceV1)
		deliver(shard)
		served(name, both...)
		// The watcher holds h1 as listed in the layouts of the step.
		want := ""
		if step.to.Writes(record.LayoutV1) {
			want = "1@"
		}
		if step.to.Writes(record.LayoutV2) {
			want += " 2@" + record.HostRevKey(kvPrefix, "h1", h1.Rev)
		}
		if st := wt.hosts["h1"]; st == nil || !strings.HasPrefix(st.version, strings.Split(want, " ")[0]) || !strings.HasSuffix(st.version, want[strings.LastIndex(want, "@")+1:]) {
			t.Fatalf("%s: h1 applied as %+v, want %q", name, st, want)
		}
	}
	// Gone from both layouts: gone from the zone.
	testLayout = record.WriteV1
	deleteHostDoc(t, kv, "h1")
	deliver(sourceV1)
	deliver(shard)
	served("h1 gone", both[1])
}
