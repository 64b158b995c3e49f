package proxy

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
)

func TestForbiddenReason(t *testing.T) {
	guard := func(allowLoopback bool, deny ...string) *addrGuard {
		t.Helper()
		g, err := newAddrGuard(Config{AllowLoopback: allowLoopback}, must(record.ParseDenyList(deny)))
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	strict := guard(false, "10.9.0.0/16", "2001:db8:9::/48")
	for addr, want := range map[string]string{
		"127.0.0.1": forbidLoopback, "127.8.9.10": forbidLoopback, "::1": forbidLoopback,
		"::ffff:127.0.0.1": forbidLoopback, "169.254.169.254": forbidLinkLocal, "fe80::1": forbidLinkLocal,
		"0.0.0.0": forbidUnspecified, "0.1.2.3": forbidUnspecified, "::": forbidUnspecified,
		"224.0.0.1": forbidMulticast, "ff02::1": forbidMulticast, "255.255.255.255": forbidBroadcast,
		"100.100.100.200": forbidMetadata, "::ffff:100.100.100.200": forbidMetadata, "fd00:ec2::254": forbidMetadata,
		"168.63.129.16": forbidMetadata, "10.9.1.1": forbidDenied, "2001:db8:9::1": forbidDenied,
		"10.0.0.1": "", "192.0.2.7": "", "2001:db8::1": "",
	} {
		if got := strict.forbiddenReason(netip.MustParseAddr(addr)); got != want {
			t.Errorf("forbiddenReason(%s) = %q, want %q", addr, got, want)
		}
	}
	open := guard(true)
	if got := open.forbiddenReason(netip.MustParseAddr("127.0.0.1")); got != "" {
		t.Errorf("with loopback allowed, 127.0.0.1 is refused as %q", got)
	}
	if got := open.forbiddenReason(netip.MustParseAddr("169.254.169.254")); got != forbidLinkLocal {
		t.Errorf("with loopback allowed, 169.254.169.254 is %q, want still link_local", got)
	}
}

// Every non-loopback address of this machine's interfaces is refused as
// the proxy's own, unless AllowOwnAddresses; loopback ones stay under
// AllowLoopback alone.
func TestForbiddenOwnAddresses(t *testing.T) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	strict, err := newAddrGuard(Config{AllowLoopback: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	allowed, err := newAddrGuard(Config{AllowOwnAddresses: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	own := 0
	for _, a := range addrs {
		p, err := netip.ParsePrefix(a.String())
		if err != nil {
			continue
		}
		addr := p.Addr()
		want, wantAllowed := forbidOwnAddress, ""
		switch {
		case addr.IsLoopback():
			want, wantAllowed = "", forbidLoopback
		case addr.IsLinkLocalUnicast():
			want, wantAllowed = forbidLinkLocal, forbidLinkLocal
		default:
			own++
		}
		if got := strict.forbiddenReason(addr); got != want {
			t.Errorf("own address %s: %q, want %q", addr, got, want)
		}
		if got := allowed.forbiddenReason(addr); got != wantAllowed {
			t.Errorf("own address %s with AllowOwnAddresses: %q, want %q", addr, got, wantAllowed)
		}
	}
	if own == 0 {
		testenv.Unavailable(t, "this machine has no non-loopback, non-link-local address to check")
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// SRV targets at link-local, unspecified or multicast addresses are refused
// even with AllowLoopback, before any dial; so is a host's name at a port no
// SRV record publishes. Each gets "not allowed" and is counted by reason.
func TestForbiddenTargetsAreNotDialled(t *testing.T) {
	var mu sync.Mutex
	var dialled []string
	f := startFixture(t, Config{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		dialled = append(dialled, addr)
		mu.Unlock()
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}})
	for _, tc := range []struct {
		host   string
		port   uint16
		reason string
	}{
		{"meta.c.test", 80, forbidLinkLocal},
		{"ll6.c.test", 80, forbidLinkLocal},
		{"any.c.test", 80, forbidUnspecified},
		{"group.c.test", 80, forbidMulticast},
		{"h1.hosts.c.test", uint16(f.backendPort), rejectNotPublished},
	} {
		c, reply := socksConnect(t, f.socksAddr, tc.host, tc.port)
		if reply != replyNotAllowed {
			t.Errorf("%s:%d: reply %#x, want %#x (not allowed)", tc.host, tc.port, reply, replyNotAllowed)
		}
		expectClosed(t, c)
	}
	for reason, want := range map[string]float64{forbidLinkLocal: 2, forbidUnspecified: 1, forbidMulticast: 1, rejectNotPublished: 1} {
		if n := testenv.MetricValue(f.proxy.Metrics().Rejected.WithLabelValues("socks", reason)); n != want {
			t.Errorf("rejected{socks,%s} = %v, want %v", reason, n, want)
		}
	}
	mu.Lock()
	if len(dialled) != 0 {
		t.Errorf("forbidden or unpublished targets were dialled: %v", dialled)
	}
	mu.Unlock()
	// The reachable service still is, through the same guard.
	c, reply := socksConnect(t, f.socksAddr, "web.c.test", 80)
	if reply != replySucceeded {
		t.Fatalf("web.c.test:80: reply %#x", reply)
	}
	c.Close()
	mu.Lock()
	defer mu.Unlock()
	if len(dialled) != 1 || dialled[0] != "127.0.0.1:"+strconv.Itoa(f.backendPort) {
		t.Errorf("dialled %v, want the backend once", dialled)
	}
}
