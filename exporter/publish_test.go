package exporter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

func testDoc(n, hostPort int) *record.Container {
	return &record.Container{V: 1, ID: fmt.Sprintf("%064x", n), Name: fmt.Sprintf("c%d", n),
		Service: "svc", Image: "img", Health: record.HealthNone, Priority: 10, Weight: 10,
		Ports: []record.Port{{Port: 80, Proto: "tcp", Name: "http", Addr: adv4, HostPort: hostPort}}}
}

func docs(docs ...*record.Container) map[string]*record.Container {
	m := map[string]*record.Container{}
	for _, d := range docs {
		m[d.ID] = d
	}
	return m
}

// kvState reads a host's documents back through record's decoders, as the
// plugin would.
type hostState struct {
	host    *record.Host
	hostSes string
	docs    map[string]*record.Container
	ses     map[string]string
}

func readHost(t *testing.T, c *api.Client, prefix, host string) hostState {
	t.Helper()
	st := hostState{docs: map[string]*record.Container{}, ses: map[string]string{}}
	pair, _, err := c.KV().Get(record.HostKey(prefix, host), nil)
	if err != nil {
		t.Fatal(err)
	}
	if pair != nil {
		if st.host, err = record.DecodeHost(pair.Key, pair.Value); err != nil {
			t.Fatal(err)
		}
		st.hostSes = pair.Session
	}
	pairs, _, err := c.KV().List(record.ContainersPrefix(prefix, host), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pairs {
		_, id, ok := record.HostFromContainerKey(prefix, p.Key)
		if !ok {
			t.Fatalf("bad key %s", p.Key)
		}
		d, err := record.DecodeContainer(p.Key, p.Value)
		if err != nil {
			t.Fatal(err)
		}
		st.docs[id], st.ses[id] = d, p.Session
	}
	return st
}

func newSession(t *testing.T, c *api.Client, prefix, host string) (*Session, string) {
	t.Helper()
	s := NewSession(c, prefix, host, 10*time.Second, discard)
	id, err := s.ID(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s, id
}

func TestPublisherConsul(t *testing.T) {
	t.Parallel()
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	c := consul.Client()
	ctx := context.Background()
	_, sid := newSession(t, c, "berth", "h1")

	// The session must not be bound to the agent's serfHealth check.
	e, _, err := c.Session().Info(sid, nil)
	if err != nil || e == nil {
		t.Fatalf("session info: %v %v", e, err)
	}
	if len(e.NodeChecks) != 0 || len(e.Checks) != 0 || e.Behavior != "delete" || e.LockDelay > time.Millisecond || e.TTL != "10s" {
		t.Errorf("session %+v: want no checks, behavior delete, lock-delay 1ms, ttl 10s", e)
	}

	p, err := NewPublisher(c, "berth", "h1")
	if err != nil {
		t.Fatal(err)
	}
	addrs := []netip.Addr{adv4}
	d1, d2, d3 := testDoc(1, 1001), testDoc(2, 1002), testDoc(3, 1003)

	step := func(name string, addrs []netip.Addr, want map[string]*record.Container, sets, deletes, txns int) hostState {
		t.Helper()
		st, err := p.Publish(ctx, sid, addrs, want)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if st.Sets != sets || st.Deletes != deletes || st.Txns != txns {
			t.Errorf("%s: stats %+v, want sets %d deletes %d txns %d", name, st, sets, deletes, txns)
		}
		got := readHost(t, c, "berth", "h1")
		if len(got.docs) != len(want) {
			t.Errorf("%s: %d documents in KV, want %d", name, len(got.docs), len(want))
		}
		for id, d := range want {
			if g := got.docs[id]; g == nil || g.Ports[0] != d.Ports[0] || got.ses[id] != sid {
				t.Errorf("%s: %s is %+v held by %q", name, id[:12], g, got.ses[id])
			}
		}
		if got.hostSes != sid {
			t.Errorf("%s: host document held by %q", name, got.hostSes)
		}
		return got
	}

	got := step("create", addrs, docs(d1, d2, d3), 3, 0, 1)
	if got.host.Rev != 1 || got.host.Name != "h1" || !strings.HasPrefix(got.host.Exporter, "berth-exporter ") {
		t.Errorf("host document %+v", got.host)
	}
	step("unchanged", addrs, docs(d1, d2, d3), 0, 0, 0)
	got = step("change one", addrs, docs(d1, testDoc(2, 2002), d3), 1, 0, 1)
	if got.host.Rev != 2 {
		t.Errorf("rev %d after change, want 2", got.host.Rev)
	}
	got = step("delete one", addrs, docs(d1, testDoc(2, 2002)), 0, 1, 1)
	if got.host.Rev != 3 {
		t.Errorf("rev %d after delete, want 3", got.host.Rev)
	}
	got = step("addresses", []netip.Addr{adv4, adv6}, docs(d1, testDoc(2, 2002)), 0, 0, 1)
	if got.host.Rev != 4 || len(got.host.Addrs) != 2 {
		t.Errorf("host document %+v after address change", got.host)
	}

	// A fresh publisher (a restarted exporter) reads KV and writes nothing.
	p2, _ := NewPublisher(c, "berth", "h1")
	if st, err := p2.Publish(ctx, sid, []netip.Addr{adv4, adv6}, docs(d1, testDoc(2, 2002))); err != nil || st != (PublishStats{}) {
		t.Errorf("restart with unchanged state: %+v %v", st, err)
	}

	// Stale keys of containers gone meanwhile are removed by the fresh one.
	if st, err := p2.Publish(ctx, sid, []netip.Addr{adv4, adv6}, docs(d1)); err != nil || st.Deletes != 1 {
		t.Errorf("stale key removal: %+v %v", st, err)
	}

	// The first publisher's view is now stale: its transaction is rolled
	// back by the host document's check-index, and the retry converges.
	_, err = p.Publish(ctx, sid, addrs, docs(d1, d3))
	var txnErr *TxnError
	if !errors.As(err, &txnErr) {
		t.Fatalf("stale publisher: err %v, want a rolled-back transaction", err)
	}
	got = step("after conflict", addrs, docs(d1, d3), 1, 0, 1)
	if got.host.Rev != 6 {
		t.Errorf("rev %d, want 6 (one per committed transaction)", got.host.Rev)
	}

	// Nothing outside the host's subtree was written.
	keys, _, err := c.KV().Keys("berth/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k != record.HostKey("berth", "h1") && !strings.HasPrefix(k, record.ContainersPrefix("berth", "h1")) {
			t.Errorf("key %s outside the host subtree", k)
		}
	}

	// A document that fails validation is refused before anything is written.
	bad := testDoc(9, 0)
	if _, err := p.Publish(ctx, sid, addrs, docs(d1, bad)); err == nil {
		t.Error("invalid document accepted")
	}

	// Deregister removes the subtree.
	if err := p.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	if got := readHost(t, c, "berth", "h1"); got.host != nil || len(got.docs) != 0 {
		t.Errorf("after deregister: %+v", got)
	}
}

// TestPublisherSplit proves the split against Consul's real limits: 300
// documents need three transactions of at most 128 operations, and large
// documents are split by bytes; every transaction bumps rev.
func TestPublisherSplit(t *testing.T) {
	t.Parallel()
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	c := consul.Client()
	ctx := context.Background()
	_, sid := newSession(t, c, "berth", "big")
	p, _ := NewPublisher(c, "berth", "big")

	want := map[string]*record.Container{}
	for i := range 300 {
		d := testDoc(i, 1000+i)
		want[d.ID] = d
	}
	st, err := p.Publish(ctx, sid, []netip.Addr{adv4}, want)
	if err != nil {
		t.Fatal(err)
	}
	if st.Sets != 300 || st.Txns != 3 {
		t.Errorf("300 documents: %+v, want 300 sets in 3 transactions", st)
	}
	got := readHost(t, c, "berth", "big")
	if len(got.docs) != 300 || got.host.Rev != 3 {
		t.Errorf("%d documents, rev %d", len(got.docs), got.host.Rev)
	}

	// ~40 KiB documents (many ports): 60 of them are ~3.2 MiB as base64.
	large := map[string]*record.Container{}
	for i := range 60 {
		d := testDoc(1000+i, 1)
		d.Ports = nil
		for j := range 400 {
			d.Ports = append(d.Ports, record.Port{Port: 1 + j, Proto: "tcp", Name: "some-long-port-name", Addr: adv6, HostPort: 10000 + j})
		}
		large[d.ID] = d
	}
	st, err = p.Publish(ctx, sid, []netip.Addr{adv4}, large)
	if err != nil {
		t.Fatal(err)
	}
	if st.Sets != 60 || st.Deletes != 300 || st.Txns < 6 {
		t.Errorf("large documents: %+v, want 60 sets, 300 deletes, at least 6 transactions", st)
	}
	got = readHost(t, c, "berth", "big")
	if len(got.docs) != 60 || got.host.Rev != uint64(3+st.Txns) {
		t.Errorf("%d documents, rev %d", len(got.docs), got.host.Rev)
	}
}

// TestPublisherACL runs the publisher and the session under a token with
// exactly the per-host policy of the README, and checks that the plugin's
// read-only policy can read but not write.
func TestPublisherACL(t *testing.T) {
	// Not parallel: testenv's readiness probe writes a key with the
	// environment's token, so the management token goes there.
	t.Setenv("CONSUL_HTTP_TOKEN", "root-token")
	consul := testenv.StartConsul(t, testenv.ConsulOptions{ExtraHCL: `
acl {
  enabled = true
  default_policy = "deny"
  tokens { initial_management = "root-token" }
}`})
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Token = consul.HTTP, "root-token"
	root, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	token := func(name, rules string) *api.Client {
		t.Helper()
		var pol *api.ACLPolicy
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			pol, _, err = root.ACL().PolicyCreate(&api.ACLPolicy{Name: name, Rules: rules}, nil)
			if err == nil || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			t.Fatalf("policy %s: %v", name, err)
		}
		tok, _, err := root.ACL().TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{ID: pol.ID}}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		cfg := api.DefaultConfig()
		cfg.Address, cfg.Token = consul.HTTP, tok.SecretID
		c, err := api.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	exp := token("berth-exporter-h1", record.ExporterACL("berth", "h1"))
	plugin := token("berth-plugin", record.PluginACL("berth"))
	ctx := context.Background()

	s := NewSession(exp, "berth", "h1", 10*time.Second, discard)
	sid, err := s.ID(ctx)
	if err != nil {
		t.Fatalf("session under the exporter policy: %v", err)
	}
	p, _ := NewPublisher(exp, "berth", "h1")
	if _, err := p.Publish(ctx, sid, []netip.Addr{adv4}, docs(testDoc(1, 1001))); err != nil {
		t.Fatalf("publish under the exporter policy: %v", err)
	}
	if err := s.Renew(ctx); err != nil {
		t.Errorf("renew: %v", err)
	}
	// A restarted exporter with the same token adopts the session.
	s2 := NewSession(exp, "berth", "h1", 10*time.Second, discard)
	if id, err := s2.ID(ctx); err != nil || id != sid {
		t.Errorf("adopt under the exporter policy: %q %v, want %q", id, err, sid)
	}
	// The same token cannot write another host's records, nor a host
	// whose name merely starts with this one's.
	for _, other := range []string{"h2", "h1x"} {
		po, _ := NewPublisher(exp, "berth", other)
		if _, err := po.Publish(ctx, sid, []netip.Addr{adv4}, docs(testDoc(2, 1002))); err == nil {
			t.Errorf("exporter token for h1 wrote host %s", other)
		}
	}
	// The plugin's token reads everything and writes nothing.
	pairs, _, err := plugin.KV().List("berth/", nil)
	if err != nil || len(pairs) != 2 {
		t.Errorf("plugin read: %d keys, %v", len(pairs), err)
	}
	if _, err := plugin.KV().Put(&api.KVPair{Key: "berth/hosts/evil", Value: []byte("{}")}, nil); err == nil {
		t.Error("plugin token could write")
	}
}

