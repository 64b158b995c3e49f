package proxy

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/berthdns/berth/internal/testenv"
)

// A SOCKS5 CONNECT to a service name reaches the SRV target's published
// port, and the bytes are counted both ways.
func TestSOCKSConnectReachesServiceBySRV(t *testing.T) {
	f := startFixture(t, Config{})
	c, reply := socksConnect(t, f.socksAddr, "web.c.test", 80)
	if reply != replySucceeded {
		t.Fatalf("reply %#x, want success", reply)
	}
	body := getThrough(t, c, "web.c.test")
	if body != "hello from backend\n" {
		t.Fatalf("body %q", body)
	}
	c.Close()
	m := f.proxy.Metrics()
	testenv.EventuallyTrue(t, testenv.PromptWait, "the tunnel to be released", func() bool { return testenv.MetricValue(m.Active.WithLabelValues("socks")) == 0 })
	if n := testenv.MetricValue(m.Connections.WithLabelValues("socks")); n != 1 {
		t.Errorf("connections_total{socks} = %v, want 1", n)
	}
	up, down := testenv.MetricValue(m.Bytes.WithLabelValues("socks", "upstream")), testenv.MetricValue(m.Bytes.WithLabelValues("socks", "downstream"))
	if up != float64(len("GET / HTTP/1.0\r\nHost: web.c.test\r\n\r\n")) || down < float64(len(body)) {
		t.Errorf("bytes upstream %v, downstream %v: want the request's length and at least the body's", up, down)
	}
}

// Each refusal gets the SOCKS reply code that says why, and is counted.
func TestSOCKSReplyCodes(t *testing.T) {
	f := startFixture(t, Config{})
	for _, tc := range []struct {
		name    string
		request []byte
		want    byte
	}{
		{"refused: the SRV target's port is closed", socksRequest(1, "down.c.test", 80), replyConnectionRefused},
		{"host unreachable: the name does not exist", socksRequest(1, "nx.c.test", 80), replyHostUnreachable},
		{"not allowed: a name outside the zones", socksRequest(1, "example.com", 80), replyNotAllowed},
		{"not allowed: an IP literal outside every allowed CIDR", []byte{5, 1, 0, 1, 127, 0, 0, 1, 0, 80}, replyNotAllowed},
		{"command not supported: BIND", socksRequest(2, "web.c.test", 80), replyCommandNotSupported},
		{"command not supported: UDP ASSOCIATE", socksRequest(3, "web.c.test", 80), replyCommandNotSupported},
		{"address type not supported: 5", []byte{5, 1, 0, 5, 1, 2, 3, 4, 0, 80}, replyAddrTypeUnsupported},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, f.socksAddr)
			c.Write([]byte{5, 1, 0})
			readN(t, c, 2)
			c.Write(tc.request)
			if got := readSOCKSReply(t, c); got != tc.want {
				t.Errorf("reply %#x, want %#x", got, tc.want)
			}
			expectClosed(t, c)
		})
	}
	m := f.proxy.Metrics()
	for _, check := range []struct {
		name string
		got  float64
		want float64
	}{
		{"dial_failures{refused}", testenv.MetricValue(m.DialFailures.WithLabelValues("socks", failRefused)), 1},
		{"dial_failures{no_such_host}", testenv.MetricValue(m.DialFailures.WithLabelValues("socks", failNoSuchHost)), 1},
		{"rejected{not_allowed}", testenv.MetricValue(m.Rejected.WithLabelValues("socks", rejectNotAllowed)), 2},
		{"rejected{unsupported}", testenv.MetricValue(m.Rejected.WithLabelValues("socks", rejectUnsupported)), 3},
	} {
		if check.got != check.want {
			t.Errorf("%s = %v, want %v", check.name, check.got, check.want)
		}
	}
	if n := f.dns.Queries("_80._tcp.example.com.", 33) + f.dns.Queries("example.com.", 1); n != 0 {
		t.Errorf("a refused destination was looked up in DNS (%d queries)", n)
	}
}

