package ctl

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/berthdns/berth/record"
)

func TestHosts(t *testing.T) {
	f := startFixture(t)
	i1, i2 := f.modifyIndex(t, record.HostKey(fxPrefix, "host1")), f.modifyIndex(t, record.HostKey(fxPrefix, "host2"))
	const notShown = "berth: 3 documents not shown: the plugin would not serve them (berth check lists them)\n"
	// host2's exporter field carries a terminal escape: printed escaped.
	expect(t, []string{"hosts"}, 0, fmt.Sprintf(`HOST   ADDRS       CONTAINERS  EXPORTER      SESSION        REV  INDEX  LAYOUT
host1  192.0.2.10  2           0.1.0         live %s  1    %d     1
host2  192.0.2.20  3           0.1.0\x1b[2J  none           4    %d     1
`, f.session[:8], i1, i2), notShown)
	expect(t, []string{"hosts", "-o", "json"}, 0, fmt.Sprintf(`[
  {
    "name": "host1",
    "addrs": [
      "192.0.2.10"
    ],
    "containers": 2,
    "exporter": "0.1.0",
    "session": "%s",
    "session_state": "live",
    "rev": 1,
    "index": %d,
    "layout": "1"
  },
  {
    "name": "host2",
    "addrs": [
      "192.0.2.20"
    ],
    "containers": 3,
    "exporter": "0.1.0\u001b[2J",
    "session": "",
    "session_state": "none",
    "rev": 4,
    "index": %d,
    "layout": "1"
  }
]
`, f.session, i1, i2), notShown)

	// host1's exporter dies: its session goes, and with behavior=delete its
	// host document; its two container documents are orphans now.
	if _, err := f.consul.Client().Session().Destroy(f.session, nil); err != nil {
		t.Fatal(err)
	}
	expect(t, []string{"hosts", "-o", "table"}, 0, fmt.Sprintf(`HOST   ADDRS       CONTAINERS  EXPORTER      SESSION  REV  INDEX  LAYOUT
host2  192.0.2.20  3           0.1.0\x1b[2J  none     4    %d     1
`, i2), "berth: 5 documents not shown: the plugin would not serve them (berth check lists them)\n")
	expect(t, []string{"hosts", "extra"}, 2, "", "berth hosts: no arguments\n")
}

// TestHostsLayouts proves berth hosts reads the host index in both KV
// layouts, as the plugin does: a host in layout 2 alone is listed with its
// containers; a host in both is one host, served from the document of the
// higher rev (layout 2 on a tie), and says "both"; of a host's rev keys the
// highest counts; a key under shards/ that is no host's rev key is a
// document not shown.
func TestHostsLayouts(t *testing.T) {
	f := startFixture(t)
	put := func(key string, h *record.Host) uint64 {
		t.Helper()
		if _, err := f.kv.Put(&api.KVPair{Key: key, Value: mustJSON(t, h)}, nil); err != nil {
			t.Fatal(err)
		}
		return f.modifyIndex(t, key)
	}
	host := func(name string, rev uint64, addr string) *record.Host {
		return &record.Host{V: 1, Name: name, Addrs: []netip.Addr{netip.MustParseAddr(addr)}, Rev: rev, Exporter: "0.2.0"}
	}
	put(record.HostRevKey(fxPrefix, "v2only", 2), host("v2only", 2, "192.0.2.1")) // a leftover of rev 2
	i4 := put(record.HostRevKey(fxPrefix, "v2only", 10), host("v2only", 10, "192.0.2.4"))
	if _, err := f.kv.Put(&api.KVPair{Key: record.ContainerKey(fxPrefix, "v2only", idGhost),
		Value: mustJSON(t, ctr(idGhost, "c-4", "four.svc", "healthy", 10, 80, "tcp", "http", "192.0.2.4", 30004))}, nil); err != nil {
		t.Fatal(err)
	}
	put(record.HostKey(fxPrefix, "newer2"), host("newer2", 5, "192.0.2.51"))
	i5 := put(record.HostRevKey(fxPrefix, "newer2", 6), host("newer2", 6, "192.0.2.5"))
	i6 := put(record.HostKey(fxPrefix, "newer1"), host("newer1", 9, "192.0.2.6"))
	put(record.HostRevKey(fxPrefix, "newer1", 8), host("newer1", 8, "192.0.2.61"))
	put(record.HostKey(fxPrefix, "tie"), host("tie", 7, "192.0.2.71"))
	i7 := put(record.HostRevKey(fxPrefix, "tie", 7), host("tie", 7, "192.0.2.7"))
	wrongShard := record.ShardsPrefix(fxPrefix) + "zz/host1/3"
	put(wrongShard, host("host1", 3, "192.0.2.99"))

	code, out, errOut := run("hosts", "-o", "json")
	var hosts []HostInfo
	if err := json.Unmarshal([]byte(out), &hosts); code != 0 || err != nil {
		t.Fatalf("berth hosts -o json: exit %d, %v\n%s%s", code, err, out, errOut)
	}
	got := map[string]HostInfo{}
	for _, h := range hosts {
		got[h.Name] = h
	}
	for _, want := range []struct {
		name, layout, addr string
		rev, index         uint64
		containers         int
	}{
		{"v2only", "2", "192.0.2.4", 10, i4, 1},
		{"newer2", "both", "192.0.2.5", 6, i5, 0},
		{"newer1", "both", "192.0.2.6", 9, i6, 0},
		{"tie", "both", "192.0.2.7", 7, i7, 0},
		{"host1", "1", "192.0.2.10", 1, f.modifyIndex(t, record.HostKey(fxPrefix, "host1")), 2},
	} {
		h := got[want.name]
		if h.Layout != want.layout || len(h.Addrs) != 1 || h.Addrs[0] != want.addr || h.Rev != want.rev || h.Index != want.index ||
			h.Containers != want.containers {
			t.Errorf("%s: %+v, want layout %s, addr %s, rev %d, index %d, %d containers", want.name, h, want.layout, want.addr,
				want.rev, want.index, want.containers)
		}
	}
	if len(hosts) != 6 { // the five above and host2
		t.Errorf("%d hosts: %+v", len(hosts), hosts)
	}
	// The key in no host's shard is one more document not shown (host3's
	// invalid document, host2's invalid container, ghost's orphan before).
	if want := "berth: 4 documents not shown"; !strings.HasPrefix(errOut, want) {
		t.Errorf("stderr %q, want %q", errOut, want)
	}
	code, out, _ = run("check")
	if code != 1 || !strings.Contains(out, "key "+wrongShard+": host host1 belongs in shard "+record.Shard("host1")+"\n") {
		t.Errorf("berth check: exit %d\n%s", code, out)
	}
}
