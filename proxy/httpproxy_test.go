package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berthdns/berth/internal/testenv"
)

func proxyClient(t *testing.T, proxyAddr string, user *url.Userinfo) *http.Client {
	t.Helper()
	u := &url.URL{Scheme: "http", Host: proxyAddr, User: user}
	tr := &http.Transport{Proxy: http.ProxyURL(u)}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func get(t *testing.T, c *http.Client, method, rawURL, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, rawURL, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, rawURL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Absolute-URI GET and POST are forwarded to the service's SRV target; the
// port of an http:// URL without one is 80.
func TestHTTPForwarding(t *testing.T) {
	f := startFixture(t, Config{})
	c := proxyClient(t, f.httpAddr, nil)
	if status, body := get(t, c, "GET", "http://web.c.test/", ""); status != 200 || body != "hello from backend\n" {
		t.Errorf("GET: %d %q", status, body)
	}
	if status, body := get(t, c, "POST", "http://web.c.test:80/echo", "ping"); status != 200 || body != "ping" {
		t.Errorf("POST: %d %q, want the body echoed", status, body)
	}
	if f.dns.Queries("_80._tcp.web.c.test.", 33) != 1 {
		t.Error("want exactly one SRV query for _80._tcp.web.c.test. (then cached)")
	}
	m := f.proxy.Metrics()
	if testenv.MetricValue(m.Bytes.WithLabelValues("http", "upstream")) == 0 || testenv.MetricValue(m.Bytes.WithLabelValues("http", "downstream")) == 0 {
		t.Error("forwarded bytes were not counted")
	}
}

// Failures get a status that says why, with the resolver's explanation.
func TestHTTPForwardingFailures(t *testing.T) {
	f := startFixture(t, Config{})
	c := proxyClient(t, f.httpAddr, nil)
	for _, tc := range []struct {
		url    string
		status int
		says   string
	}{
		{"http://example.com/", http.StatusForbidden, "example.com is not allowed"},
		{"http://127.0.0.1/", http.StatusForbidden, "127.0.0.1 is not allowed"},
		{"http://down.c.test/", http.StatusBadGateway, "_80._tcp.down.c.test. SRV: 1 target: h1.hosts.c.test.:"},
		{"http://nx.c.test/", http.StatusBadGateway, "nx.c.test. SRV: no such host"},
		// A host's name has an A record but publishes no port of its own.
		{"http://h1.hosts.c.test:" + strconv.Itoa(f.backendPort) + "/", http.StatusForbidden, "no SRV record publishes the port"},
		{"http://meta.c.test/", http.StatusForbidden, "169.254.169.254:80 is a link_local address"},
	} {
		status, body := get(t, c, "GET", tc.url, "")
		if status != tc.status || !strings.Contains(body, tc.says) {
			t.Errorf("GET %s: %d %q, want %d saying %q", tc.url, status, body, tc.status, tc.says)
		}
	}
	// A request for the proxy itself, not a proxied URL.
	resp, err := http.Get("http://" + f.httpAddr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("relative URI: %d, want 400", resp.StatusCode)
	}
}

// CONNECT opens a tunnel to the service; refused destinations get 403.
func TestHTTPConnect(t *testing.T) {
	f := startFixture(t, Config{})
	c := dial(t, f.httpAddr)
	// The tunnelled request is sent right behind CONNECT, before the 200:
	// it must reach the target, not stay in the proxy's buffer.
	fmt.Fprint(c, "CONNECT web.c.test:80 HTTP/1.1\r\nHost: web.c.test:80\r\n\r\nGET / HTTP/1.0\r\nHost: web.c.test\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	inner, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(inner.Body)
	if string(body) != "hello from backend\n" {
		t.Errorf("through the tunnel: %q", body)
	}

	refused := dial(t, f.httpAddr)
	fmt.Fprint(refused, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
	resp, err = http.ReadResponse(bufio.NewReader(refused), &http.Request{Method: "CONNECT"})
	if err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("CONNECT example.com:443: %v %v, want 403", resp, err)
	}
}

// With users configured, HTTP clients must send Proxy-Authorization.
func TestHTTPProxyAuthentication(t *testing.T) {
	f := startFixture(t, Config{Users: map[string]string{"alice": "s3cret"}})
	for _, tc := range []struct {
		user   *url.Userinfo
		status int
	}{
		{nil, http.StatusProxyAuthRequired},
		{url.UserPassword("alice", "wrong"), http.StatusProxyAuthRequired},
		{url.UserPassword("alice", "s3cret"), http.StatusOK},
	} {
		status, _ := get(t, proxyClient(t, f.httpAddr, tc.user), "GET", "http://web.c.test/", "")
		if status != tc.status {
			t.Errorf("credentials %v: %d, want %d", tc.user, status, tc.status)
		}
	}
}

// Two keep-alive clients that went quiet after a request hold both slots
// of MaxConns 2 only until the keep-alive timeout, not the tunnels' idle
// timeout: then the server closes them and a third user gets in.
func TestIdleKeepAliveReleasesItsSlot(t *testing.T) {
	f := startFixture(t, Config{MaxConns: 2, KeepAliveTimeout: 200 * time.Millisecond, IdleTimeout: time.Hour}) // not a wait: the proxy's settings under test
	m := f.proxy.Metrics()
	var idle []net.Conn
	for range 2 {
		c := dial(t, f.httpAddr)
		fmt.Fprint(c, "GET http://web.c.test/ HTTP/1.1\r\nHost: web.c.test\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Close {
			t.Fatalf("keep-alive request: %d, close %v", resp.StatusCode, resp.Close)
		}
		idle = append(idle, c)
	}
	// Both slots are taken: a third connection is turned away now.
	expectClosed(t, dial(t, f.httpAddr))
	if n := testenv.MetricValue(m.Rejected.WithLabelValues("http", rejectLimit)); n != 1 {
		t.Fatalf("rejected{http,limit} = %v, want 1 while two keep-alive connections are open", n)
	}
	for _, c := range idle {
		expectClosed(t, c) // by the server, at the keep-alive timeout
	}
	testenv.EventuallyTrue(t, testenv.PromptWait, "the idle keep-alive connections to be released", func() bool { return testenv.MetricValue(m.Active.WithLabelValues("http")) == 0 })
	if status, body := get(t, proxyClient(t, f.httpAddr, nil), "GET", "http://web.c.test/", ""); status != 200 {
		t.Errorf("third user after the keep-alive timeout: %d %q", status, body)
	}
}
