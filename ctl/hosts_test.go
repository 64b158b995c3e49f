package ctl

import (
	"fmt"
	"testing"

	"github.com/berthdns/berth/record"
)

func TestHosts(t *testing.T) {
	f := startFixture(t)
	i1, i2 := f.modifyIndex(t, record.HostKey(fxPrefix, "host1")), f.modifyIndex(t, record.HostKey(fxPrefix, "host2"))
	const notShown = "berth: 3 documents not shown: the plugin would not serve them (berth check lists them)\n"
	// host2's exporter field carries a terminal escape: printed escaped.
	expect(t, []string{"hosts"}, 0, fmt.Sprintf(`HOST   ADDRS       CONTAINERS  EXPORTER      SESSION        REV  INDEX
host1  192.0.2.10  2           0.1.0         live %s  1    %d
host2  192.0.2.20  3           0.1.0\x1b[2J  none           4    %d
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
    "index": %d
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
    "index": %d
  }
]
`, f.session, i1, i2), notShown)

	// host1's exporter dies: its session goes, and with behavior=delete its
	// host document; its two container documents are orphans now.
	if _, err := f.consul.Client().Session().Destroy(f.session, nil); err != nil {
		t.Fatal(err)
	}
	expect(t, []string{"hosts", "-o", "table"}, 0, fmt.Sprintf(`HOST   ADDRS       CONTAINERS  EXPORTER      SESSION  REV  INDEX
host2  192.0.2.20  3           0.1.0\x1b[2J  none     4    %d
`, i2), "berth: 5 documents not shown: the plugin would not serve them (berth check lists them)\n")
	expect(t, []string{"hosts", "extra"}, 2, "", "berth hosts: no arguments\n")
}
