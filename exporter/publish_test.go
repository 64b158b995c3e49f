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
	s := NewSession(c, prefix, host, 10*time.Second, discard) // not a wait: the session's TTL
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
	if len(e.NodeChecks) != 0 || len(e.Checks) != 0 || e.Behavior != "delete" || e.LockDelay > time.Millisecond || e.TTL != "10s" { // not a wait: the session's settings
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
		if k != record.HostKey("berth", "h1") && !strings.HasPrefix(k, record.HostRevPrefix("berth", "h1")) &&
			!strings.HasPrefix(k, record.ContainersPrefix("berth", "h1")) {
			t.Errorf("key %s outside the host subtree", k)
		}
	}

	// A document that fails validation is refused before anything is written.
	bad := testDoc(9, 0)
	if _, err := p.Publish(ctx, sid, addrs, docs(d1, bad)); err == nil {
		t.Error("invalid document accepted")
	}

	// Deregister removes the subtree, in both layouts.
	if err := p.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	if got := readHost(t, c, "berth", "h1"); got.host != nil || len(got.docs) != 0 {
		t.Errorf("after deregister: %+v", got)
	}
	if keys, _, err := c.KV().Keys("berth/", "", nil); err != nil || len(keys) != 0 {
		t.Errorf("after deregister: keys %v (%v)", keys, err)
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
		// The ACL system is up a moment after the leader: a start-up wait.
		for deadline := time.Now().Add(testenv.PartStartWait); ; time.Sleep(testenv.PollInterval) {
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

	s := NewSession(exp, "berth", "h1", 10*time.Second, discard) // not a wait: the session's TTL
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
	s2 := NewSession(exp, "berth", "h1", 10*time.Second, discard) // not a wait: the session's TTL
	if id, err := s2.ID(ctx); err != nil || id != sid {
		t.Errorf("adopt under the exporter policy: %q %v, want %q", id, err, sid)
	}
	// The same token cannot write another host's records, nor a host
	// whose name merely starts with this one's.
	for _, other := range []string{"h2", "h1x"} {
		for _, mode := range []record.WriteMode{record.WriteV1, record.WriteV2, record.WriteBoth} {
			po, _ := NewPublisher(exp, "berth", other, WithKVLayout(mode))
			if _, err := po.Publish(ctx, sid, []netip.Addr{adv4}, docs(testDoc(2, 1002))); err == nil {
				t.Errorf("exporter token for h1 wrote host %s in mode %s", other, mode)
			}
		}
	}
	// The policy also serves the other modes (a switch of --kv-layout
	// needs no new token): layout 2 alone, then layout 1 alone.
	for _, mode := range []record.WriteMode{record.WriteV2, record.WriteV1, record.WriteBoth} {
		pm, _ := NewPublisher(exp, "berth", "h1", WithKVLayout(mode))
		if st, err := pm.Publish(ctx, sid, []netip.Addr{adv4}, docs(testDoc(1, 1001))); err != nil || st.Txns != 1 {
			t.Errorf("switch to mode %s under the exporter policy: %+v %v", mode, st, err)
		}
	}
	// The plugin's token reads everything and writes nothing: the host in
	// both layouts and its container.
	pairs, _, err := plugin.KV().List("berth/", nil)
	if err != nil || len(pairs) != 3 {
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

// hostKeys is a host's document keys in both layouts, as KV holds them.
type hostKeys struct {
	v1 *api.KVPair   // nil: absent
	v2 []*api.KVPair // every key under record.HostRevPrefix
}

func readHostKeys(t *testing.T, c *api.Client, prefix, host string) hostKeys {
	t.Helper()
	var k hostKeys
	var err error
	if k.v1, _, err = c.KV().Get(record.HostKey(prefix, host), nil); err != nil {
		t.Fatal(err)
	}
	if k.v2, _, err = c.KV().List(record.HostRevPrefix(prefix, host), nil); err != nil {
		t.Fatal(err)
	}
	return k
}

// checkMode fails unless the host's document is in exactly the layouts of
// mode, at rev, held by sid: in layout 2 as the one key HostRevKey(rev).
// It returns the ModifyIndex of the document in each layout (0: absent).
func checkMode(t *testing.T, c *api.Client, prefix, host, sid string, mode record.WriteMode, rev uint64) (v1, v2 uint64) {
	t.Helper()
	k := readHostKeys(t, c, prefix, host)
	check := func(p *api.KVPair, key string) {
		t.Helper()
		h, err := record.DecodeHost(p.Key, p.Value)
		if p.Key != key || err != nil || h.Rev != rev || h.Name != host || p.Session != sid {
			t.Errorf("mode %s: %s is %s held by %q (%v), want %s at rev %d held by %q", mode, p.Key, p.Value, p.Session, err, key, rev, sid)
		}
	}
	switch {
	case mode.Writes(record.LayoutV1) && k.v1 == nil:
		t.Errorf("mode %s: no document in layout 1", mode)
	case mode.Writes(record.LayoutV1):
		check(k.v1, record.HostKey(prefix, host))
		v1 = k.v1.ModifyIndex
	case k.v1 != nil:
		t.Errorf("mode %s: a document in layout 1: %s", mode, k.v1.Value)
	}
	switch {
	case mode.Writes(record.LayoutV2) && len(k.v2) != 1:
		t.Errorf("mode %s: %d keys in layout 2, want 1", mode, len(k.v2))
	case mode.Writes(record.LayoutV2):
		check(k.v2[0], record.HostRevKey(prefix, host, rev))
		v2 = k.v2[0].ModifyIndex
	case len(k.v2) != 0:
		t.Errorf("mode %s: %d keys in layout 2, want none", mode, len(k.v2))
	}
	return v1, v2
}

// goneAt is the Consul index at which the last key under keyPrefix was
// deleted: a list of a prefix without keys answers with the index of its
// newest tombstone.
func goneAt(t *testing.T, c *api.Client, keyPrefix string) uint64 {
	t.Helper()
	pairs, meta, err := c.KV().List(keyPrefix, nil)
	if err != nil || len(pairs) != 0 {
		t.Fatalf("list %s: %d keys, %v", keyPrefix, len(pairs), err)
	}
	return meta.LastIndex
}

// TestPublisherLayouts proves each write mode keeps the host document in
// exactly its layouts, from empty and up to date, across a restart.
func TestPublisherLayouts(t *testing.T) {
	t.Parallel()
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	c := consul.Client()
	ctx := context.Background()
	for _, mode := range []record.WriteMode{record.WriteV1, record.WriteV2, record.WriteBoth} {
		host := "m" + string(mode)
		_, sid := newSession(t, c, "berth", host)
		p, err := NewPublisher(c, "berth", host, WithKVLayout(mode))
		if err != nil || p.Mode() != mode {
			t.Fatalf("mode %s: %v, mode %s", mode, err, p.Mode())
		}
		d1, d2 := testDoc(1, 1001), testDoc(2, 1002)
		if st, err := p.Publish(ctx, sid, []netip.Addr{adv4}, docs(d1, d2)); err != nil || st != (PublishStats{Sets: 2, Txns: 1}) {
			t.Fatalf("mode %s from empty: %+v %v", mode, st, err)
		}
		v1, v2 := checkMode(t, c, "berth", host, sid, mode, 1)
		if mode == record.WriteBoth && v1 != v2 {
			t.Errorf("mode both: layout 1 at index %d, layout 2 at %d: not one transaction", v1, v2)
		}
		if got := readHost(t, c, "berth", host); len(got.docs) != 2 {
			t.Errorf("mode %s: %d container documents", mode, len(got.docs))
		}
		keys, _, err := c.KV().Keys("berth/", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		n := 2
		if mode == record.WriteBoth {
			n = 3
		}
		if len(keys) != n+1 { // the container documents, the host's, and no other
			t.Errorf("mode %s: keys %v", mode, keys)
		}
		if st, err := p.Publish(ctx, sid, []netip.Addr{adv4}, docs(d1, d2)); err != nil || st != (PublishStats{}) {
			t.Errorf("mode %s up to date: %+v %v", mode, st, err)
		}
		restarted, _ := NewPublisher(c, "berth", host, WithKVLayout(mode))
		if st, err := restarted.Publish(ctx, sid, []netip.Addr{adv4}, docs(d1, d2)); err != nil || st != (PublishStats{}) {
			t.Errorf("mode %s after a restart: %+v %v", mode, st, err)
		}
		// A change is one transaction again, and rev goes on from the
		// restarted publisher's reading of KV.
		if st, err := restarted.Publish(ctx, sid, []netip.Addr{adv4}, docs(d1)); err != nil || st != (PublishStats{Deletes: 1, Txns: 1}) {
			t.Errorf("mode %s, a change after a restart: %+v %v", mode, st, err)
		}
		checkMode(t, c, "berth", host, sid, mode, 2)
		if err := restarted.Deregister(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if keys, _, err := c.KV().Keys("berth/", "", nil); err != nil || len(keys) != 0 {
		t.Errorf("after deregister: keys %v (%v)", keys, err)
	}
}

// TestPublisherModeSwitch switches a host with containers 1 -> both -> 2
// -> 1, each step a restarted publisher as an operator's change of
// --kv-layout is: after each step the keys are as the mode says, the
// container documents were not rewritten, and the old layout's key went in
// the transaction that wrote the new one, so that no Consul index saw the
// host in neither layout.
func TestPublisherModeSwitch(t *testing.T) {
	t.Parallel()
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	c := consul.Client()
	ctx := context.Background()
	const host = "switch"
	_, sid := newSession(t, c, "berth", host)
	want := docs(testDoc(1, 1001), testDoc(2, 1002))
	addrs := []netip.Addr{adv4}

	p, _ := NewPublisher(c, "berth", host, WithKVLayout(record.WriteV1))
	if _, err := p.Publish(ctx, sid, addrs, want); err != nil {
		t.Fatal(err)
	}
	checkMode(t, c, "berth", host, sid, record.WriteV1, 1)
	containerIdx := map[string]uint64{}
	pairs, _, _ := c.KV().List(record.ContainersPrefix("berth", host), nil)
	for _, pair := range pairs {
		containerIdx[pair.Key] = pair.ModifyIndex
	}

	rev := uint64(1)
	switchTo := func(mode record.WriteMode) (v1, v2 uint64) {
		t.Helper()
		p, _ := NewPublisher(c, "berth", host, WithKVLayout(mode))
		st, err := p.Publish(ctx, sid, addrs, want)
		if err != nil || st != (PublishStats{Txns: 1}) {
			t.Fatalf("switch to %s: %+v %v, want one transaction and no container write", mode, st, err)
		}
		rev++
		v1, v2 = checkMode(t, c, "berth", host, sid, mode, rev)
		pairs, _, _ := c.KV().List(record.ContainersPrefix("berth", host), nil)
		if len(pairs) != len(want) {
			t.Errorf("switch to %s: %d container documents", mode, len(pairs))
		}
		for _, pair := range pairs {
			if pair.ModifyIndex != containerIdx[pair.Key] || pair.Session != sid {
				t.Errorf("switch to %s: %s rewritten or not held (session %q)", mode, pair.Key, pair.Session)
			}
		}
		// Up to date in the new mode, by the same and by a new publisher.
		if st, err := p.Publish(ctx, sid, addrs, want); err != nil || st != (PublishStats{}) {
			t.Errorf("mode %s up to date: %+v %v", mode, st, err)
		}
		again, _ := NewPublisher(c, "berth", host, WithKVLayout(mode))
		if st, err := again.Publish(ctx, sid, addrs, want); err != nil || st != (PublishStats{}) {
			t.Errorf("mode %s restarted: %+v %v", mode, st, err)
		}
		return v1, v2
	}

	// 1 -> both: layout 2 appears in the transaction that rewrites layout 1.
	if v1, v2 := switchTo(record.WriteBoth); v1 != v2 {
		t.Errorf("1 -> both: layout 1 written at %d, layout 2 at %d", v1, v2)
	}
	// both -> 2: layout 1's key is deleted at the index layout 2's new rev
	// is written at, and the old rev's key with it.
	oldRev := record.HostRevKey("berth", host, rev)
	if _, v2 := switchTo(record.WriteV2); goneAt(t, c, record.HostKey("berth", host)) != v2 {
		t.Errorf("both -> 2: layout 1 deleted at %d, layout 2 written at %d", goneAt(t, c, record.HostKey("berth", host)), v2)
	}
	if pair, _, _ := c.KV().Get(oldRev, nil); pair != nil {
		t.Errorf("both -> 2: the old rev's key %s is still there", oldRev)
	}
	// 2 -> 1: layout 2's key is deleted at the index layout 1 is written at.
	if v1, _ := switchTo(record.WriteV1); goneAt(t, c, record.HostRevPrefix("berth", host)) != v1 {
		t.Errorf("2 -> 1: layout 2 deleted at %d, layout 1 written at %d", goneAt(t, c, record.HostRevPrefix("berth", host)), v1)
	}

	// Rev keeps rising across a switch even when the only document left
	// says less than a stale key did, and a stale rev key of the host is
	// deleted at the next write.
	stale := record.HostRevKey("berth", host, 100)
	if _, err := c.KV().Put(&api.KVPair{Key: stale, Value: []byte(`{"v":1}`)}, nil); err != nil {
		t.Fatal(err)
	}
	p2, _ := NewPublisher(c, "berth", host, WithKVLayout(record.WriteV2))
	if st, err := p2.Publish(ctx, sid, addrs, want); err != nil || st.Txns != 1 {
		t.Fatalf("switch to 2 past a stale key: %+v %v", st, err)
	}
	checkMode(t, c, "berth", host, sid, record.WriteV2, 101)
}

// TestPublisherRaceV2 runs two publishers of one host in mode 2: the one
// whose view is stale has its transaction rolled back by the check-index on
// the rev key it read, and its retry converges on one key.
func TestPublisherRaceV2(t *testing.T) {
	t.Parallel()
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	c := consul.Client()
	ctx := context.Background()
	const host = "race"
	_, sid := newSession(t, c, "berth", host)
	addrs := []netip.Addr{adv4}
	d1, d2, d3 := testDoc(1, 1001), testDoc(2, 1002), testDoc(3, 1003)
	a, _ := NewPublisher(c, "berth", host, WithKVLayout(record.WriteV2))
	b, _ := NewPublisher(c, "berth", host, WithKVLayout(record.WriteV2))

	if _, err := a.Publish(ctx, sid, addrs, docs(d1)); err != nil {
		t.Fatal(err)
	}
	if st, err := b.Publish(ctx, sid, addrs, docs(d1)); err != nil || st != (PublishStats{}) {
		t.Fatalf("b reads a's state: %+v %v", st, err)
	}
	if _, err := a.Publish(ctx, sid, addrs, docs(d1, d2)); err != nil {
		t.Fatal(err)
	}
	_, err := b.Publish(ctx, sid, addrs, docs(d1, d3))
	var txnErr *TxnError
	if !errors.As(err, &txnErr) {
		t.Fatalf("stale publisher: err %v, want a rolled-back transaction", err)
	}
	if st, err := b.Publish(ctx, sid, addrs, docs(d1, d3)); err != nil || st != (PublishStats{Sets: 1, Deletes: 1, Txns: 1}) {
		t.Fatalf("retry: %+v %v", st, err)
	}
	checkMode(t, c, "berth", host, sid, record.WriteV2, 3)
	got := readHost(t, c, "berth", host)
	if len(got.docs) != 2 || got.docs[d1.ID] == nil || got.docs[d3.ID] == nil {
		t.Errorf("after the retry: %d documents", len(got.docs))
	}

	// Two publishers from empty, both having read KV before either wrote:
	// the second's check that its first rev's key does not exist fails.
	const host2 = "race2"
	_, sid2 := newSession(t, c, "berth", host2)
	x, _ := NewPublisher(c, "berth", host2, WithKVLayout(record.WriteV2))
	y, _ := NewPublisher(c, "berth", host2, WithKVLayout(record.WriteV2))
	if err := y.load(ctx, sid2); err != nil {
		t.Fatal(err)
	}
	if _, err := x.Publish(ctx, sid2, addrs, docs(d1)); err != nil {
		t.Fatal(err)
	}
	if _, err := y.Publish(ctx, sid2, addrs, docs(d2)); !errors.As(err, &txnErr) {
		t.Fatalf("second publisher from empty: err %v, want a rolled-back transaction", err)
	}
	if st, err := y.Publish(ctx, sid2, addrs, docs(d2)); err != nil || st != (PublishStats{Sets: 1, Deletes: 1, Txns: 1}) {
		t.Fatalf("retry from empty: %+v %v", st, err)
	}
	checkMode(t, c, "berth", host2, sid2, record.WriteV2, 2)
}

// TestSessionAdoptsLayout2Holder proves a restarted exporter finds its
// predecessor's session as the holder of the host document in layout 2
// alone: the session is on another node than the host's, where the
// fallback by name does not look.
func TestSessionAdoptsLayout2Holder(t *testing.T) {
	t.Parallel()
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	c := consul.Client()
	ctx := context.Background()
	const host = "adopt"
	sid, _, err := c.Session().CreateNoChecks(&api.SessionEntry{Name: SessionName(host), Behavior: api.SessionBehaviorDelete,
		TTL: "30s", LockDelay: time.Millisecond}, nil) // not a wait: the session's settings
	if err != nil {
		t.Fatal(err)
	}
	p, _ := NewPublisher(c, "berth", host, WithKVLayout(record.WriteV2))
	if _, err := p.Publish(ctx, sid, []netip.Addr{adv4}, docs(testDoc(1, 1001))); err != nil {
		t.Fatal(err)
	}
	if pair, _, _ := c.KV().Get(record.HostKey("berth", host), nil); pair != nil {
		t.Fatal("mode 2 wrote layout 1")
	}
	if id, err := NewSession(c, "berth", host, 30*time.Second, discard).ID(ctx); err != nil || id != sid { // not a wait: the session's TTL
		t.Errorf("adopted %q (%v), want the layout 2 holder %q", id, err, sid)
	}
}
