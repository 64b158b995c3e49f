package resolver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/berthdns/berth/internal/testenv"
)

// namedListener is a live target: it greets each connection with its name.
func namedListener(t *testing.T, name string) int {
	t.Helper()
	return namedListenerOn(t, "127.0.0.1", name)
}

// namedListenerOn is namedListener on another loopback address.
func namedListenerOn(t *testing.T, ip, name string) int {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, name)
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// deadPort is a loopback port nothing listens on: connecting is refused.
func deadPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

func greeting(t *testing.T, c net.Conn) string {
	t.Helper()
	defer c.Close()
	// The test's listener greets each connection at once.
	_ = c.SetReadDeadline(time.Now().Add(testenv.PromptWait))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("read greeting from %s: %v", c.RemoteAddr(), err)
	}
	return strings.TrimSpace(line)
}

func newTestResolver(t *testing.T, server string, opts Options) *Resolver {
	t.Helper()
	opts.Server = server
	r, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

const soa = "z. 60 IN SOA ns.z. hostmaster.z. 1 60 60 60 5"

func p(port int) string { return strconv.Itoa(port) }

// An SRV set with a dead priority (one target refuses, one has no address)
// and a live priority weighted 3:1: every Dial skips the dead targets and
// lands on a live one, in proportion to the weights, and the DNS server is
// asked once per name thanks to the cache.
func TestDialOrdersByPriorityAndWeight(t *testing.T) {
	heavy, light, dead := namedListener(t, "heavy"), namedListener(t, "light"), deadPort(t)
	dnsServer := testenv.StartDNSServer(t, soa,
		"_80._tcp.web.z. 60 IN SRV 1 10 "+p(dead)+" dead.z.",
		"_80._tcp.web.z. 60 IN SRV 1 10 9 gone.z.",
		"_80._tcp.web.z. 60 IN SRV 2 30 "+p(heavy)+" heavy.z.",
		"_80._tcp.web.z. 60 IN SRV 2 10 "+p(light)+" light.z.",
		"dead.z. 60 IN A 127.0.0.1", "heavy.z. 60 IN A 127.0.0.1", "light.z. 60 IN A 127.0.0.1",
	)
	var mu sync.Mutex
	var dialled []string
	r := newTestResolver(t, dnsServer.Addr, Options{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		dialled = append(dialled, addr)
		mu.Unlock()
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}})

	const n = 400
	got := map[string]int{}
	for range n {
		mu.Lock()
		dialled = dialled[:0]
		mu.Unlock()
		conn, err := r.Dial(t.Context(), "tcp", "web.z:80")
		if err != nil {
			t.Fatalf("Dial: %v", err)
		}
		got[greeting(t, conn)]++
		mu.Lock()
		if len(dialled) != 2 || dialled[0] != "127.0.0.1:"+p(dead) {
			t.Fatalf("dial attempts %v: want the dead priority-1 target first, then one live target", dialled)
		}
		mu.Unlock()
	}
	if share := float64(got["heavy"]) / n; share < 0.65 || share > 0.85 {
		t.Errorf("weight 30 of 40 got %.2f of connections, want 0.75 ± 0.1 (%v)", share, got)
	}
	if got["heavy"]+got["light"] != n {
		t.Errorf("connections went elsewhere: %v", got)
	}
	for _, q := range []struct {
		name  string
		qtype uint16
	}{{"_80._tcp.web.z.", dns.TypeSRV}, {"dead.z.", dns.TypeA}, {"gone.z.", dns.TypeA}, {"heavy.z.", dns.TypeA}} {
		if c := dnsServer.Queries(q.name, q.qtype); c != 1 {
			t.Errorf("%s %s asked %d times over %d dials, want once (cached)", q.name, dns.TypeToString[q.qtype], c, n)
		}
	}
}

// When _80._tcp has nothing, the IANA name _http._tcp is asked next.
func TestDialFallsBackToIANAPortName(t *testing.T) {
	live := namedListener(t, "api")
	dnsServer := testenv.StartDNSServer(t, soa,
		"_http._tcp.api.z. 60 IN SRV 10 10 "+p(live)+" h.z.", "h.z. 60 IN A 127.0.0.1")
	r := newTestResolver(t, dnsServer.Addr, Options{})
	conn, err := r.Dial(t.Context(), "tcp", "api.z:80")
	if err != nil {
		t.Fatal(err)
	}
	if g := greeting(t, conn); g != "api" {
		t.Errorf("reached %q, want api", g)
	}
	if dnsServer.Queries("_80._tcp.api.z.", dns.TypeSRV) != 1 || dnsServer.Queries("_http._tcp.api.z.", dns.TypeSRV) != 1 {
		t.Error("expected one query each for _80._tcp and _http._tcp")
	}
}