// Malformed and abandoned handshakes are answered where SOCKS5 has an
// answer, else closed; afterwards no goroutine is left behind.
func TestSOCKSBadInputIsClosedCleanly(t *testing.T) {
	f := startFixture(t, Config{HandshakeTimeout: 300 * time.Millisecond}) // not a wait: the proxy's setting under test
	// Warm up once, so lazily started goroutines are counted in the baseline.
	c, _ := socksConnect(t, f.socksAddr, "web.c.test", 80)
	c.Close()
	testenv.EventuallyTrue(t, testenv.PromptWait, "the warm-up to end", func() bool { return testenv.MetricValue(f.proxy.Metrics().Active.WithLabelValues("socks")) == 0 })
	baseline := stableGoroutines()

	for _, tc := range []struct {
		name  string
		send  []byte
		reply []byte // what the proxy answers before closing; nil: nothing
		hold  bool   // keep the connection open rather than closing our side
	}{
		{"SOCKS4 greeting: closed unanswered", []byte{4, 1, 0, 80, 127, 0, 0, 1, 0}, nil, true},
		{"HTTP sent to the SOCKS port: closed unanswered", []byte("GET / HTTP/1.1\r\n\r\n"), nil, true},
		{"no methods offered: no acceptable method", []byte{5, 0}, []byte{5, 0xff}, true},
		{"only user/password offered without users: no acceptable method", []byte{5, 1, 2}, []byte{5, 0xff}, true},
		{"request with version 4: closed", []byte{5, 1, 0, 4, 1, 0, 3}, []byte{5, 0}, true},
		{"empty domain name: closed", []byte{5, 1, 0, 5, 1, 0, 3, 0, 0, 80}, []byte{5, 0}, true},
		{"stalls after the greeting: closed at the handshake timeout", []byte{5, 1, 0}, []byte{5, 0}, true},
		{"stalls mid-greeting: closed at the handshake timeout", []byte{5, 3, 0}, nil, true},
		{"disconnects mid-greeting", []byte{5}, nil, false},
		{"disconnects mid-request", []byte{5, 1, 0, 5, 1, 0, 3, 20, 'w', 'e'}, []byte{5, 0}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, f.socksAddr)
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			if !tc.hold {
				c.(*net.TCPConn).CloseWrite()
			}
			if tc.reply != nil {
				if got := readN(t, c, len(tc.reply)); string(got) != string(tc.reply) {
					t.Fatalf("reply %x, want %x", got, tc.reply)
				}
			}
			expectClosed(t, c)
		})
	}
	m := f.proxy.Metrics()
	testenv.EventuallyTrue(t, testenv.PromptWait, "every connection to be released", func() bool { return testenv.MetricValue(m.Active.WithLabelValues("socks")) == 0 })
	if after := settledGoroutines(baseline); after > baseline {
		t.Errorf("%d goroutines after the bad clients, %d before: a handler leaked", after, baseline)
	}
	if n := testenv.MetricValue(m.Rejected.WithLabelValues("socks", rejectBadRequest)); n != 8 {
		t.Errorf("rejected{bad_request} = %v, want 8", n)
	}
	if n := testenv.MetricValue(m.Rejected.WithLabelValues("socks", rejectAuth)); n != 2 {
		t.Errorf("rejected{auth} = %v, want 2 (no acceptable method)", n)
	}
	f.proxy.Close()
	if left := proxyGoroutines(); len(left) > 0 {
		t.Errorf("after Close, %d goroutines still run proxy code:\n%s", len(left), strings.Join(left, "\n\n"))
	}
}

