package ctl

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
)

// chromium is Debian's headless Chromium (hack/deps.sh installs it).
func chromium(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		testenv.Unavailable(t, "chromium: %v", err)
	}
	return path
}

// startUI serves the fixture's page on a loopback port, as berth ui does.
func startUI(t *testing.T, f *fixture) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	u := NewUI(f.consul.Client(), fxPrefix, fxZone, false, slog.New(slog.NewTextHandler(io.Discard, nil)))
	done := make(chan struct{})
	go func() { u.Watch(ctx); close(done) }()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: u, ReadHeaderTimeout: 10 * time.Second} // not a wait: the server's own limit
	go srv.Serve(ln)
	t.Cleanup(func() { cancel(); srv.Close(); <-done })
	url := "http://" + ln.Addr().String() + "/"
	testenv.Eventually(t, consulTimeout, "the page's first read of Consul", func() error {
		var v View
		if err := getJSON(url+"namespace.json", &v); err != nil {
			return err
		}
		if v.Index == 0 {
			return fmt.Errorf("index 0: %s", v.Error)
		}
		return nil
	})
	return url
}

func getJSON(url string, v any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// shown is what a page shows, read from its DOM.
type shown struct {
	Hosts     []string // data-host of the host rows
	Endpoints []string // "service instance host endpoint" of the endpoint rows
	Findings  []string // data-reason of the finding rows
	Links     []string // the service links
	Text      string   // the page's text
}

var (
	hostRow     = regexp.MustCompile(`<tr class="host" data-host="([^"]*)">`)
	endpointRow = regexp.MustCompile(`<tr class="endpoint" data-service="([^"]*)" data-instance="([^"]*)" data-host="([^"]*)" data-endpoint="([^"]*)">`)
	findingRow  = regexp.MustCompile(`<tr class="finding" data-reason="([^"]*)">`)
	link        = regexp.MustCompile(`<a href="([^"]*)">`)
)

func parseDOM(html string) shown {
	var s shown
	for _, m := range hostRow.FindAllStringSubmatch(html, -1) {
		s.Hosts = append(s.Hosts, m[1])
	}
	for _, m := range endpointRow.FindAllStringSubmatch(html, -1) {
		s.Endpoints = append(s.Endpoints, strings.Join(m[1:], " "))
	}
	for _, m := range findingRow.FindAllStringSubmatch(html, -1) {
		s.Findings = append(s.Findings, m[1])
	}
	for _, m := range link.FindAllStringSubmatch(html, -1) {
		s.Links = append(s.Links, m[1])
	}
	s.Text = html
	return s
}

// The fixture as the page must show it.
var (
	wantHosts     = []string{"host1", "host2"}
	wantEndpoints = []string{
		"db.shop db-1 host1 192.0.2.10:32769",
		"lo.test lo-1 host2 127.0.0.1:32772",
		"pay.bank pay-1 host2 192.0.2.20:32771",
		"web.shop web-1 host1 192.0.2.10:32768",
		"web.shop web-2 host2 192.0.2.20:32770",
	}
	wantLinks = []string{
		"http://db.shop.c.example.org/", "http://lo.test.c.example.org/", "http://pay.bank.c.example.org/",
		"http://web.shop.c.example.org/", "http://web.shop.c.example.org/",
	}
)

// TestUIChromium loads the page in headless Chromium twice: once with
// --dump-dom, checking what it shows against the KV contents (hostile
// text among them); once kept open over the DevTools pipe while an
// exporter's transaction adds a container, until the page shows it by
// itself.
func TestUIChromium(t *testing.T) {
	browser := chromium(t)
	f := startFixture(t)
	// A hostile key: its text must show as text, never as markup.
	hostile := record.HostsPrefix(fxPrefix) + `<img src=x onerror="document.title='owned'">`
	if ok, _, _, err := f.kv.Txn(api.KVTxnOps{{Verb: api.KVSet, Key: hostile, Value: []byte("{}")}}, nil); err != nil || !ok {
		t.Fatalf("txn: %v %v", ok, err)
	}
	url := startUI(t, f)

	// The profile folder is made before the browser starts, so its removal
	// runs after the browser's group is gone (StartProcT's cleanup).
	cmd := exec.Command(browser, "--headless", "--no-sandbox", "--disable-gpu",
		"--user-data-dir="+t.TempDir(), "--virtual-time-budget=5000", "--dump-dom", url)
	var out strings.Builder
	cmd.Stdout = &out
	browserProc := testenv.StartProcT(t, cmd)
	select {
	case <-browserProc.Done():
	case <-time.After(dumpDOMWait):
		t.Fatalf("chromium --dump-dom did not end within %v", dumpDOMWait)
	}
	// The browser has printed the page; its renderers may still be
	// writing the profile: Wait ends them.
	if err := browserProc.Wait(); err != nil {
		t.Fatalf("chromium --dump-dom: %v", err)
	}
	page := parseDOM(out.String())
	check := func(what string, got, want []string) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Errorf("%s: the page shows %q, want %q", what, got, want)
		}
	}
	check("hosts", page.Hosts, wantHosts)
	check("endpoints", page.Endpoints, wantEndpoints)
	check("links", page.Links, wantLinks)
	check("findings", page.Findings, []string{ProblemOrphan, ProblemInvalid, ProblemInvalid, ProblemInvalid, record.ClassLoopback, "refused"})
	for _, w := range []string{"berth-proxy's PAC file", "&lt;img src=x onerror=", "0.1.0\x1b[2J"} {
		if !strings.Contains(page.Text, w) {
			t.Errorf("the page lacks %q", w)
		}
	}
	if strings.Contains(page.Text, "<img") || strings.Contains(page.Text, "owned</title>") {
		t.Error("the hostile key became markup")
	}

	// Live: the page stays open and follows a change.
	cdp := startCDP(t, browser, url)
	js := `JSON.stringify({
	  Hosts: [...document.querySelectorAll('tr.host')].map(e => e.dataset.host),
	  Endpoints: [...document.querySelectorAll('tr.endpoint')].map(e => [e.dataset.service, e.dataset.instance, e.dataset.host, e.dataset.endpoint].join(' ')),
	  Text: (document.getElementById('hosts') || {}).innerText || ''})`
	read := func() shown {
		var s shown
		if err := json.Unmarshal([]byte(cdp.evaluate(t, js)), &s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	testenv.Eventually(t, testenv.PartStartWait, "the open page shows the fixture", func() error {
		if s := read(); !slices.Equal(s.Endpoints, wantEndpoints) {
			return fmt.Errorf("endpoints %q", s.Endpoints)
		}
		return nil
	})
	web3 := ctr(strings.Repeat("9", 64), "web-3", "web.shop", "healthy", 20, 80, "tcp", "http", "192.0.2.20", 32773)
	f.publish(t, f.host2, web3)
	want := slices.Insert(slices.Clone(wantEndpoints), 5, "web.shop web-3 host2 192.0.2.20:32773")
	testenv.Eventually(t, pageChangeWait, "the open page shows the new container", func() error {
		s := read()
		if !slices.Equal(s.Endpoints, want) {
			return fmt.Errorf("endpoints %q", s.Endpoints)
		}
		// host2 now has four containers and rev 5.
		if !strings.Contains(s.Text, "host2\t192.0.2.20\t4\t") || !strings.Contains(s.Text, "\t5\t") {
			return fmt.Errorf("hosts table %q", s.Text)
		}
		return nil
	})
}

// The server answers its loopback names only, and reads only.
func TestUIRefuses(t *testing.T) {
	f := startFixture(t)
	url := startUI(t, f)
	req, _ := http.NewRequest("GET", url, nil)
	req.Host = "rebound.example.com"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("Host rebound.example.com: %s", resp.Status)
	}
	resp, err = http.Post(url, "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %s", resp.Status)
	}
	var v View
	if err := getJSON(url+"namespace.json", &v); err != nil {
		t.Fatal(err)
	}
	if v.Refused != 1 {
		t.Errorf("refused_requests %d, want 1", v.Refused)
	}
	// /fragment answers 204 while the index is the page's.
	resp, err = http.Get(fmt.Sprintf("%sfragment?index=%d", url, v.Index))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Errorf("fragment at the current index: %s", resp.Status)
	}
}

