package faults

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/miekg/dns"

	"github.com/berthdns/berth/exporter"
	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
)

const aclMgmt = "5b2f4c7e-1d3a-4e8b-9c0d-6f7a8b9c0d1e"

// aclWorld is a single Consul server with ACLs on, deny by default.
func aclWorld(t *testing.T) (*world, *testenv.Consul, *api.Client) {
	t.Helper()
	w := newWorld(t)
	// The default token lets testenv's readiness probe write; it is
	// cleared at once below, so that a request without a token is denied.
	c := testenv.StartConsul(t, testenv.ConsulOptions{Persistent: true, ExtraHCL: fmt.Sprintf(`
acl {
  enabled = true
  default_policy = "deny"
  enable_token_persistence = false
  tokens {
    initial_management = %q
    default = %q
    agent = %q
  }
}`, aclMgmt, aclMgmt, aclMgmt)})
	admin := tokenClient(t, c.HTTP, aclMgmt)
	if _, err := admin.Agent().UpdateDefaultACLToken("", nil); err != nil {
		t.Fatal(err)
	}
	w.useConsul(c.HTTP)
	if _, err := w.consul.KV().Put(&api.KVPair{Key: prefix + "/x", Value: []byte("x")}, nil); err == nil {
		t.Fatal("a write without a token was allowed: ACLs are not deny-by-default")
	}
	return w, c, admin
}

func tokenClient(t *testing.T, addr, token string) *api.Client {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Token = addr, token
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func makeToken(t *testing.T, admin *api.Client, name, rules string) string {
	t.Helper()
	p, _, err := admin.ACL().PolicyCreate(&api.ACLPolicy{Name: name, Rules: rules}, nil)
	if err != nil {
		t.Fatalf("policy %s: %v", name, err)
	}
	tok, _, err := admin.ACL().TokenCreate(&api.ACLToken{Description: name, Policies: []*api.ACLTokenPolicyLink{{ID: p.ID}}}, nil)
	if err != nil {
		t.Fatalf("token %s: %v", name, err)
	}
	return tok.SecretID
}

func denied(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "403") || strings.Contains(strings.ToLower(err.Error()), "permission denied"))
}

// Scenario 6's spans, not waits for a condition: aclPollFirst lets the
// poller of B's records sample them before A's token attacks B's session,
// and aclWatch is how long it samples them afterwards: past B's next
// renewal (every TTL/2, 5 s) and then a republish, so that a session A
// destroyed would show as missed answers before B restored them.
const (
	aclPollFirst = 20 * probeEvery
	aclWatch     = 12 * time.Second
)