// A name without SRV records is dialled as given, at its A address.
func TestDialWithoutSRVUsesNameAndPort(t *testing.T) {
	live := namedListener(t, "plain")
	dnsServer := testenv.StartDNSServer(t, soa, "plain.z. 60 IN A 127.0.0.1")
	r := newTestResolver(t, dnsServer.Addr, Options{})
	plan, err := r.Resolve(t.Context(), "tcp", "plain.z:"+p(live))
	if err != nil {
		t.Fatal(err)
	}
	if plan.SRV != "" || len(plan.Targets) != 1 || plan.Targets[0].Host != "plain.z" || int(plan.Targets[0].Port) != live {
		t.Fatalf("plan %+v: want the name and port as given", plan)
	}
	if len(plan.Lookups) != 1 || !errors.Is(plan.Lookups[0].Err, ErrNoSuchHost) {
		t.Errorf("lookups %+v: want _%d._tcp.plain.z. SRV: no such host", plan.Lookups, live)
	}
	conn, err := r.Dial(t.Context(), "tcp", "plain.z:"+p(live))
	if err != nil {
		t.Fatal(err)
	}
	if g := greeting(t, conn); g != "plain" {
		t.Errorf("reached %q, want plain", g)
	}
}

// When nothing connects, the error lists each name and target and why.
func TestDialErrorSaysWhatWasTriedAndWhy(t *testing.T) {
	dead := deadPort(t)
	dnsServer := testenv.StartDNSServer(t, soa,
		"_80._tcp.down.z. 60 IN SRV 1 10 "+p(dead)+" dead.z.",
		"_80._tcp.down.z. 60 IN SRV 2 10 9 gone.z.",
		"dead.z. 60 IN A 127.0.0.1")
	r := newTestResolver(t, dnsServer.Addr, Options{})

	_, err := r.Dial(t.Context(), "tcp", "down.z:80")
	want := "resolver: dial tcp down.z:80: _80._tcp.down.z. SRV: 2 targets: " +
		"dead.z.:" + p(dead) + " (127.0.0.1): connection refused; gone.z.:9: no such host"
	if err == nil || err.Error() != want {
		t.Fatalf("error\n %v\nwant\n %s", err, want)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) || !errors.Is(err, ErrNoSuchHost) {
		t.Errorf("errors.Is does not see ECONNREFUSED and ErrNoSuchHost in %v", err)
	}

	_, err = r.Dial(t.Context(), "tcp", "nothing.z:80")
	want = "resolver: dial tcp nothing.z:80: _80._tcp.nothing.z. SRV: no such host; " +
		"_http._tcp.nothing.z. SRV: no such host; nothing.z:80: no such host"
	if err == nil || err.Error() != want {
		t.Fatalf("error\n %v\nwant\n %s", err, want)
	}
}

// A failed SRV lookup is an error, never a silent fallback to the plain name.
func TestSRVLookupFailureDoesNotFallBack(t *testing.T) {
	live := namedListener(t, "wrong")
	dnsServer := testenv.StartDNSServer(t, soa, "broken.z. 60 IN A 127.0.0.1")
	dnsServer.ServFail("_" + p(live) + "._tcp.broken.z.")
	r := newTestResolver(t, dnsServer.Addr, Options{})
	_, err := r.Dial(t.Context(), "tcp", "broken.z:"+p(live))
	if err == nil {
		t.Fatal("Dial connected to the plain name although its SRV lookup failed")
	}
	if !strings.Contains(err.Error(), "_"+p(live)+"._tcp.broken.z. SRV: "+dnsServer.Addr+": SERVFAIL") {
		t.Errorf("error does not report the SERVFAIL: %v", err)
	}
	if dnsServer.Queries("broken.z.", dns.TypeA) != 0 {
		t.Error("the plain name was looked up after a failed SRV lookup")
	}
}

