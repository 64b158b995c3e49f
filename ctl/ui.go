package ctl

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"golang.org/x/time/rate"

	"github.com/berthdns/berth/internal/backoff"
)

// uiWait is how long one blocking query on the prefix waits: an idle
// namespace costs Consul one request per uiWait.
const uiWait = 60 * time.Second

// uiMinReread is the least time between two reads of the namespace: a
// host that changes its documents many times a second (hostile, or a
// flapping container) costs the page's server and Consul at most one read
// of every host's documents per interval, its changes coalesced into the
// next read. The page itself asks for changes every two seconds (ui.html).
const uiMinReread = 2 * time.Second

// uiReadShare bounds the share of time spent reading: after a read that
// took d, the next starts no sooner than uiReadShare*d later. A read costs
// two requests per host (ReadBounded), so a large fleet is read less often
// rather than keep Consul busy.
const uiReadShare = 5

// uiBackoff spaces the retries after a Consul error; the page says the
// data is stale meanwhile.
var uiBackoff = backoff.Policy{Min: 250 * time.Millisecond, Max: 8 * time.Second}

//go:embed ui.html
var uiHTML string

var uiTemplate = template.Must(template.New("page").Parse(uiHTML))

// uiCSP is the page's Content-Security-Policy: its one inline script and
// its one inline style are allowed by their SHA-256 hashes (CSP level 2),
// never as 'unsafe-inline', so markup that got into the page some other
// way runs no script; no other origin is reached, and no page may frame
// this one (clickjacking). Both elements are static text in ui.html, so
// their hashes are fixed when the program starts.
var uiCSP = "default-src 'none'; script-src " + inlineHash(uiHTML, "script") +
	"; style-src " + inlineHash(uiHTML, "style") +
	"; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

// inlineHash is the CSP source of the one <tag> element's text in page:
// 'sha256-' and the base64 of its digest. It panics when page has no such
// element, or more than one: the page would not work under uiCSP.
func inlineHash(page, tag string) string {
	open, end := "<"+tag+">", "</"+tag+">"
	_, rest, ok := strings.Cut(page, open)
	text, after, ok2 := strings.Cut(rest, end)
	if !ok || !ok2 || strings.Contains(after, open) {
		panic("ui.html must have exactly one " + open + " element")
	}
	sum := sha256.Sum256([]byte(text))
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}

// UI is the live web page of the namespace (berth ui): Watch keeps its view
// equal to Consul with blocking queries on the prefix, and the page fetches
// the part that changed every few seconds (no external script or style:
// everything is inline). It is read-only.
type UI struct {
	client        *api.Client
	prefix, zone  string
	allowLoopback bool
	log           *slog.Logger

	mu      sync.Mutex
	view    *View
	seen    map[string]seenDoc // key -> when this process saw its current version
	started time.Time
	refused uint64        // requests refused for their Host header
	logs    *rate.Limiter // logging of refused requests
}

// seenDoc is when the UI first saw a document's ModifyIndex. Consul KV
// keeps no timestamps: a version that was there before the UI started has
// a zero time and is shown as "before <start>".
type seenDoc struct {
	index uint64
	at    time.Time
}

// View is what the page shows, also served as JSON at /namespace.json.
type View struct {
	Zone     string        `json:"zone"`
	Prefix   string        `json:"prefix"`
	Index    uint64        `json:"index"` // Consul's index of the data; 0 before the first read
	Updated  time.Time     `json:"updated"`
	Started  time.Time     `json:"started"`
	Error    string        `json:"error,omitempty"` // the last Consul error, while it lasts
	Hosts    []HostView    `json:"hosts"`
	Services []ServiceView `json:"services"`
	Findings []Finding     `json:"findings"`
	Refused  uint64        `json:"refused_requests"`
}

// HostView is a host and when this UI saw its document change.
type HostView struct {
	HostInfo
	Changed string `json:"changed"`
}

// ServiceView is a service with the link that opens it through berth-proxy.
type ServiceView struct {
	Service   string         `json:"service"`
	URL       string         `json:"url"`
	Instances []InstanceView `json:"instances"`
}