// With users configured, RFC 1929 authentication is required and checked.
func TestSOCKSUsernamePassword(t *testing.T) {
	f := startFixture(t, Config{Users: map[string]string{"alice": "s3cret"}})
	auth := func(user, pass string) (net.Conn, []byte) {
		c := dial(t, f.socksAddr)
		c.Write([]byte{5, 2, 0, 2})
		if got := readN(t, c, 2); got[1] != methodUserPass {
			t.Fatalf("method %#x, want user/password", got[1])
		}
		msg := append([]byte{1, byte(len(user))}, user...)
		msg = append(append(msg, byte(len(pass))), pass...)
		c.Write(msg)
		return c, readN(t, c, 2)
	}

	c, status := auth("alice", "wrong")
	if status[0] != 1 || status[1] != userPassFailed {
		t.Errorf("wrong password: status %x, want 0101", status)
	}
	expectClosed(t, c)
	c, status = auth("mallory", "s3cret")
	if status[1] != userPassFailed {
		t.Errorf("unknown user: status %x, want 0101", status)
	}
	expectClosed(t, c)

	c, status = auth("alice", "s3cret")
	if status[1] != userPassOK {
		t.Fatalf("right password: status %x, want 0100", status)
	}
	c.Write(socksRequest(1, "web.c.test", 80))
	if got := readSOCKSReply(t, c); got != replySucceeded {
		t.Fatalf("CONNECT after authentication: reply %#x", got)
	}

	noAuth := dial(t, f.socksAddr)
	noAuth.Write([]byte{5, 1, 0})
	if got := readN(t, noAuth, 2); got[1] != methodNoAcceptable {
		t.Errorf("client without credentials: method %#x, want 0xff", got[1])
	}
	expectClosed(t, noAuth)
}

// Beyond the connection limit new clients are closed at once.
func TestConnectionLimit(t *testing.T) {
	f := startFixture(t, Config{MaxConns: 1})
	first, reply := socksConnect(t, f.socksAddr, "web.c.test", 80)
	if reply != replySucceeded {
		t.Fatalf("first client: reply %#x", reply)
	}
	second := dial(t, f.socksAddr)
	expectClosed(t, second)
	third := dial(t, f.httpAddr)
	expectClosed(t, third)
	if n := testenv.MetricValue(f.proxy.Metrics().Rejected.WithLabelValues("socks", rejectLimit)); n != 1 {
		t.Errorf("rejected{socks,limit} = %v, want 1", n)
	}
	first.Close()
	testenv.EventuallyTrue(t, testenv.PromptWait, "the slot to be freed", func() bool { return testenv.MetricValue(f.proxy.Metrics().Active.WithLabelValues("socks")) == 0 })
	if _, reply := socksConnect(t, f.socksAddr, "web.c.test", 80); reply != replySucceeded {
		t.Errorf("after the first client left: reply %#x", reply)
	}
}

// A tunnel with no traffic either way is closed after the idle timeout, but
// one with traffic in one direction only is not.
func TestIdleTunnelIsClosed(t *testing.T) {
	// The idle timeout under test: a setting of the proxy, not a wait.
	const idle = 300 * time.Millisecond
	f := startFixture(t, Config{IdleTimeout: idle})
	c, reply := socksConnect(t, f.socksAddr, "silent.c.test", 80)
	if reply != replySucceeded {
		t.Fatalf("reply %#x", reply)
	}
	// Upload for three idle periods while the target says nothing.
	for range 6 {
		time.Sleep(idle / 2)
		if _, err := c.Write([]byte("still here")); err != nil {
			t.Fatalf("tunnel closed while the client was sending: %v", err)
		}
	}
	start := time.Now()
	expectClosed(t, c)
	if waited := time.Since(start); waited < idle/2 || waited > 5*idle {
		t.Errorf("closed %v after the last traffic, want about %v", waited, idle)
	}
}

// A dial that takes longer than the handshake timeout still gets its reply,
// success or failure: the reply's deadline follows the dial.
func TestSOCKSReplyAfterSlowDial(t *testing.T) {
	// The handshake timeout under test: a setting of the proxy, not a wait.
	const handshake = 150 * time.Millisecond
	f := startFixture(t, Config{HandshakeTimeout: handshake,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			select { // a slow network: four handshake timeouts before the connect
			case <-time.After(4 * handshake):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}})
	c, reply := socksConnect(t, f.socksAddr, "web.c.test", 80)
	if reply != replySucceeded {
		t.Fatalf("slow dial to web.c.test:80: reply %#x, want success", reply)
	}
	if body := getThrough(t, c, "web.c.test"); body != "hello from backend\n" {
		t.Errorf("through the tunnel: %q", body)
	}
	c, reply = socksConnect(t, f.socksAddr, "down.c.test", 80)
	if reply != replyConnectionRefused {
		t.Errorf("slow dial to a closed port: reply %#x, want %#x (refused)", reply, replyConnectionRefused)
	}
	expectClosed(t, c)
}