// SRV "." means the service is decidedly not offered (RFC 2782).
func TestSRVDotTargetIsServiceUnavailable(t *testing.T) {
	dnsServer := testenv.StartDNSServer(t, soa, "_80._tcp.none.z. 60 IN SRV 0 0 0 .", "none.z. 60 IN A 127.0.0.1")
	r := newTestResolver(t, dnsServer.Addr, Options{})
	_, err := r.Dial(t.Context(), "tcp", "none.z:80")
	if !errors.Is(err, ErrServiceUnavailable) {
		t.Fatalf("got %v, want ErrServiceUnavailable", err)
	}
}

// Glue in the SRV answer's additional section saves the A query.
func TestGlueAddressesAreUsed(t *testing.T) {
	live := namedListener(t, "glued")
	dnsServer := testenv.StartDNSServer(t, soa,
		"_80._tcp.web.z. 60 IN SRV 10 10 "+p(live)+" h.z.", "h.z. 60 IN A 127.0.0.1")
	dnsServer.SetGlue(true)
	r := newTestResolver(t, dnsServer.Addr, Options{})
	conn, err := r.Dial(t.Context(), "tcp", "web.z:80")
	if err != nil {
		t.Fatal(err)
	}
	if g := greeting(t, conn); g != "glued" {
		t.Errorf("reached %q, want glued", g)
	}
	if c := dnsServer.Queries("h.z.", dns.TypeA); c != 0 {
		t.Errorf("h.z. A asked %d times although the SRV answer carried it", c)
	}
}

// Positive answers live for their TTL, negative ones for the SOA minimum.
func TestCacheHonoursTTLs(t *testing.T) {
	dnsServer := testenv.StartDNSServer(t, soa, "_80._tcp.web.z. 30 IN SRV 10 10 8080 h.z.")
	r := newTestResolver(t, dnsServer.Addr, Options{})
	now := time.Now()
	r.now = func() time.Time { return now }
	resolve := func(addr string) {
		t.Helper()
		if _, err := r.Resolve(t.Context(), "tcp", addr); err != nil {
			t.Fatal(err)
		}
	}
	// NXDOMAIN for both SRV names: cached for min(SOA TTL 60, minimum 5) = 5s.
	for range 3 {
		resolve("web.z:80")
		resolve("nx.z:80")
	}
	if a, b := dnsServer.Queries("_80._tcp.web.z.", dns.TypeSRV), dnsServer.Queries("_80._tcp.nx.z.", dns.TypeSRV); a != 1 || b != 1 {
		t.Fatalf("within the TTLs: %d and %d queries, want 1 and 1", a, b)
	}
	now = now.Add(6 * time.Second) // not a wait: the fake clock moves past the negative TTL
	resolve("web.z:80")
	resolve("nx.z:80")
	if a, b := dnsServer.Queries("_80._tcp.web.z.", dns.TypeSRV), dnsServer.Queries("_80._tcp.nx.z.", dns.TypeSRV); a != 1 || b != 2 {
		t.Fatalf("after 6s: %d and %d queries, want 1 (TTL 30) and 2 (negative TTL 5)", a, b)
	}
	now = now.Add(25 * time.Second) // not a wait: the fake clock moves past the TTL
	resolve("web.z:80")
	if a := dnsServer.Queries("_80._tcp.web.z.", dns.TypeSRV); a != 2 {
		t.Fatalf("after 31s: %d queries, want 2", a)
	}
}

// An SRV set too large for UDP is asked again over TCP and arrives whole.
func TestTruncatedAnswerIsRetriedOverTCP(t *testing.T) {
	records := []string{soa}
	for i := range 60 {
		records = append(records, fmt.Sprintf("_80._tcp.big.z. 60 IN SRV 10 10 %d instance-%02d.a-rather-long-host-name.hosts.z.", 30000+i, i))
	}
	dnsServer := testenv.StartDNSServer(t, records...)
	r := newTestResolver(t, dnsServer.Addr, Options{})
	plan, err := r.Resolve(t.Context(), "tcp", "big.z:80")
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Targets) != 60 {
		t.Errorf("got %d targets, want all 60", len(plan.Targets))
	}
	if dnsServer.TCPQueries() != 1 {
		t.Errorf("%d queries over TCP, want 1 (the retry of the truncated UDP answer)", dnsServer.TCPQueries())
	}
}

