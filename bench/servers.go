package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/berthdns/berth/internal/testenv"
)

// CoreDNSEnv is added to the environment of every bin/coredns the suite
// starts (berthbench -coredns-env), for trying runtime settings such as
// GODEBUG or GOGC; empty in a normal run.
var CoreDNSEnv []string

// Server is one bin/coredns the suite started, with its side listeners.
type Server struct {
	Name    string
	Addr    string    // DNS, UDP and TCP
	Pprof   string    // host:port of the pprof plugin
	Metrics string    // host:port of the prometheus plugin, "" without
	Ready   string    // host:port of the ready plugin
	Started time.Time // just before the process was started
	Serving time.Time // when it first answered a query (berth: SERVFAIL until loaded)
	core    *testenv.CoreDNS
	// A server the suite runs itself (startBigFile): its output, and how to
	// stop it.
	out  *testenv.LockedBuffer
	stop func()
}

// ServerOptions choose the side plugins of a CoreDNS server block. The
// query path holds only the data plugin and transfer (which passes
// everything but AXFR/IXFR on): no cache, no log, and prometheus only where
// the berth metrics are needed, so that berth and file are compared alone.
type ServerOptions struct {
	Metrics bool
	// TransferTo are the transfer plugin's `to` hosts, which berth sends
	// NOTIFY to and which alone may transfer the zone; empty is `to *`
	// (transfers to anyone, no NOTIFY), what part 1 uses for its zone file.
	TransferTo []string
}

// StartBerth runs bin/coredns serving Zone with the berth plugin from the
// Consul agent at consulHTTP under prefix.
func StartBerth(t *TB, consulHTTP, prefix string, opts ServerOptions) *Server {
	stanza := fmt.Sprintf("berth {\n        consul %s\n        prefix %s\n        ttl 5\n        resync 1h\n    }", consulHTTP, prefix)
	return startCoreDNS(t, "berth", stanza, opts)
}

// StartFile runs bin/coredns serving Zone from zonefile with the file
// plugin (no reload).
func StartFile(t *TB, zonefile string, opts ServerOptions) *Server {
	stanza := fmt.Sprintf("file %s {\n        reload 0\n    }", zonefile)
	return startCoreDNS(t, "file", stanza, opts)
}

func startCoreDNS(t *TB, name, stanza string, opts ServerOptions) *Server {
	ports := testenv.FreePorts(t, 3)
	s := &Server{Name: name,
		Pprof: "127.0.0.1:" + strconv.Itoa(ports[0]),
		Ready: "127.0.0.1:" + strconv.Itoa(ports[1])}
	if opts.Metrics {
		s.Metrics = "127.0.0.1:" + strconv.Itoa(ports[2])
	}
	s.Started = time.Now()
	s.core = testenv.StartCoreDNS(t, corefile(s, stanza, opts), CoreDNSEnv...)
	s.Serving = time.Now()
	s.Addr = s.core.Addr
	return s
}

// corefile is the Corefile of server s: Zone with the data plugin's
// stanza, transfer, and the side plugins on s's ports.
func corefile(s *Server, stanza string, opts ServerOptions) string {
	var side string
	if opts.Metrics {
		side = "\n    prometheus " + s.Metrics
	}
	to := "*"
	if len(opts.TransferTo) > 0 {
		to = strings.Join(opts.TransferTo, " ")
	}
	return fmt.Sprintf(`%s {
    %s
    transfer {
        to %s
    }
    pprof %s
    ready %s%s
}
`, strings.TrimSuffix(Zone, "."), stanza, to, s.Pprof, s.Ready, side)
}

// WaitReady polls the ready plugin until the server is ready (berth: its
// first full load from Consul is done) and returns when that was.
func (s *Server) WaitReady(timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get("http://" + s.Ready + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Now(), nil
			}
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("%s not ready after %s: %v\n%s", s.Name, timeout, err, s.Output())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Stop kills the server.
func (s *Server) Stop() { s.core.Stop() }

// Output is what the server printed so far.
func (s *Server) Output() string {
	if s.core == nil {
		return s.out.String()
	}
	return s.core.Output()
}

// PID finds the server's process by its -dns.port argument.
func (s *Server) PID() (int, error) {
	_, port, _ := strings.Cut(s.Addr, ":")
	want := []byte("\x00-dns.port\x00" + port + "\x00")
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err == nil && bytes.Contains(b, want) && bytes.Contains(b, []byte("coredns")) {
			return strconv.Atoi(filepath.Base(d))
		}
	}
	return 0, fmt.Errorf("no process with -dns.port %s", port)
}