// TestPublisherAddrClasses proves the Publisher writes no address that
// record.Publishable refuses, in the host document or in a port: each such
// call fails before anything is written; loopback passes only with
// WithAllowLoopback, and link-local not even then.
func TestPublisherAddrClasses(t *testing.T) {
	t.Parallel()
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	c := consul.Client()
	ctx := context.Background()
	_, sid := newSession(t, c, "berth", "h1")
	lo, ll := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("169.254.1.1")
	withAddr := func(a netip.Addr) *record.Container {
		d := testDoc(1, 1001)
		d.Ports[0].Addr = a
		return d
	}

	strict, _ := NewPublisher(c, "berth", "h1")
	for _, tc := range []struct {
		desc  string
		addrs []netip.Addr
		doc   *record.Container
		class string
	}{
		{"loopback host address", []netip.Addr{adv4, lo}, testDoc(1, 1001), record.ClassLoopback},
		{"loopback port address", []netip.Addr{adv4}, withAddr(lo), record.ClassLoopback},
		{"link-local host address", []netip.Addr{ll}, testDoc(1, 1001), record.ClassLinkLocal},
		{"link-local port address", []netip.Addr{adv4}, withAddr(ll), record.ClassLinkLocal},
	} {
		_, err := strict.Publish(ctx, sid, tc.addrs, docs(tc.doc))
		var ce *record.AddrClassError
		if !errors.As(err, &ce) || ce.Class != tc.class {
			t.Errorf("%s: %v, want an address class error %s", tc.desc, err, tc.class)
		}
	}
	if keys, _, err := c.KV().Keys("berth/", "", nil); err != nil || len(keys) != 0 {
		t.Fatalf("refused publishes wrote %v (%v)", keys, err)
	}

	open, _ := NewPublisher(c, "berth", "h1", WithAllowLoopback())
	if _, err := open.Publish(ctx, sid, []netip.Addr{adv4}, docs(withAddr(ll))); err == nil {
		t.Error("WithAllowLoopback let a link-local port address through")
	}
	if _, err := open.Publish(ctx, sid, []netip.Addr{lo}, docs(withAddr(lo))); err != nil {
		t.Fatalf("loopback with WithAllowLoopback: %v", err)
	}
	if got := readHost(t, c, "berth", "h1"); got.host == nil || got.host.Addrs[0] != lo || got.docs[testDoc(1, 0).ID] == nil {
		t.Errorf("loopback with WithAllowLoopback: %+v", got)
	}
}