// A target that hangs costs one dial timeout, then the next one is tried.
func TestPerAttemptTimeout(t *testing.T) {
	live := namedListener(t, "live")
	dnsServer := testenv.StartDNSServer(t, soa,
		"_80._tcp.web.z. 60 IN SRV 1 10 1 slow.z.",
		"_80._tcp.web.z. 60 IN SRV 2 10 "+p(live)+" h.z.",
		"slow.z. 60 IN A 127.0.0.2", "h.z. 60 IN A 127.0.0.1")
	// The dial timeout under test: a setting of the resolver, not a wait.
	const timeout = 150 * time.Millisecond
	r := newTestResolver(t, dnsServer.Addr, Options{DialTimeout: timeout,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if addr == "127.0.0.2:1" { // a black hole: wait for the deadline
				<-ctx.Done()
				return nil, &net.OpError{Op: "dial", Net: network, Err: ctx.Err()}
			}
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}})
	start := time.Now()
	conn, err := r.Dial(t.Context(), "tcp", "web.z:80")
	if err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	if g := greeting(t, conn); g != "live" {
		t.Errorf("reached %q, want live", g)
	}
	if elapsed < timeout || elapsed > 10*timeout {
		t.Errorf("Dial took %v, want about one attempt timeout (%v)", elapsed, timeout)
	}
}

// With Zones set, names outside them are dialled without asking for SRV.
func TestZonesLimitSRVLookups(t *testing.T) {
	live := namedListener(t, "outside")
	dnsServer := testenv.StartDNSServer(t, soa, "www.other.test. 60 IN A 127.0.0.1")
	r := newTestResolver(t, dnsServer.Addr, Options{Zones: []string{"z."}})
	conn, err := r.Dial(t.Context(), "tcp", "www.other.test:"+p(live))
	if err != nil {
		t.Fatal(err)
	}
	if g := greeting(t, conn); g != "outside" {
		t.Errorf("reached %q, want outside", g)
	}
	if c := dnsServer.Queries("_"+p(live)+"._tcp.www.other.test.", dns.TypeSRV); c != 0 {
		t.Errorf("SRV asked %d times for a name outside the zones", c)
	}
}

// Unusable addresses are refused before anything is asked.
func TestBadAddresses(t *testing.T) {
	r := newTestResolver(t, "127.0.0.1:1", Options{})
	for _, tc := range []struct{ network, address, want string }{
		{"tcp", "web.z", "missing port in address"},
		{"tcp", ":80", "missing host"},
		{"tcp", "web.z:0", "port 0"},
		{"unix", "web.z:80", `network "unix" is not supported`},
	} {
		_, err := r.Dial(t.Context(), tc.network, tc.address)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Dial(%s, %q) = %v, want an error containing %q", tc.network, tc.address, err, tc.want)
		}
	}
}

// A name is in a zone only at a label boundary: "evilz" is not under "z.",
// nor is "a\.z", whose last dot is part of a label. Both are dialled as
// given, without an SRV lookup; case does not matter for names in the zone.
func TestZonesAreMatchedAtLabelBoundaries(t *testing.T) {
	dnsServer := testenv.StartDNSServer(t, soa, "_80._tcp.web.z. 60 IN SRV 10 10 8080 h.z.")
	r := newTestResolver(t, dnsServer.Addr, Options{Zones: []string{"Z."}})
	for name, inZone := range map[string]bool{"Web.Z": true, "z": true, "evilz": false, `a\.z`: false} {
		plan, err := r.Resolve(t.Context(), "tcp", name+":80")
		if err != nil {
			t.Fatalf("Resolve(%s): %v", name, err)
		}
		if asked := dnsServer.Queries("_80._tcp."+dns.CanonicalName(name), dns.TypeSRV) > 0; asked != inZone {
			t.Errorf("%s: SRV asked = %v, want %v (plan %+v)", name, asked, inZone, plan)
		}
	}
}