// InstanceView is an instance and when this UI saw its document change.
type InstanceView struct {
	Instance
	Changed string `json:"changed"`
}

// NewUI returns the page for the namespace under prefix in zone.
func NewUI(client *api.Client, prefix, zone string, allowLoopback bool, log *slog.Logger) *UI {
	now := time.Now().UTC()
	return &UI{client: client, prefix: prefix, zone: zone, allowLoopback: allowLoopback, log: log,
		seen: map[string]seenDoc{}, started: now, logs: rate.NewLimiter(rate.Every(time.Minute), 1),
		view: &View{Zone: zone, Prefix: prefix, Started: now, Error: "no data from Consul yet",
			Hosts: []HostView{}, Services: []ServiceView{}, Findings: []Finding{}}}
}

// Watch follows the prefix with blocking queries on its keys (without
// values) until ctx ends; on a change it reads the namespace within the
// plugin's per-host bounds (ReadBounded), at most once per uiMinReread
// (or uiReadShare times the last read's duration, if longer).
func (u *UI) Watch(ctx context.Context) {
	var index uint64
	failures := 0
	var nextRead time.Time
	for ctx.Err() == nil {
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: uiWait}).WithContext(ctx)
		_, meta, err := u.client.KV().Keys(u.prefix+"/", "", q)
		var ns *Namespace
		var pairs api.KVPairs
		if err == nil && meta.LastIndex != index && meta.LastIndex >= index {
			sleepCtx(ctx, time.Until(nextRead))
			start := time.Now()
			ns, pairs, err = ReadBounded(ctx, u.client, u.prefix)
			nextRead = start.Add(max(uiMinReread, uiReadShare*time.Since(start)))
			if err == nil {
				err = ns.Sessions(ctx, u.client.Session())
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			u.setError(err)
			if failures == 1 {
				u.log.Warn("consul: serving the last data until it recovers", "err", err)
			}
			index = 0
			sleepCtx(ctx, uiBackoff.Delay(failures))
			continue
		}
		failures = 0
		if meta.LastIndex < index {
			index = 0 // the index went backwards (a restored snapshot): read anew
			continue
		}
		index = meta.LastIndex
		if ns != nil {
			u.update(ns, pairs)
		} else {
			u.setError(nil)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (u *UI) setError(err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	v := *u.view
	v.Error = ""
	if err != nil {
		v.Error = err.Error()
	}
	u.view = &v
}

// update installs a new view from ns, noting which documents changed.
func (u *UI) update(ns *Namespace, pairs api.KVPairs) {
	now := time.Now().UTC()
	u.mu.Lock()
	defer u.mu.Unlock()
	first := u.view.Index == 0
	seen := make(map[string]seenDoc, len(pairs))
	for _, p := range pairs {
		s, ok := u.seen[p.Key]
		if !ok || s.index != p.ModifyIndex {
			s = seenDoc{index: p.ModifyIndex, at: now}
			if first {
				s.at = time.Time{}
			}
		}
		seen[p.Key] = s
	}
	u.seen = seen
	changed := func(key string) string {
		at := seen[key].at
		if at.IsZero() {
			return "before " + u.started.Format("15:04:05")
		}
		return at.Format("15:04:05")
	}
	origin := u.zone + "."
	v := &View{Zone: u.zone, Prefix: u.prefix, Index: ns.Index, Updated: now, Started: u.started,
		Hosts: []HostView{}, Services: []ServiceView{}, Findings: Findings(ns, zoneOptions{origin: origin, allowLoopback: u.allowLoopback})}
	if v.Findings == nil {
		v.Findings = []Finding{}
	}
	keys := map[string]string{} // host name -> key; host+id -> key
	for _, h := range ns.Hosts {
		keys[h.Doc.Name] = h.Key
		for _, c := range h.Containers {
			keys[h.Doc.Name+"/"+c.Doc.ID] = c.Key
		}
	}
	for _, h := range HostInfos(ns) {
		v.Hosts = append(v.Hosts, HostView{HostInfo: h, Changed: changed(keys[h.Name])})
	}
	for _, s := range Services(ns, zoneOptions{origin: origin, allowLoopback: u.allowLoopback}) {
		sv := ServiceView{Service: s.Service, URL: "http://" + s.Service + "." + u.zone + "/"}
		for _, i := range s.Instances {
			sv.Instances = append(sv.Instances, InstanceView{Instance: i, Changed: changed(keys[i.Host+"/"+i.ID])})
		}
		v.Services = append(v.Services, sv)
	}
	u.view = v
}

// current is the view now, with the refused count.
func (u *UI) current() *View {
	u.mu.Lock()
	defer u.mu.Unlock()
	v := *u.view
	v.Refused = u.refused
	return &v
}

// ServeHTTP serves the page (/), the part of it that changes
// (/fragment?index=N: 204 while Consul's index is still N) and the view as
// JSON (/namespace.json).
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "read-only", http.StatusMethodNotAllowed)
		return
	}
	if !u.hostAllowed(r) {
		http.Error(w, "this page answers to its loopback address only", http.StatusMisdirectedRequest)
		return
	}
	h := w.Header()
	// Everything the page needs is inline; it talks to this server only.
	h.Set("Content-Security-Policy", uiCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	v := u.current()
	var buf bytes.Buffer
	switch r.URL.Path {
	case "/":
		if err := uiTemplate.Execute(&buf, v); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		h.Set("Content-Type", "text/html; charset=utf-8")
	case "/fragment":
		if r.URL.Query().Get("index") == strconv.FormatUint(v.Index, 10) && v.Error == "" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if err := uiTemplate.ExecuteTemplate(&buf, "namespace", v); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("X-Berth-Index", strconv.FormatUint(v.Index, 10))
	case "/namespace.json":
		writeJSON(&buf, v)
		h.Set("Content-Type", "application/json")
	default:
		http.NotFound(w, r)
		return
	}
	_, _ = w.Write(buf.Bytes())
}

