package ctl

import (
	"fmt"
	"testing"

	"github.com/berthdns/berth/record"
)

func TestLs(t *testing.T) {
	f := startFixture(t)
	idx := func(host, id string) uint64 { return f.modifyIndex(t, record.ContainerKey(fxPrefix, host, id)) }
	const notShown = "berth: 3 documents not shown: the plugin would not serve them (berth check lists them)\n"

	expect(t, []string{"ls"}, 0, fmt.Sprintf(`SERVICE   INSTANCE  HOST   PORT                   ENDPOINT          HEALTH     SERVED                INDEX
db.shop   db-1      host1  5432/tcp (postgresql)  192.0.2.10:32769  unhealthy  no: unhealthy         %d
lo.test   lo-1      host2  8080/tcp               127.0.0.1:32772   none       no: loopback_address  %d
pay.bank  pay-1     host2  443/tcp (https)        192.0.2.20:32771  healthy    no: refused           %d
web.shop  web-1     host1  80/tcp (http)          192.0.2.10:32768  healthy    yes                   %d
web.shop  web-2     host2  80/tcp (http)          192.0.2.20:32770  healthy    yes                   %d
`, idx("host1", idDB1), idx("host2", idLo1), idx("host2", idPay1), idx("host1", idWeb1), idx("host2", idWeb2)), notShown)

	// --allow-loopback serves lo-1 as the Corefile's allow_loopback would;
	// a service is named with or without the zone.
	expect(t, []string{"--allow-loopback", "ls", "lo.test.c.example.org."}, 2, "",
		"berth: flag provided but not defined: -allow-loopback (berth --help)\n")
	expect(t, []string{"ls", "lo.test.c.example.org.", "--allow-loopback"}, 0, fmt.Sprintf(
		`SERVICE  INSTANCE  HOST   PORT      ENDPOINT         HEALTH  SERVED  INDEX
lo.test  lo-1      host2  8080/tcp  127.0.0.1:32772  none    yes     %d
`, idx("host2", idLo1)), notShown)

	expect(t, []string{"ls", "web.shop", "-o", "json"}, 0, fmt.Sprintf(`[
  {
    "service": "web.shop",
    "instances": [
      {
        "name": "web-1",
        "host": "host1",
        "id": "%s",
        "image": "img/web-1:1",
        "health": "healthy",
        "paused": false,
        "priority": 10,
        "weight": 10,
        "aliases": [],
        "index": %d,
        "endpoints": [
          {
            "port": 80,
            "proto": "tcp",
            "port_name": "http",
            "endpoint": "192.0.2.10:32768",
            "served": true
          }
        ]
      },
      {
        "name": "web-2",
        "host": "host2",
        "id": "%s",
        "image": "img/web-2:1",
        "health": "healthy",
        "paused": false,
        "priority": 20,
        "weight": 10,
        "aliases": [],
        "index": %d,
        "endpoints": [
          {
            "port": 80,
            "proto": "tcp",
            "port_name": "http",
            "endpoint": "192.0.2.20:32770",
            "served": true
          }
        ]
      }
    ]
  }
]
`, idWeb1, idx("host1", idWeb1), idWeb2, idx("host2", idWeb2)), notShown)

	expect(t, []string{"ls", "pay.bank", "-o", "json"}, 0, fmt.Sprintf(`[
  {
    "service": "pay.bank",
    "instances": [
      {
        "name": "pay-1",
        "host": "host2",
        "id": "%s",
        "image": "img/pay-1:1",
        "health": "healthy",
        "paused": false,
        "priority": 10,
        "weight": 10,
        "aliases": [],
        "index": %d,
        "endpoints": [
          {
            "port": 443,
            "proto": "tcp",
            "port_name": "https",
            "endpoint": "192.0.2.20:32771",
            "served": false,
            "not_served": [
              "refused"
            ]
          }
        ]
      }
    ]
  }
]
`, idPay1, idx("host2", idPay1)), notShown)

	// The orphan's service is not listed: the plugin would not serve it.
	expect(t, []string{"ls", "ghost.svc"}, 1, "", "berth ls: no service ghost.svc in berth/\n")
	expect(t, []string{"ls", "a", "b"}, 2, "", "berth ls: at most one SERVICE\n")
}

// An alias finds its service's instances that carry it; a paused container
// is not served.
func TestLsAliasPaused(t *testing.T) {
	f := startFixture(t)
	c := ctr(idWeb1, "web-1", "web.shop", "healthy", 10, 80, "tcp", "http", "192.0.2.10", 32768)
	c.Aliases = []string{"www.shop"}
	c.Paused = true
	f.publish(t, f.host1, c)
	expect(t, []string{"ls", "www.shop"}, 0, fmt.Sprintf(
		`SERVICE   INSTANCE  HOST   PORT           ENDPOINT          HEALTH          SERVED      INDEX
web.shop  web-1     host1  80/tcp (http)  192.0.2.10:32768  healthy,paused  no: paused  %d
`, f.modifyIndex(t, record.ContainerKey(fxPrefix, "host1", idWeb1))),
		"berth: 3 documents not shown: the plugin would not serve them (berth check lists them)\n")
}
