package proxy

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthdns/berth/internal/testenv"
)

// The delay doubles per failure from one address up to the cap, is kept
// per address, and is forgotten after a success or a quiet while.
func TestLoginDelays(t *testing.T) {
	g := newLoginGuard()
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	now := time.Now()
	var got []time.Duration
	for range 7 {
		d, _ := g.failed(a, now)
		got = append(got, d)
	}
	want := []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, // not a wait: the delays under test
		4 * time.Second, loginMaxDelay, loginMaxDelay} // not a wait: the delays under test
	if !slices.Equal(got, want) {
		t.Errorf("delays %v, want %v", got, want)
	}
	if d, n := g.failed(b, now); d != loginBaseDelay || n != 1 {
		t.Errorf("another address: %v after %d failures, want %v after 1", d, n, loginBaseDelay)
	}
	if d, _ := g.failed(a, now.Add(loginForget)); d != loginBaseDelay {
		t.Errorf("after %v without failures: %v, want %v", loginForget, d, loginBaseDelay)
	}
	g.failed(b, now)
	g.succeeded(b)
	if d, _ := g.failed(b, now); d != loginBaseDelay {
		t.Errorf("after a success: %v, want %v", d, loginBaseDelay)
	}
	for i := range 3 * loginClients {
		g.failed(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), now)
	}
	if n := len(g.clients); n > loginClients {
		t.Errorf("%d addresses remembered, bound %d", n, loginClients)
	}
	if d, _ := g.failed(netip.MustParseAddr("198.51.100.1"), now); d != loginMaxDelay {
		t.Errorf("a new address while the table is full: %v, want the cap %v", d, loginMaxDelay)
	}
}

// Failed logins over SOCKS and HTTP are delayed by the growing delay,
// counted, and logged once a minute per client address; a request without
// credentials (the usual first step of a browser) is none of these.
func TestFailedLoginsAreSlowedCountedAndLoggedOnce(t *testing.T) {
	var logs testenv.LockedBuffer
	f := startFixture(t, Config{Users: map[string]string{"alice": "s3cret"},
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	var mu sync.Mutex
	var delays []time.Duration
	f.proxy.logins.wait = func(_ context.Context, d time.Duration) {
		mu.Lock()
		delays = append(delays, d)
		mu.Unlock()
	}
	socksLogin := func(user, pass string) byte {
		c := dial(t, f.socksAddr)
		c.Write([]byte{5, 1, 2})
		readN(t, c, 2)
		msg := append([]byte{1, byte(len(user))}, user...)
		c.Write(append(append(msg, byte(len(pass))), pass...))
		return readN(t, c, 2)[1]
	}
	for _, pass := range []string{"guess1", "guess2", "guess3"} {
		if status := socksLogin("alice", pass); status != userPassFailed {
			t.Fatalf("wrong password: status %#x", status)
		}
	}
	if status, _ := get(t, proxyClient(t, f.httpAddr, nil), "GET", "http://web.c.test/", ""); status != http.StatusProxyAuthRequired {
		t.Fatalf("no credentials: %d, want 407", status)
	}
	if status, _ := get(t, proxyClient(t, f.httpAddr, url.UserPassword("alice", "guess4")), "GET", "http://web.c.test/", ""); status != http.StatusProxyAuthRequired {
		t.Fatalf("wrong password over HTTP: %d, want 407", status)
	}
	mu.Lock()
	got := slices.Clone(delays)
	mu.Unlock()
	if want := []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second}; !slices.Equal(got, want) { // not a wait: the delays under test
		t.Errorf("delays before the failure replies %v, want %v", got, want)
	}
	m := f.proxy.Metrics()
	if s, h := testenv.MetricValue(m.LoginFailures.WithLabelValues("socks")), testenv.MetricValue(m.LoginFailures.WithLabelValues("http")); s != 3 || h != 1 {
		t.Errorf("login_failures{socks} = %v, {http} = %v; want 3 and 1", s, h)
	}
	if n := strings.Count(logs.String(), "failed login"); n != 1 {
		t.Errorf("%d log lines about failed logins from one address within a minute, want 1:\n%s", n, logs.String())
	}
	// The right password still works, and clears the address's record.
	if status := socksLogin("alice", "s3cret"); status != userPassOK {
		t.Errorf("right password: status %#x", status)
	}
	if _, n := f.proxy.logins.failed(netip.MustParseAddr("127.0.0.1"), time.Now()); n != 1 {
		t.Errorf("after a success the next failure is number %d, want 1", n)
	}
}
