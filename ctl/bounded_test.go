package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/berthdns/berth/record"
)

// putOversize writes, for host, container documents a little over the
// readers' bound (record.MaxHostBytes): 280 of 60 KiB, some 23 MB as Consul
// sends them (base64), and its host document.
func putOversize(t *testing.T, kv *api.KV, host string) {
	t.Helper()
	pad := `{"v":1,"pad":"` + strings.Repeat("x", 60<<10) + `"}`
	for i := range 280 {
		if _, err := kv.Put(&api.KVPair{Key: record.ContainerKey(fxPrefix, host, fmt.Sprintf("%064x", i+1)), Value: []byte(pad)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := kv.Put(&api.KVPair{Key: record.HostKey(fxPrefix, host), Value: mustJSON(t, &record.Host{V: 1, Name: host,
		Addrs: []netip.Addr{mustAddr("192.0.2.66")}, Rev: 1, Exporter: "hostile"})}, nil); err != nil {
		t.Fatal(err)
	}
}

// Issue 21, row 8: berth hosts reads each host within the plugin's bound; a
// host whose documents are over it is not read (nor listed) but reported,
// and the other hosts are listed as before.
func TestHostsBounded(t *testing.T) {
	f := startFixture(t)
	putOversize(t, f.kv, "flood")
	code, out, errOut := run("hosts", "-o", "json")
	if code != 0 {
		t.Fatalf("berth hosts: exit %d\n%s", code, errOut)
	}
	var hosts []HostInfo
	if err := json.Unmarshal([]byte(out), &hosts); err != nil {
		t.Fatalf("berth hosts -o json: %v\n%s", err, out)
	}
	var names []string
	for _, h := range hosts {
		names = append(names, h.Name)
	}
	if strings.Join(names, ",") != "host1,host2" {
		t.Errorf("berth hosts lists %v, want host1 and host2 (flood's documents are over the bound)", names)
	}
	code, out, _ = run("check", "-o", "json")
	if code != 1 || !strings.Contains(out, `"`+ProblemOversize+`"`) || !strings.Contains(out, record.ContainersPrefix(fxPrefix, "flood")) {
		t.Errorf("berth check: exit %d, want 1 and the oversize host reported:\n%s", code, out)
	}
}

// Issue 21, row 8: -o json escapes every control and format character, C1
// controls (U+009B, a terminal's CSI) and bidi overrides (U+202E) too, and
// a JSON decoder still reads the same text.
func TestHostsJSONEscapesControls(t *testing.T) {
	f := startFixture(t)
	hostile := "0.1.0\u009b2J\u202eevil\u2066\u200f\U000e0041"
	f.host2.Exporter = hostile
	f.publish(t, f.host2)
	code, out, errOut := run("hosts", "-o", "json")
	if code != 0 {
		t.Fatalf("berth hosts: exit %d\n%s", code, errOut)
	}
	for _, r := range []rune{0x9b, 0x202e, 0x2066, 0x200f, 0xe0041} {
		if strings.ContainsRune(out, r) {
			t.Errorf("berth hosts -o json prints U+%04X as it is", r)
		}
	}
	for _, esc := range []string{`\u009b`, `\u202e`, `\u2066`, `\u200f`, `\udb40\udc41`} {
		if !strings.Contains(out, esc) {
			t.Errorf("berth hosts -o json lacks the escape %s:\n%s", esc, out)
		}
	}
	var hosts []HostInfo
	if err := json.Unmarshal([]byte(out), &hosts); err != nil || len(hosts) != 2 || hosts[1].Exporter != hostile {
		t.Errorf("decoded: %v %+v, want host2's exporter %q", err, hosts, hostile)
	}
}

// countingTransport counts the requests that read host1's container
// documents: berth ui's reads of the namespace.
type countingTransport struct {
	next  http.RoundTripper
	reads *atomic.Int32
}

func (c countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	p := req.URL.Path
	if _, keysOnly := req.URL.Query()["keys"]; !keysOnly &&
		(p == "/v1/kv/"+fxPrefix+"/" || p == "/v1/kv/"+record.ContainersPrefix(fxPrefix, "host1")) {
		c.reads.Add(1)
	}
	return c.next.RoundTrip(req)
}

// Issue 21, row 8: a host that changes its documents many times a second
// costs berth ui at most one read of the namespace per uiMinReread.
func TestUIRereadsAreRateLimited(t *testing.T) {
	f := startFixture(t)
	var reads atomic.Int32
	cfg := api.DefaultConfig()
	cfg.Address = f.consul.HTTP
	hc, err := api.NewHttpClient(cfg.Transport, cfg.TLSConfig)
	if err != nil {
		t.Fatal(err)
	}
	hc.Transport = boundedTransport{next: countingTransport{next: hc.Transport, reads: &reads}}
	cfg.HttpClient = hc
	client, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	u := NewUI(client, fxPrefix, fxZone, false, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { u.Watch(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	// The first read starts at once (a key list at index 0 answers
	// immediately) and is one read of a few hosts on loopback: berth's
	// consulTimeout, its bound for a whole read, is far above it.
	testenv.Eventually(t, consulTimeout, "the page's first read", func() error {
		if u.current().Index == 0 {
			return fmt.Errorf("no read yet")
		}
		return nil
	})

	// flapFor is several uiMinReread; flapEvery is a host changing far
	// faster than that (as a flapping container or a hostile exporter).
	const flapFor = 3 * uiMinReread
	const flapEvery = 50 * time.Millisecond // not a wait: the hostile host's pace
	before := reads.Load()
	start := time.Now()
	for time.Since(start) < flapFor {
		f.publish(t, f.host2)
		time.Sleep(flapEvery)
	}
	elapsed := time.Since(start)
	n := reads.Load() - before
	// One read per interval begun while it flapped, and one already
	// waiting when it began.
	if limit := int32(elapsed/uiMinReread) + 2; n > limit {
		t.Errorf("berth ui read the namespace %d times in %v of changes every %v, want at most %d (one per %v)",
			n, elapsed.Round(time.Millisecond), flapEvery, limit, uiMinReread)
	}
	t.Logf("%d reads of the namespace in %v of %d changes", n, elapsed.Round(time.Millisecond), int(elapsed/flapEvery))
}