// Under SRVOnly a name in the zones is reached only where SRV records send
// it: a host's name with an A record is not dialled at whatever port was
// asked, nor a container's name at a port of its own SRV set, which says
// no protocol.
func TestSRVOnlyDialsOnlyPublishedPorts(t *testing.T) {
	live := namedListener(t, "published")
	var dials []string
	var mu sync.Mutex
	dnsServer := testenv.StartDNSServer(t, soa,
		"h.hosts.z. 60 IN A 127.0.0.1",
		"c1.h.hosts.z. 60 IN SRV 10 10 "+p(live)+" h.hosts.z.",
		"_80._tcp.web.z. 60 IN SRV 10 10 "+p(live)+" h.hosts.z.")
	r := newTestResolver(t, dnsServer.Addr, Options{Zones: []string{"z"}, SRVOnly: true,
		DialContext: recordDials(&mu, &dials)})
	for _, addr := range []string{"web.z:80"} {
		conn, err := r.Dial(t.Context(), "tcp", addr)
		if err != nil {
			t.Fatalf("Dial(%s): %v", addr, err)
		}
		if g := greeting(t, conn); g != "published" {
			t.Errorf("Dial(%s) reached %q", addr, g)
		}
	}
	mu.Lock()
	before := len(dials)
	mu.Unlock()
	for addr, want := range map[string]error{
		"h.hosts.z:" + p(live):    ErrNotPublished, // its A record, at a port no SRV names
		"c1.h.hosts.z:80":         ErrNotPublished, // a container's name, at a port it does not publish
		"c1.h.hosts.z:" + p(live): ErrNotPublished, // nor at one it does, of a protocol its SRV set does not say
		"nx.z:80":                 ErrNoSuchHost,
	} {
		_, err := r.Dial(t.Context(), "tcp", addr)
		if !errors.Is(err, want) {
			t.Errorf("Dial(%s) = %v, want %v", addr, err, want)
		}
		if want == ErrNoSuchHost && errors.Is(err, ErrNotPublished) {
			t.Errorf("Dial(%s) says not published for a name that does not exist: %v", addr, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(dials) != before {
		t.Errorf("unpublished destinations were dialled: %v", dials[before:])
	}
	if n := dnsServer.Queries("h.hosts.z.", dns.TypeA); n != 1 {
		// Once, for the SRV target of web.z: never for a fallback.
		t.Errorf("h.hosts.z. A asked %d times, want 1 (the SRV target's address, then cached)", n)
	}

	// Without SRVOnly the same host name is dialled by its A record.
	loose := newTestResolver(t, dnsServer.Addr, Options{Zones: []string{"z"}})
	conn, err := loose.Dial(t.Context(), "tcp", "h.hosts.z:"+p(live))
	if err != nil {
		t.Fatalf("without SRVOnly: %v", err)
	}
	conn.Close()
}

// Under SRVOnly a container's name as an SRV target (a port bound on an
// address other than its host's) is dialled only at the one address that
// is its own: not at its host's address, which belongs to its other
// bindings, and not at all when it has two of its own, since the zone does
// not say which the port is bound on. A host's name as target is dialled
// at its addresses.
func TestSRVOnlyDialsTheBindingsAddress(t *testing.T) {
	own := strconv.Itoa(namedListenerOn(t, "127.0.0.2", "the container's own address"))
	onHost := namedListener(t, "on the host's address")
	var dials []string
	var mu sync.Mutex
	dnsServer := testenv.StartDNSServer(t, soa,
		"h.hosts.z. 60 IN A 127.0.0.1",
		"c1.h.hosts.z. 60 IN A 127.0.0.1",
		"c1.h.hosts.z. 60 IN A 127.0.0.2",
		"c2.h.hosts.z. 60 IN A 127.0.0.1",
		"c2.h.hosts.z. 60 IN A 127.0.0.3",
		"c2.h.hosts.z. 60 IN A 127.0.0.4",
		"_8443._tcp.one.z. 60 IN SRV 10 10 "+own+" c1.h.hosts.z.",
		"_8443._tcp.two.z. 60 IN SRV 10 10 "+own+" c2.h.hosts.z.",
		"_80._tcp.host.z. 60 IN SRV 10 10 "+p(onHost)+" h.hosts.z.")
	r := newTestResolver(t, dnsServer.Addr, Options{Zones: []string{"z"}, SRVOnly: true,
		DialContext: recordDials(&mu, &dials)})
	for _, addr := range []string{"one.z:8443", "host.z:80"} {
		conn, err := r.Dial(t.Context(), "tcp", addr)
		if err != nil {
			t.Fatalf("Dial(%s): %v", addr, err)
		}
		conn.Close()
	}
	if _, err := r.Dial(t.Context(), "tcp", "two.z:8443"); !errors.Is(err, ErrNotPublished) {
		t.Errorf("Dial(two.z:8443) = %v, want %v (two addresses of its own)", err, ErrNotPublished)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"127.0.0.2:" + own, "127.0.0.1:" + p(onHost)}; strings.Join(dials, " ") != strings.Join(want, " ") {
		t.Errorf("dialled %v, want %v", dials, want)
	}
}

// recordDials is a DialContext that notes each address in dials (under mu)
// before it dials it.
func recordDials(mu *sync.Mutex, dials *[]string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		*dials = append(*dials, addr)
		mu.Unlock()
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
}