// Memory is a server's memory after a forced garbage collection.
type Memory struct {
	RSS       int64 // resident set, from /proc
	HeapInuse int64 // Go heap spans in use
	HeapAlloc int64 // live Go heap objects
}

// Memory forces a GC through pprof, waits a moment, and reads the
// process's RSS and the Go heap figures.
func (s *Server) Memory() (Memory, error) {
	var m Memory
	// A forced GC of a million instances' heap takes longer than the pprof
	// plugin's 5 s write timeout, which then drops the connection: the
	// live heap is then the Go runtime's own figure after the next
	// collection, which the prometheus plugin exports.
	body, err := httpGetTimeout("http://"+s.Pprof+"/debug/pprof/heap?gc=1&debug=1", 5*time.Minute)
	if err != nil {
		if m.HeapAlloc, err = s.heapAfterGC(); err != nil {
			return m, err
		}
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "# HeapInuse = "); ok {
			m.HeapInuse, _ = strconv.ParseInt(v, 10, 64)
		}
		if v, ok := strings.CutPrefix(line, "# HeapAlloc = "); ok {
			m.HeapAlloc, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	time.Sleep(200 * time.Millisecond)
	pid, err := s.PID()
	if err != nil {
		return m, err
	}
	if m.RSS = processRSS(pid); m.RSS == 0 {
		return m, fmt.Errorf("no resident set size for process %d", pid)
	}
	return m, nil
}

// heapAfterGC waits for the Go runtime's next collection (it forces one
// every two minutes at the latest) and reads the live heap after it from
// the prometheus plugin. A server busy collecting a heap of gigabytes on a
// loaded machine may take long to answer: each read may take minutes.
func (s *Server) heapAfterGC() (int64, error) {
	if s.Metrics == "" {
		return 0, fmt.Errorf("%s: no forced GC through pprof and no metrics to read the heap from", s.Name)
	}
	scrape := func(name string) (float64, error) {
		m, err := s.scrapeWithin(name, 5*time.Minute)
		return m[""], err
	}
	before, err := scrape("go_gc_duration_seconds_count")
	if err != nil {
		return 0, err
	}
	for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
		if n, err := scrape("go_gc_duration_seconds_count"); err != nil || n > before {
			break
		}
	}
	live, err := scrape("go_memstats_alloc_bytes")
	return int64(live), err
}

// processRSS is a process's resident set from /proc, 0 if unknown.
func processRSS(pid int) int64 {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// Scrape reads the value of every sample of the metric named name, keyed
// by its label string ("" without labels).
func (s *Server) Scrape(name string) (map[string]float64, error) {
	return s.scrapeWithin(name, 30*time.Second)
}

func (s *Server) scrapeWithin(name string, timeout time.Duration) (map[string]float64, error) {
	body, err := httpGetTimeout("http://"+s.Metrics+"/metrics", timeout)
	if err != nil {
		return nil, err
	}
	return ParseMetric(body, name), nil
}

// ParseMetric picks name's samples out of Prometheus text exposition.
func ParseMetric(body []byte, name string) map[string]float64 {
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		labels := ""
		if strings.HasPrefix(rest, "{") {
			end := strings.IndexByte(rest, '}')
			labels, rest = rest[1:end], rest[end+1:]
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		if err == nil {
			out[labels] = v
		}
	}
	return out
}

// Profile fetches a CPU profile of d and the allocations made during the
// same d, into dir, and returns their paths.
func (s *Server) Profile(ctx context.Context, dir, tag string, d time.Duration) (cpu, allocs string, err error) {
	cpu = filepath.Join(dir, tag+".cpu.pb.gz")
	allocs = filepath.Join(dir, tag+".allocs.pb.gz")
	secs := strconv.Itoa(int(d.Seconds()))
	errs := make(chan error, 2)
	get := func(url, path string) {
		b, err := httpGetTimeout(url, d+30*time.Second)
		if err == nil {
			err = os.WriteFile(path, b, 0o644)
		}
		errs <- err
	}
	go get("http://"+s.Pprof+"/debug/pprof/profile?seconds="+secs, cpu)
	go get("http://"+s.Pprof+"/debug/pprof/allocs?seconds="+secs, allocs)
	for range 2 {
		if e := <-errs; e != nil && err == nil {
			err = e
		}
	}
	return cpu, allocs, err
}

// PprofTop is `go tool pprof -top` of a profile, its first n entries.
func PprofTop(path string, n int, extra ...string) string {
	return Pprof(path, append([]string{"-top", "-nodecount=" + strconv.Itoa(n)}, extra...)...)
}

// Pprof is the output of `go tool pprof args... path`, without the header
// lines that name the binary and the time.
func Pprof(path string, args ...string) string {
	args = append(append([]string{"tool", "pprof"}, args...), path)
	out, err := exec.Command("go", args...).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("go tool pprof: %v\n%s", err, out)
	}
	var keep []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "File: ") || strings.HasPrefix(line, "Build ID: ") || strings.HasPrefix(line, "Time: ") {
			continue
		}
		keep = append(keep, line)
	}
	return strings.Join(keep, "\n")
}

