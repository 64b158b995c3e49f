package proxy

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berthdns/berth/internal/testenv"
)

// pacEval evaluates FindProxyForURL of the PAC file src for each host with
// node, in a fresh context that defines none of the PAC helper functions:
// a file that used one would fail here.
func pacEval(t *testing.T, src string, hosts []string) map[string]string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		testenv.Unavailable(t, "node: %v", err)
	}
	dir := t.TempDir()
	pac := filepath.Join(dir, "proxy.pac")
	if err := os.WriteFile(pac, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	script := `
const fs = require("fs"), vm = require("vm");
const find = vm.runInNewContext(fs.readFileSync(process.argv[1], "utf8") + "\nFindProxyForURL", {});
const out = {};
for (const h of JSON.parse(process.argv[2])) out[h] = find("http://" + h + "/", h);
console.log(JSON.stringify(out));
`
	hostsJSON, _ := json.Marshal(hosts)
	ctx, cancel := context.WithTimeout(t.Context(), testenv.PartStartWait)
	defer cancel()
	out, err := exec.CommandContext(ctx, node, "-e", script, pac, string(hostsJSON)).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("node: %v\n%s\nPAC file:\n%s", err, stderr, src)
	}
	got := map[string]string{}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("node printed %q: %v", out, err)
	}
	return got
}

func fetchPAC(t *testing.T, httpAddr string) string {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/proxy.pac")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ns-proxy-autoconfig" {
		t.Fatalf("GET /proxy.pac: %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return string(body)
}

// The PAC file sends the served zones' names through the proxy and all
// else DIRECT, judged at label boundaries like the proxy's own policy.
func TestPACFileSendsOnlyTheZonesThroughTheProxy(t *testing.T) {
	f := startFixture(t, Config{Zones: []string{"c.test", "Other.Example"}, Users: map[string]string{"alice": "s3cret"}})
	src := fetchPAC(t, f.httpAddr) // no credentials: browsers fetch it before they have any
	via := "PROXY " + f.httpAddr + "; SOCKS5 " + f.socksAddr
	want := map[string]string{
		"web.c.test": via, "c.test": via, "WEB.C.TEST": via, "web.c.test.": via, "a.b.other.example": via,
		"evilc.test": "DIRECT", "c.test.evil.net": "DIRECT", "xother.example": "DIRECT", "example": "DIRECT",
		"example.com": "DIRECT", "127.0.0.1": "DIRECT", "test": "DIRECT", "": "DIRECT",
	}
	var hosts []string
	for h := range want {
		hosts = append(hosts, h)
	}
	got := pacEval(t, src, hosts)
	for h, w := range want {
		if got[h] != w {
			t.Errorf("FindProxyForURL(%q) = %q, want %q", h, got[h], w)
		}
	}

	// A Host header that is no plain host:port is not written into the
	// file: the listener's own address is.
	c := dial(t, f.httpAddr)
	// (net/http itself answers 400 to a Host with a quote; these
	// characters it lets through.)
	fmt.Fprint(c, "GET /proxy.pac HTTP/1.1\r\nHost: x'+alert(1)+'y:80\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || strings.Contains(string(body), "alert") || !strings.Contains(string(body), `"PROXY `+f.httpAddr+`; SOCKS5 `+f.socksAddr+`"`) {
		t.Errorf("PAC for a hostile Host header:\n%s", body)
	}
	if got := pacEval(t, string(body), []string{"web.c.test"}); got["web.c.test"] != via {
		t.Errorf("PAC for a hostile Host header sends web.c.test to %q, want %q", got["web.c.test"], via)
	}
}

// A real browser configured with nothing but the PAC URL fetches a page of
// a service published in the zone (Consul, the project's CoreDNS) through
// the proxy, and an out-of-zone page directly.
func TestE2EChromiumWithPACFile(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		testenv.Unavailable(t, "chromium (Debian package chromium, hack/deps.sh): %v", err)
	}
	consul := testenv.StartConsul(t, testenv.ConsulOptions{})
	service := listen(t)
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "<html><body>hello from web-1 in the zone</body></html>")
	})}
	go hs.Serve(service)
	t.Cleanup(func() { hs.Close() })
	var directHits atomic.Int32
	direct := listen(t)
	ds := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		directHits.Add(1)
		fmt.Fprint(w, "<html><body>hello from outside the zone</body></html>")
	})}
	go ds.Serve(direct)
	t.Cleanup(func() { ds.Close() })

	id := make([]byte, 32)
	_, _ = rand.Read(id)
	publish(t, consul.Client().KV(), webContainer{id: hex.EncodeToString(id), name: "web-1", hostPort: port(service)})
	dnsd := testenv.StartCoreDNS(t, e2eCorefile(consul.HTTP))
	waitSRV(t, dnsd.Addr, "_80._tcp.web.shop."+e2eZone+".", 1)
	srv, _, httpAddr := startInProcess(t, Config{Zones: []string{e2eZone}, DNSServer: dnsd.Addr, AllowLoopback: true})

	browse := func(url string) string {
		t.Helper()
		// The profile folder is made before the browser starts, so that
		// its removal runs after the browser's whole group is gone.
		cmd := exec.Command(chromium, "--headless", "--no-sandbox", "--disable-gpu",
			"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
			"--disable-dev-shm-usage", "--disable-extensions",
			"--user-data-dir="+t.TempDir(),
			"--proxy-pac-url=http://"+httpAddr+"/proxy.pac",
			// The out-of-zone name exists for this browser only, at the
			// direct server; the proxy would refuse it (not in its zone).
			"--host-resolver-rules=MAP direct.example.net 127.0.0.1:"+strconv.Itoa(port(direct)),
			"--dump-dom", url)
		var stdout, stderr testenv.LockedBuffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		browser := testenv.StartProcT(t, cmd)
		select {
		case <-browser.Done():
		case <-time.After(testenv.BrowserStartWait):
			t.Fatalf("chromium %s: no page within %v\n%s", url, testenv.BrowserStartWait, stderr.String())
		}
		if err := browser.Wait(); err != nil {
			t.Fatalf("chromium %s: %v\n%s", url, err, stderr.String())
		}
		return stdout.String()
	}
	m := srv.Metrics()
	if dom := browse("http://web.shop." + e2eZone + "/"); !strings.Contains(dom, "hello from web-1 in the zone") {
		t.Errorf("chromium got, for the service in the zone:\n%s", dom)
	}
	viaProxy := testenv.MetricValue(m.Bytes.WithLabelValues("http", "downstream"))
	if viaProxy == 0 {
		t.Error("the in-zone page did not come through the proxy")
	}
	if dom := browse("http://direct.example.net/"); !strings.Contains(dom, "hello from outside the zone") {
		t.Errorf("chromium got, for the page outside the zone:\n%s", dom)
	}
	if directHits.Load() == 0 {
		t.Error("the out-of-zone server was not reached")
	}
	if testenv.MetricValue(m.Bytes.WithLabelValues("http", "downstream")) != viaProxy ||
		testenv.MetricValue(m.Rejected.WithLabelValues("http", rejectNotAllowed)) != 0 {
		t.Error("the out-of-zone page went to the proxy, not DIRECT")
	}
}