// hostAllowed refuses, on a loopback listener, a request whose Host header
// names anything but a loopback address or localhost: a web page elsewhere
// could otherwise rebind its own name to 127.0.0.1 and read the namespace
// through the operator's browser. Refusals are counted (the page shows
// the count) and logged at most once a minute.
func (u *UI) hostAllowed(r *http.Request) bool {
	local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return true
	}
	lap, err := netip.ParseAddrPort(local.String())
	if err != nil || !lap.Addr().IsLoopback() {
		return true
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(r.Host); err == nil {
		host = h
	}
	if a, err := netip.ParseAddr(host); (err == nil && a.IsLoopback()) || host == "localhost" {
		return true
	}
	u.mu.Lock()
	u.refused++
	u.mu.Unlock()
	if u.logs.Allow() {
		u.log.Warn("refused a request for another host name (DNS rebinding?); further ones are counted on the page",
			"host", clean(r.Host), "remote", r.RemoteAddr)
	}
	return false
}

// runUI serves the page on o.listen until SIGINT or SIGTERM.
func runUI(ctx context.Context, client *api.Client, o *options, stdout, stderr io.Writer) int {
	if len(o.args) > 0 {
		fmt.Fprintln(stderr, "berth ui: no arguments")
		return 2
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		fmt.Fprintf(stderr, "berth ui: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	u := NewUI(client, o.prefix, o.zone, o.allowLoopback, log)
	go u.Watch(ctx)
	srv := &http.Server{Handler: u, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(stdout, "berth ui: http://%s/ (Consul %s, prefix %s, zone %s)\n", ln.Addr(), clientAddr(), o.prefix, o.zone)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		fmt.Fprintf(stderr, "berth ui: %v\n", err)
		return 2
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintf(stderr, "berth ui: %v\n", err)
	}
	return 0
}

// clientAddr is the Consul address api.DefaultConfig uses.
func clientAddr() string { return api.DefaultConfig().Address }