// AXFR transfers zone from addr.
func AXFR(addr, zone string) ([]dns.RR, error) {
	m := new(dns.Msg)
	m.SetAxfr(zone)
	tr := &dns.Transfer{ReadTimeout: 60 * time.Second}
	ch, err := tr.In(m, addr)
	if err != nil {
		return nil, err
	}
	var rrs []dns.RR
	for env := range ch {
		if env.Error != nil {
			return nil, env.Error
		}
		rrs = append(rrs, env.RR...)
	}
	// The transfer ends with the SOA again.
	if len(rrs) > 1 && rrs[len(rrs)-1].Header().Rrtype == dns.TypeSOA {
		rrs = rrs[:len(rrs)-1]
	}
	return rrs, nil
}

// WriteZoneFile writes rrs in presentation format.
func WriteZoneFile(path string, rrs []dns.RR) error {
	var b bytes.Buffer
	for _, rr := range rrs {
		b.WriteString(rr.String())
		b.WriteByte('\n')
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// Exchange asks addr one question over UDP (TCP when truncated).
func Exchange(addr string, q Query) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(q.Name, q.Type)
	m.SetEdns0(4096, false)
	c := &dns.Client{Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err == nil && r.Truncated {
		c.Net = "tcp"
		r, _, err = c.Exchange(m, addr)
	}
	return r, err
}

// SameAnswers asks both servers every n-th query and counts the replies
// that differ in rcode, answer or additional section (order ignored: berth
// shuffles).
func SameAnswers(a, b string, qs []Query, n int) (checked, differ int, example string, err error) {
	canon := func(rrs []dns.RR) string {
		s := make([]string, 0, len(rrs))
		for _, rr := range rrs {
			if rr.Header().Rrtype == dns.TypeOPT {
				continue
			}
			s = append(s, rr.String())
		}
		slices.Sort(s)
		return strings.Join(s, "\n")
	}
	for i := 0; i < len(qs); i += max(1, len(qs)/n) {
		ra, err := Exchange(a, qs[i])
		if err != nil {
			return checked, differ, example, err
		}
		rb, err := Exchange(b, qs[i])
		if err != nil {
			return checked, differ, example, err
		}
		checked++
		if ra.Rcode != rb.Rcode || canon(ra.Answer) != canon(rb.Answer) || canon(ra.Extra) != canon(rb.Extra) {
			differ++
			if example == "" {
				example = fmt.Sprintf("%s %s:\n%s\n--- vs ---\n%s", qs[i].Name, dns.TypeToString[qs[i].Type], ra, rb)
			}
		}
	}
	return checked, differ, example, nil
}

func httpGet(url string) ([]byte, error) { return httpGetTimeout(url, 30*time.Second) }

func httpGetTimeout(url string, timeout time.Duration) ([]byte, error) {
	c := &http.Client{Timeout: timeout}
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return b, err
}