// The PAC file is served with nosniff, and a Host header carrying an IPv6
// zone id (the client's interface name, free text) is not reflected: the
// file names the address the connection arrived at instead (issue 21, 9).
func TestPACHeadersAndZoneIDNotReflected(t *testing.T) {
	f := startFixture(t, Config{Zones: []string{"c.test"}})
	for _, host := range []string{"[fe80::1%25evil]:3128", "[fe80::1%evil]:3128"} {
		c := dial(t, f.httpAddr)
		fmt.Fprintf(c, "GET /proxy.pac HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		c.Close()
		if resp.StatusCode != http.StatusOK {
			// net/http refusing the header is as good: nothing reflected.
			continue
		}
		if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("GET /proxy.pac: X-Content-Type-Options %q, want nosniff", got)
		}
		if strings.Contains(string(body), "evil") || strings.Contains(string(body), "fe80") {
			t.Errorf("PAC for Host %s reflects it:\n%s", host, body)
		}
		if !strings.Contains(string(body), `"PROXY `+f.httpAddr+`; SOCKS5 `+f.socksAddr+`"`) {
			t.Errorf("PAC for Host %s does not name the listener %s:\n%s", host, f.httpAddr, body)
		}
	}
	resp, err := http.Get("http://" + f.httpAddr + "/proxy.pac")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
		t.Errorf("GET /proxy.pac: X-Content-Type-Options %q, want nosniff", got)
	}
}