// cdp is a Chromium kept open, driven over --remote-debugging-pipe: the
// DevTools protocol as NUL-terminated JSON on file descriptors 3 and 4.
type cdp struct {
	mu      sync.Mutex
	w       *os.File
	r       *bufio.Reader
	id      int
	session string
}

func startCDP(t *testing.T, browser, url string) *cdp {
	t.Helper()
	toChrome, ours, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	fromChrome, theirs, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(browser, "--headless", "--no-sandbox", "--disable-gpu",
		"--user-data-dir="+t.TempDir(), "--remote-debugging-pipe", url)
	cmd.ExtraFiles = []*os.File{toChrome, theirs}
	// Runs after the browser's group is killed (registered before it).
	t.Cleanup(func() {
		ours.Close()
		fromChrome.Close()
	})
	testenv.StartProcT(t, cmd)
	toChrome.Close()
	theirs.Close()
	c := &cdp{w: ours, r: bufio.NewReader(fromChrome)}
	var target string
	testenv.Eventually(t, testenv.PartStartWait, "chromium's page target", func() error {
		var res struct {
			TargetInfos []struct{ TargetID, Type, URL string } `json:"targetInfos"`
		}
		if err := c.call("", "Target.getTargets", nil, &res); err != nil {
			return err
		}
		for _, ti := range res.TargetInfos {
			if ti.Type == "page" && ti.URL == url {
				target = ti.TargetID
				return nil
			}
		}
		return fmt.Errorf("no page at %s among %+v", url, res.TargetInfos)
	})
	var att struct {
		SessionID string `json:"sessionId"`
	}
	if err := c.call("", "Target.attachToTarget", map[string]any{"targetId": target, "flatten": true}, &att); err != nil {
		t.Fatal(err)
	}
	c.session = att.SessionID
	return c
}