// Scenario 6. Injects: two exporters under ACLs (deny by default), each with
// the token the README's policy gives (its own host's keys, and the catalog
// node and sessions named after its host), and direct attacks of each token on the other
// host's records: write, delete, delete-tree, CAS, acquire with its own
// session, transaction, path tricks, and destroying the other's session.
// Must hold: neither can write, delete or take over the other's keys, and
// neither can make the other's records disappear from DNS; the plugin's
// read-only token serves both and can write nothing.
func TestFault6ACLConfinement(t *testing.T) {
	w, c, admin := aclWorld(t)
	hostA, hostB := "ha-"+w.run, "hb-"+w.run
	tokA := makeToken(t, admin, "exporter-"+hostA, record.ExporterACL(prefix, hostA))
	tokB := makeToken(t, admin, "exporter-"+hostB, record.ExporterACL(prefix, hostB))
	tokDNS := makeToken(t, admin, "berth-plugin", record.PluginACL(prefix))
	w.startCoreDNS(tokDNS)

	ca := w.runContainer("acla", map[string]string{"berth.test.exp": "a"})
	cb := w.runContainer("aclb", map[string]string{"berth.test.exp": "b"})
	start := func(host, token, exp string) *testenv.ExporterProc {
		env := append(w.exporterEnv(host, c.HTTP, token), "BERTH_ONLY_LABEL=berth.test.exp="+exp, "BERTH_LISTEN=")
		return testenv.StartExporter(t, env, "--listen=", "--session-ttl", "10s")
	}
	ea, eb := start(hostA, tokA, "a"), start(hostB, tokB, "b")
	nameA, nameB := ctrName(hostA, ca.Name), ctrName(hostB, cb.Name)
	for _, x := range []struct {
		name string
		port int
	}{{nameA, ca.HostPort}, {nameB, cb.HostPort}} {
		if _, ok := waitFor(w.servedWait(), func() bool {
			ports, _, _ := w.dnsPorts(x.name)
			return equalInts(ports, []int{x.port})
		}); !ok {
			t.Fatalf("%s not served within %v through the plugin's read-only token", x.name, w.servedWait())
		}
	}

	attacks, blocked := 0, 0
	attack := func(who, what string, err error, mustDeny bool) {
		t.Helper()
		attacks++
		if denied(err) {
			blocked++
			return
		}
		if mustDeny {
			t.Errorf("%s: %s was not denied (err %v)", who, what, err)
		} else {
			t.Logf("%s: %s allowed (harmless: checked below)", who, what)
		}
	}
	for _, pair := range []struct{ who, tok, victim, own string }{{"A", tokA, hostB, hostA}, {"B", tokB, hostA, hostB}} {
		cl := tokenClient(t, c.HTTP, pair.tok)
		kv := cl.KV()
		vHost := record.HostKey(prefix, pair.victim)
		vCtrs, _, err := admin.KV().List(record.ContainersPrefix(prefix, pair.victim), nil)
		if err != nil || len(vCtrs) == 0 {
			t.Fatalf("victim %s has no documents: %v", pair.victim, err)
		}
		vCtr := vCtrs[0]
		junk := []byte(`{"v":1}`)
		_, err = kv.Put(&api.KVPair{Key: vHost, Value: junk}, nil)
		attack(pair.who, "write the other's host document", err, true)
		_, err = kv.Put(&api.KVPair{Key: record.ContainerKey(prefix, pair.victim, idOf(0xdead)), Value: junk}, nil)
		attack(pair.who, "add a container document to the other host", err, true)
		_, err = kv.Delete(vCtr.Key, nil)
		attack(pair.who, "delete the other's container document", err, true)
		_, err = kv.Delete(vHost, nil)
		attack(pair.who, "delete the other's host document", err, true)
		_, err = kv.DeleteTree(record.ContainersPrefix(prefix, pair.victim), nil)
		attack(pair.who, "delete the other's container tree", err, true)
		_, err = kv.DeleteTree(prefix+"/", nil)
		attack(pair.who, "delete the whole prefix", err, true)
		_, _, err = kv.CAS(&api.KVPair{Key: vCtr.Key, Value: junk, ModifyIndex: vCtr.ModifyIndex}, nil)
		attack(pair.who, "CAS the other's container document", err, true)
		_, _, err = kv.DeleteCAS(&api.KVPair{Key: vCtr.Key, ModifyIndex: vCtr.ModifyIndex}, nil)
		attack(pair.who, "delete-CAS the other's container document", err, true)
		_, _, err = cl.Session().CreateNoChecks(&api.SessionEntry{Node: pair.victim, Name: "attacker", Behavior: api.SessionBehaviorDelete, TTL: "10s"}, nil)
		attack(pair.who, "create a session on the other's node", err, true)
		own, _, err := cl.Session().CreateNoChecks(&api.SessionEntry{Node: pair.own, Name: "attacker", Behavior: api.SessionBehaviorDelete, TTL: "10s"}, nil)
		if err != nil {
			t.Fatalf("%s cannot create a session of its own: %v", pair.who, err)
		}
		_, _, err = kv.Acquire(&api.KVPair{Key: vCtr.Key, Value: junk, Session: own}, nil)
		attack(pair.who, "acquire the other's container key with its own session", err, true)
		_, _, err = kv.Release(&api.KVPair{Key: vCtr.Key, Session: vCtr.Session}, nil)
		attack(pair.who, "release the other's lock", err, true)
		// Layout 2's host index (README.md#consul-kv): the other's entry,
		// a key of the other's name in one's own shard directory, and one
		// of one's own name in the other's shard.
		_, err = kv.Put(&api.KVPair{Key: record.HostRevKey(prefix, pair.victim, 1<<40), Value: junk}, nil)
		attack(pair.who, "write a layout 2 entry of the other host", err, true)
		_, err = kv.DeleteTree(record.HostRevPrefix(prefix, pair.victim), nil)
		attack(pair.who, "delete the other's layout 2 entry", err, true)
		_, err = kv.Put(&api.KVPair{Key: record.ShardPrefix(prefix, record.Shard(pair.victim)) + pair.own + "x/1", Value: junk}, nil)
		attack(pair.who, "write a layout 2 entry of another name in the other's shard", err, true)
		ok, _, _, err := cl.Txn().Txn(api.TxnOps{{KV: &api.KVTxnOp{Verb: api.KVSet, Key: vHost, Value: junk}}}, nil)
		if err == nil && !ok {
			err = fmt.Errorf("403 (transaction rolled back)")
		}
		attack(pair.who, "transaction writing the other's host document", err, true)
		// Path tricks on the key layout (record's), each outside the
		// exporter's own keys.
		for _, key := range []string{
			record.HostKey(prefix, pair.own) + "/../" + pair.victim,
			record.HostKey(prefix, pair.victim) + "/",
			strings.TrimSuffix(record.ContainersPrefix(prefix, pair.victim), "/"),
			record.ContainerKey(prefix, pair.own+"x", idOf(1)),
			record.ContainerKey(prefix, strings.ToUpper(pair.victim), idOf(1)),
			record.ContainerKey(prefix+"/", pair.victim, idOf(1)),
			record.PolicyKey(prefix),
		} {
			_, err = kv.Put(&api.KVPair{Key: key, Value: junk}, nil)
			attack(pair.who, "path trick "+key, err, true)
		}
		// Inside its own prefix: allowed, but must not reach the other.
		for _, key := range []string{
			record.ContainersPrefix(prefix, pair.own) + "../" + pair.victim + "/" + idOf(0xbad),
			record.ContainersPrefix(prefix, pair.own) + "../../hosts/" + pair.victim,
			record.HostRevPrefix(prefix, pair.own) + "../../" + record.Shard(pair.victim) + "/" + pair.victim + "/99999",
			record.HostRevPrefix(prefix, pair.own) + "99999/../../" + pair.victim + "/99999",
		} {
			doc := mutate(0xbad, func(m map[string]any) { m["name"] = "hijack" })
			_, err = kv.Put(&api.KVPair{Key: key, Value: doc}, nil)
			attack(pair.who, "write own-prefix key "+key, err, false)
		}
	}
	// The other exporter's records are untouched (the path tricks inside
	// one's own prefix are not read as the other's).
	for _, x := range []struct {
		name string
		port int
	}{{nameA, ca.HostPort}, {nameB, cb.HostPort}} {
		if ports, rcode, err := w.dnsPorts(x.name); err != nil || !equalInts(ports, []int{x.port}) {
			t.Errorf("%s after the KV attacks: %v %s %v", x.name, ports, dns.RcodeToString[rcode], err)
		}
	}
	if r, err := testenv.Exchange("udp", w.dns.Addr, "hijack."+hostName(hostB), dns.TypeA, 0); err != nil || wantNX(r) != nil {
		t.Errorf("a path trick in A's prefix created a name under B: %v %v", r, err)
	}
	// The plugin's token writes nothing.
	_, err := tokenClient(t, c.HTTP, tokDNS).KV().Put(&api.KVPair{Key: record.HostKey(prefix, hostA), Value: []byte("{}")}, nil)
	attack("plugin", "write with the read-only token", err, true)

	// The session attack: A finds B's session and destroys it; with
	// behavior=delete Consul then deletes every key of B. B's records are
	// polled every 10 ms meanwhile.
	clA := tokenClient(t, c.HTTP, tokA)
	var bSession string
	if list, _, err := clA.Session().List(nil); err == nil {
		for _, s := range list {
			if s.Name == exporter.SessionName(hostB) {
				bSession = s.ID
			}
		}
		t.Logf("A lists %d sessions, B's among them: %v", len(list), bSession != "")
	}
	if bSession == "" {
		bSession = holder(tokenClient(t, c.HTTP, aclMgmt), record.HostKey(prefix, hostB))
	}
	ctx, cancel := context.WithCancel(context.Background())
	var polls, misses atomic.Int64
	pollDone := make(chan struct{})
	go func() {
		defer close(pollDone)
		for ctx.Err() == nil {
			r, err := testenv.Exchange("udp", w.dns.Addr, nameB, dns.TypeSRV, 0)
			polls.Add(1)
			if err != nil || wantSRV(cb.HostPort)(r) != nil {
				misses.Add(1)
			}
			time.Sleep(probeEvery)
		}
	}()
	time.Sleep(aclPollFirst)
	_, _, err = clA.Session().Renew(bSession, nil)
	attack("A", "renew B's session", err, true)
	_, err = clA.Session().Destroy(bSession, nil)
	attack("A", "destroy B's session (deletes B's keys: behavior=delete)", err, true)
	time.Sleep(aclWatch)
	cancel()
	<-pollDone
	if misses.Load() > 0 {
		t.Errorf("B's records disappeared from DNS for %d of %d polls (every 10 ms) after A's token tried to destroy B's session",
			misses.Load(), polls.Load())
	}
	if !ea.Running() || !eb.Running() {
		t.Error("an exporter exited")
	}

	fault(t, 6, "attacks", attacks, "denied", blocked, "b_dns_misses_after_session_destroy", misses.Load(), "b_dns_polls", polls.Load())
}
