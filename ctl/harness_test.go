package ctl

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
)

// The fixture every test reads: a real Consul agent holding documents as
// exporters write them, good and bad.
//
//	host1 (192.0.2.10, its key held by a live session)
//	  web-1  web.shop  healthy    80/tcp   192.0.2.10:32768  priority 10
//	  db-1   db.shop   unhealthy  5432/tcp 192.0.2.10:32769
//	host2 (192.0.2.20, no session, a hostile exporter field)
//	  web-2  web.shop  healthy    80/tcp   192.0.2.20:32770  priority 20
//	  pay-1  pay.bank  healthy    443/tcp  192.0.2.20:32771  refused: the policy gives pay.bank to host1
//	  lo-1   lo.test   none       8080/tcp 127.0.0.1:32772   a loopback address
//	  ffff…  not JSON                                        invalid
//	host3    a host document whose name is not its key       invalid
//	ghost    a valid container document without a host one   orphan
const (
	fxPrefix = "berth"
	fxZone   = "c.example.org"
)

var (
	idWeb1  = strings.Repeat("a", 64)
	idDB1   = strings.Repeat("b", 64)
	idWeb2  = strings.Repeat("c", 64)
	idPay1  = strings.Repeat("d", 64)
	idLo1   = strings.Repeat("e", 64)
	idBad   = strings.Repeat("f", 64)
	idGhost = "0123456789ab"
)

// fixture is a seeded agent.
type fixture struct {
	consul  *testenv.Consul
	kv      *api.KV
	session string // the session holding host1's key
	host1   *record.Host
	host2   *record.Host
}

func ctr(id, name, service, health string, prio int, port int, proto, pname, addr string, hostPort int) *record.Container {
	return &record.Container{V: 1, ID: id, Name: name, Service: service, Image: "img/" + name + ":1", Health: health,
		Priority: prio, Weight: 10,
		Ports: []record.Port{{Port: port, Proto: proto, Name: pname, Addr: netip.MustParseAddr(addr), HostPort: hostPort}}}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func startFixture(t *testing.T) *fixture {
	t.Helper()
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	t.Setenv("CONSUL_HTTP_ADDR", consul.HTTP)
	t.Setenv("BERTH_PREFIX", "")
	t.Setenv("BERTH_ZONE", "")
	f := &fixture{consul: consul, kv: consul.Client().KV()}
	put := func(key string, value []byte) {
		t.Helper()
		if _, err := f.kv.Put(&api.KVPair{Key: key, Value: value}, nil); err != nil {
			t.Fatal(err)
		}
	}
	f.host1 = &record.Host{V: 1, Name: "host1", Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.10")}, Rev: 1, Exporter: "0.1.0"}
	f.host2 = &record.Host{V: 1, Name: "host2", Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.20")}, Rev: 4,
		Exporter: "0.1.0\x1b[2J"}
	put(record.ContainerKey(fxPrefix, "host1", idWeb1), mustJSON(t, ctr(idWeb1, "web-1", "web.shop", "healthy", 10, 80, "tcp", "http", "192.0.2.10", 32768)))
	put(record.ContainerKey(fxPrefix, "host1", idDB1), mustJSON(t, ctr(idDB1, "db-1", "db.shop", "unhealthy", 10, 5432, "tcp", "postgresql", "192.0.2.10", 32769)))
	put(record.ContainerKey(fxPrefix, "host2", idWeb2), mustJSON(t, ctr(idWeb2, "web-2", "web.shop", "healthy", 20, 80, "tcp", "http", "192.0.2.20", 32770)))
	put(record.ContainerKey(fxPrefix, "host2", idPay1), mustJSON(t, ctr(idPay1, "pay-1", "pay.bank", "healthy", 10, 443, "tcp", "https", "192.0.2.20", 32771)))
	put(record.ContainerKey(fxPrefix, "host2", idLo1), mustJSON(t, ctr(idLo1, "lo-1", "lo.test", "none", 10, 8080, "tcp", "", "127.0.0.1", 32772)))
	put(record.ContainerKey(fxPrefix, "host2", idBad), []byte("{not json"))
	put(record.ContainerKey(fxPrefix, "ghost", idGhost), mustJSON(t, ctr(idGhost, "spook", "ghost.svc", "healthy", 10, 80, "tcp", "http", "192.0.2.30", 30000)))
	put(record.HostKey(fxPrefix, "host2"), mustJSON(t, f.host2))
	put(record.HostKey(fxPrefix, "host3"), mustJSON(t, &record.Host{V: 1, Name: "other", Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.40")}}))
	put(record.PolicyKey(fxPrefix), []byte(`{"v":1,"default":"allow","rules":[{"service":"pay.bank","hosts":["host1"]}]}`))
	// host1's document is held by a session, as its exporter holds it.
	id, _, err := consul.Client().Session().CreateNoChecks(&api.SessionEntry{Name: "berth-exporter:host1",
		Behavior: api.SessionBehaviorDelete, TTL: "3600s"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.session = id
	ok, _, err := f.kv.Acquire(&api.KVPair{Key: record.HostKey(fxPrefix, "host1"), Value: mustJSON(t, f.host1), Session: id}, nil)
	if err != nil || !ok {
		t.Fatalf("acquire host1: %v %v", ok, err)
	}
	return f
}

// modifyIndex is key's ModifyIndex now.
func (f *fixture) modifyIndex(t testing.TB, key string) uint64 {
	t.Helper()
	p, _, err := f.kv.Get(key, nil)
	if err != nil || p == nil {
		t.Fatalf("get %s: %v %v", key, p, err)
	}
	return p.ModifyIndex
}

// publish writes container documents and h with its rev bumped in one
// transaction, as an exporter does (plugin/watch_test.go's publish).
func (f *fixture) publish(t testing.TB, h *record.Host, ctrs ...*record.Container) {
	t.Helper()
	h.Rev++
	var txn api.KVTxnOps
	for _, c := range ctrs {
		txn = append(txn, &api.KVTxnOp{Verb: api.KVSet, Key: record.ContainerKey(fxPrefix, h.Name, c.ID), Value: mustJSON(t, c)})
	}
	txn = append(txn, &api.KVTxnOp{Verb: api.KVSet, Key: record.HostKey(fxPrefix, h.Name), Value: mustJSON(t, h)})
	ok, resp, _, err := f.kv.Txn(txn, nil)
	if err != nil || !ok {
		t.Fatalf("consul txn: ok=%v err=%v resp=%+v", ok, err, resp)
	}
}

// run is the command in-process: its exit status and what it printed.
func run(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = Run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// expect checks one run's exit status and exact output.
func expect(t *testing.T, args []string, code int, stdout, stderr string) {
	t.Helper()
	c, out, errOut := run(args...)
	if c != code || out != stdout || errOut != stderr {
		t.Errorf("berth %s: exit %d, want %d\n--- stdout:\n%s--- want:\n%s--- stderr:\n%s--- want:\n%s",
			strings.Join(args, " "), c, code, out, stdout, errOut, stderr)
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