// call sends one command and waits for its answer, skipping events.
func (c *cdp) call(session, method string, params, result any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.id++
	msg := map[string]any{"id": c.id, "method": method}
	if params != nil {
		msg["params"] = params
	}
	if session != "" {
		msg["sessionId"] = session
	}
	b, _ := json.Marshal(msg)
	if _, err := c.w.Write(append(b, 0)); err != nil {
		return err
	}
	for {
		line, err := c.r.ReadBytes(0)
		if err != nil {
			return fmt.Errorf("devtools pipe: %w", err)
		}
		var resp struct {
			ID     int             `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  *struct{ Message string }
		}
		if err := json.Unmarshal(line[:len(line)-1], &resp); err != nil {
			return err
		}
		if resp.ID != c.id {
			continue
		}
		if resp.Error != nil {
			return fmt.Errorf("%s: %s", method, resp.Error.Message)
		}
		return json.Unmarshal(resp.Result, result)
	}
}

// evaluate runs expression in the page and returns its string value.
func (c *cdp) evaluate(t *testing.T, expression string) string {
	t.Helper()
	var res struct {
		Result struct {
			Value string `json:"value"`
		} `json:"result"`
		ExceptionDetails any `json:"exceptionDetails"`
	}
	if err := c.call(c.session, "Runtime.evaluate", map[string]any{"expression": expression, "returnByValue": true}, &res); err != nil {
		t.Fatal(err)
	}
	if res.ExceptionDetails != nil {
		t.Fatalf("evaluate: %v", res.ExceptionDetails)
	}
	return res.Result.Value
}

// The page's headers: its script and style are allowed by hash, never as
// 'unsafe-inline'; no page may frame it; nothing it serves is sniffed.
// (TestUIChromium proves the hashes right: the page's script runs and
// follows a change under this policy.)
func TestUIHeaders(t *testing.T) {
	f := startFixture(t)
	url := startUI(t, f)
	for _, path := range []string{"", "fragment", "namespace.json"} {
		resp, err := http.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		csp := resp.Header.Get("Content-Security-Policy")
		directives := map[string]string{}
		for _, d := range strings.Split(csp, ";") {
			name, value, _ := strings.Cut(strings.TrimSpace(d), " ")
			directives[name] = value
		}
		if strings.Contains(csp, "unsafe-inline") || !strings.HasPrefix(directives["script-src"], "'sha256-") {
			t.Errorf("/%s: CSP %q allows inline script by other than its hash", path, csp)
		}
		if directives["frame-ancestors"] != "'none'" {
			t.Errorf("/%s: CSP %q: want frame-ancestors 'none'", path, csp)
		}
		if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("/%s: X-Content-Type-Options %q, want nosniff", path, got)
		}
	}
}
