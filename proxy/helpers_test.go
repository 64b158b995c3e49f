package proxy

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/berthdns/berth/internal/testenv"
)

// fixture is a proxy in front of a small Berth-like zone c.test. served by a
// real DNS server: web.c.test:80 is an HTTP backend, down.c.test:80 a port
// nothing listens on, silent.c.test:80 a server that never speaks;
// meta, ll6, any and group.c.test:80 point at link-local, unspecified and
// multicast addresses. The proxy allows loopback, where the backends are.
type fixture struct {
	proxy       *Server
	backendPort int
	socksAddr   string
	httpAddr    string
	dns         *testenv.DNSServer
}

func startFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	backend := listen(t)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "hello from backend") })
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(w, r.Body) })
	hs := &http.Server{Handler: mux}
	go hs.Serve(backend)
	t.Cleanup(func() { hs.Close() })

	silent := listen(t)
	go func() { // holds connections open, says nothing, closes them at the end
		var held []net.Conn
		for {
			c, err := silent.Accept()
			if err != nil {
				for _, c := range held {
					c.Close()
				}
				return
			}
			held = append(held, c)
		}
	}()
	dead := listen(t)
	deadPort := port(dead)
	dead.Close()

	dns := testenv.StartDNSServer(t,
		"c.test. 60 IN SOA ns.c.test. hostmaster.c.test. 1 60 60 60 5",
		"_80._tcp.web.c.test. 5 IN SRV 10 10 "+strconv.Itoa(port(backend))+" h1.hosts.c.test.",
		"_80._tcp.down.c.test. 5 IN SRV 10 10 "+strconv.Itoa(deadPort)+" h1.hosts.c.test.",
		"_80._tcp.silent.c.test. 5 IN SRV 10 10 "+strconv.Itoa(port(silent))+" h1.hosts.c.test.",
		"h1.hosts.c.test. 5 IN A 127.0.0.1",
		// Targets the proxy never dials, not even with AllowLoopback.
		"_80._tcp.meta.c.test. 5 IN SRV 10 10 80 metadata.hosts.c.test.",
		"metadata.hosts.c.test. 5 IN A 169.254.169.254",
		"_80._tcp.ll6.c.test. 5 IN SRV 10 10 80 ll6.hosts.c.test.",
		"ll6.hosts.c.test. 5 IN AAAA fe80::1",
		"_80._tcp.any.c.test. 5 IN SRV 10 10 80 any.hosts.c.test.",
		"any.hosts.c.test. 5 IN A 0.0.0.0",
		"_80._tcp.group.c.test. 5 IN SRV 10 10 80 group.hosts.c.test.",
		"group.hosts.c.test. 5 IN A 224.0.0.1",
	)
	if cfg.Zones == nil {
		cfg.Zones = []string{"c.test"}
	}
	cfg.DNSServer = dns.Addr
	cfg.AllowLoopback = true // every target here is on 127.0.0.1
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{proxy: srv, dns: dns, backendPort: port(backend)}
	socksLn, httpLn := listen(t), listen(t)
	f.socksAddr, f.httpAddr = socksLn.Addr().String(), httpLn.Addr().String()
	go srv.ServeSOCKS(socksLn)
	go srv.ServeHTTPProxy(httpLn)
	t.Cleanup(func() { srv.Close() })
	// ServeSOCKS names its listener to the PAC file from its own goroutine,
	// which a busy machine may run after the test's first request: wait
	// for it, as a browser fetches the PAC file only once the proxy runs.
	testenv.EventuallyTrue(t, testenv.PartStartWait, "the SOCKS listener known to the PAC file", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return len(srv.socksAddrs) > 0
	})
	return f
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func port(ln net.Listener) int { return ln.Addr().(*net.TCPAddr).Port }

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// The proxy answers a client within its handshake timeout, or closes.
	_ = c.SetDeadline(time.Now().Add(DefaultHandshakeTimeout))
	return c
}

// readN reads exactly n bytes, or fails the test.
func readN(t *testing.T, c net.Conn, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("reading %d bytes: %v", n, err)
	}
	return b
}

// expectClosed asserts the server closed c without sending anything more.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(testenv.PromptWait))
	b := make([]byte, 64)
	n, err := c.Read(b)
	if n > 0 || err == nil {
		t.Fatalf("got %x, want the connection closed", b[:n])
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the connection is still open")
	}
}

// socksRequest builds a CONNECT (or other cmd) request for a domain name.
func socksRequest(cmd byte, host string, port uint16) []byte {
	req := []byte{5, cmd, 0, 3, byte(len(host))}
	req = append(req, host...)
	return binary.BigEndian.AppendUint16(req, port)
}

// socksConnect runs a no-auth SOCKS5 handshake and CONNECT, returning the
// reply code.
func socksConnect(t *testing.T, proxyAddr, host string, port uint16) (net.Conn, byte) {
	t.Helper()
	c := dial(t, proxyAddr)
	if _, err := c.Write([]byte{5, 1, 0}); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, c, 2); got[0] != 5 || got[1] != 0 {
		t.Fatalf("method selection %x, want 0500", got)
	}
	if _, err := c.Write(socksRequest(1, host, port)); err != nil {
		t.Fatal(err)
	}
	return c, readSOCKSReply(t, c)
}

func readSOCKSReply(t *testing.T, c net.Conn) byte {
	t.Helper()
	head := readN(t, c, 4)
	if head[0] != 5 {
		t.Fatalf("reply version %d", head[0])
	}
	switch head[3] {
	case 1:
		readN(t, c, 4+2)
	case 4:
		readN(t, c, 16+2)
	default:
		t.Fatalf("reply address type %d", head[3])
	}
	return head[1]
}

// settledGoroutines waits until the goroutine count falls to at most want
// (or testenv.PromptWait passes), and returns the count it saw last.
func settledGoroutines(want int) int {
	deadline := time.Now().Add(testenv.PromptWait)
	for {
		n := runtime.NumGoroutine()
		if n <= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(testenv.PollInterval)
	}
}

// goroutinesStable is how long the goroutine count must stay the same for
// stableGoroutines to take it: not a wait for a condition but the span
// that tells a settled count from one still moving, five polls.
const goroutinesStable = 5 * testenv.PollInterval

// stableGoroutines is the goroutine count once it has not changed for
// goroutinesStable.
func stableGoroutines() int {
	last, since := runtime.NumGoroutine(), time.Now()
	for time.Since(since) < goroutinesStable {
		time.Sleep(testenv.PollInterval)
		if n := runtime.NumGoroutine(); n != last {
			last, since = n, time.Now()
		}
	}
	return last
}

// proxyGoroutines lists the stacks of goroutines still running the proxy's
// code or an HTTP connection of its own, waiting up to testenv.PromptWait
// for them to end.
func proxyGoroutines() []string {
	deadline := time.Now().Add(testenv.PromptWait)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var left []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			for _, code := range []string{"proxy.(*Server)", "proxy.(*httpProxy)", "proxy.relay",
				"proxy.copyWhileActive", "berth/resolver.", "net/http.(*persistConn)"} {
				if strings.Contains(g, code) {
					left = append(left, g)
					break
				}
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(testenv.PollInterval)
	}
}

// getThrough sends GET / for host over c, an open tunnel, and returns the
// response body.
func getThrough(t *testing.T, c net.Conn, host string) string {
	t.Helper()
	fmt.Fprintf(c, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", host)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}
