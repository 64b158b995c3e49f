package berth

import (
	"context"
	"errors"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/berthdns/berth/internal/backoff"
	"github.com/berthdns/berth/record"
	"github.com/hashicorp/consul/api"
	"golang.org/x/time/rate"
)

// watchWait is how long one blocking query on the host list may wait; the
// HTTP client's timeout sits just above it, so a Consul that hangs (an agent
// whose servers vanished without closing their connections, say) is noticed
// and reported stale within about this long. One idle query per 15 s is
// cheap.
const watchWait = 15 * time.Second

// fetchParallel bounds the per-host fetches in flight after one change of
// the host list.
const fetchParallel = 8

// maxHostBytes bounds one host's container documents as read from Consul
// (some 15,000 containers): a host whose subtree is larger is hostile or
// broken; its read is cut off there, and the host keeps what was served
// for it.
const maxHostBytes = 16 << 20

// hostByteRate is what a host's documents may cost in reads from Consul, on
// average, with a burst of two full-size reads: far above what a host of
// hundreds of containers changing many times a second costs, so that only
// a hostile or broken one (a large subtree and a flapping rev) is held to
// it. Its changes are then coalesced into the latest, fetched when its
// allowance is back, so it costs bounded work and cannot slow other hosts'
// answers.
const hostByteRate = 2 << 20

// watcher keeps the zones equal to Consul KV: one blocking query on the
// small host list, and for every host whose document changed one fetch of
// that host's container documents (README.md#consul-kv). It alone
// updates the zones.
type watcher struct {
	kv      *api.KV
	prefix  string
	zones   []*Zone
	resync  time.Duration // safety-net full reload
	limit   *rate.Limiter // re-fetch rate
	loaded  func()        // called once after the first full load
	changed func()        // called after a round that changed a zone's serial

	hosts    map[string]*appliedHost
	reports  *reporter
	fetches  map[string]*rate.Limiter // per host, bytes: see hostByteRate
	deferred map[string]bool          // hosts changed but not fetched yet: over their rate
	oversize map[string]uint64        // host -> the document index at which its subtree was over maxHostBytes

	// maxHostBytes and hostByteRate, which tests lower.
	hostBytes, hostRate int64
	lastIndex           uint64 // the host list's last Consul index, to notice one going backwards

	policy   policyUpdate       // the ownership policy the zones have
	policyCh chan *policyUpdate // from watchPolicy: a newer policy to apply

	wakeMu     sync.Mutex
	cancelRead context.CancelFunc // ends the blocking read of the host list in flight
}

// appliedHost is what the watcher last applied for one host.
type appliedHost struct {
	doc        *record.Host
	docIndex   uint64                       // ModifyIndex of the host document
	containers string                       // signature of the container keys and their ModifyIndex
	docs       map[string]*record.Container // by key: the last valid version of each
}

func newWatcher(kv *api.KV, prefix string, zones []*Zone, resync time.Duration, loaded, changed func()) *watcher {
	return &watcher{
		kv: kv, prefix: prefix, zones: zones, resync: resync, loaded: loaded, changed: changed,
		limit:     rate.NewLimiter(rate.Every(50*time.Millisecond), 10),
		hosts:     map[string]*appliedHost{},
		reports:   newReporter(),
		fetches:   map[string]*rate.Limiter{},
		oversize:  map[string]uint64{},
		hostBytes: maxHostBytes, hostRate: hostByteRate,
		policy:   policyUpdate{policy: record.OpenPolicy},
		policyCh: make(chan *policyUpdate, 1),
	}
}

// Buckets of the reporter for documents that belong to no one host.
const (
	hostDocsReports = "/hosts"
	policyReports   = "/policy"
)

// run watches until ctx ends. Errors back off with jitter and restart the
// watch; the zones keep answering from the last good data meanwhile.
func (w *watcher) run(ctx context.Context) {
	var (
		index    uint64
		lastFull time.Time
		failures int
		loaded   bool
	)
	for ctx.Err() == nil {
		select {
		case u := <-w.policyCh:
			w.applyPolicy(u)
		default:
		}
		var err error
		if time.Since(lastFull) >= w.resync {
			var policyIndex uint64
			index, policyIndex, err = w.fullLoad(ctx)
			if err == nil {
				lastFull = time.Now()
				if !loaded {
					loaded = true
					for _, z := range w.zones {
						z.MarkLoaded()
					}
					w.loaded()
					if w.policy.policy == record.OpenPolicy {
						log.Warningf("no ownership policy at %s: any host may publish any service name (README: Security)", record.PolicyKey(w.prefix))
					}
					last := w.policy
					go w.watchPolicy(ctx, policyIndex, &last)
				}
			}
		} else {
			index, err = w.watchOnce(ctx, index)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			consulErrors.Inc()
			setStale(w.zones, true)
			switch {
			case failures == 1 && loaded:
				log.Warningf("consul: %v; serving the last good data until it recovers", err)
			case failures == 1:
				log.Warningf("consul: %v; no data yet: answering SERVFAIL until the first load", err)
			}
			index = 0
			watchRestarts.Inc()
			sleep(ctx, watchBackoff.Delay(failures))
			continue
		}
		if failures > 0 {
			log.Infof("consul: recovered after %d failed attempts", failures)
			failures = 0
		}
		setStale(w.zones, false)
		if err := w.limit.Wait(ctx); err != nil {
			return
		}
	}
}

// watchOnce holds one blocking query on the host list and applies what
// changed; it returns the index for the next query. A newer ownership
// policy (wake) ends the query early, without an error.
func (w *watcher) watchOnce(ctx context.Context, index uint64) (uint64, error) {
	readCtx, cancel := context.WithCancel(ctx)
	w.wakeMu.Lock()
	w.cancelRead = cancel
	w.wakeMu.Unlock()
	defer func() {
		w.wakeMu.Lock()
		w.cancelRead = nil
		w.wakeMu.Unlock()
		cancel()
	}()
	q := (&api.QueryOptions{WaitIndex: index, WaitTime: w.waitTime(), AllowStale: true}).WithContext(readCtx)
	pairs, meta, err := w.kv.List(record.HostsPrefix(w.prefix), q)
	if woken(ctx, readCtx, err) {
		return index, nil
	}
	if err != nil {
		return 0, err
	}
	next := meta.LastIndex
	reset := next < w.lastIndex
	if reset {
		// Consul's index went backwards (a restored snapshot, a rebuilt
		// cluster): start the watch over rather than wait on a future
		// index, and since ModifyIndex values of two histories cannot be
		// compared, fetch every host again.
		log.Warningf("consul: index went backwards from %d to %d; reloading every host", w.lastIndex, next)
		watchRestarts.Inc()
		next = 0
	}
	w.lastIndex = meta.LastIndex
	hosts := w.decodeHosts(pairs)
	var changed []string
	deferred := map[string]bool{}
	for name, h := range hosts {
		st := w.hosts[name]
		if !reset && st != nil && st.docIndex == h.index || w.oversize[name] == h.index && !reset {
			continue
		}
		if !reset && !w.fetchAllowed(name) {
			// Held to its allowance: this round's serial stands for data
			// that lacks the host's latest change, which a later round
			// brings (with the serial one up, if Consul's index did not
			// move meanwhile). Only a host far over its allowance, hostile
			// or broken, ever gets here (see hostByteRate).
			deferred[name] = true
			continue
		}
		changed = append(changed, name)
	}
	for name := range deferred {
		if !w.deferred[name] {
			hostFetchesDeferred.Inc()
			dataLog.warningf("host %s changes faster than its documents may be read (%d KiB/s): fetching its latest state at that rate", name, w.hostRate>>10)
		}
	}
	w.deferred = deferred
	sort.Strings(changed)
	b, err := w.fetchInto(ctx, hosts, changed, reset)
	if err != nil {
		return 0, err
	}
	w.addGone(b, hosts)
	w.apply(b, meta.LastIndex)
	return max(next, 1), nil
}

// fetchAllowed reports whether host's documents may be fetched now: its
// byte allowance (see hostByteRate) is not spent.
func (w *watcher) fetchAllowed(host string) bool {
	l := w.fetches[host]
	return l == nil || l.TokensAt(time.Now()) > 0
}

// fetched charges a read of n bytes to host's allowance.
func (w *watcher) fetched(host string, n int64) {
	l := w.fetches[host]
	if l == nil {
		l = rate.NewLimiter(rate.Limit(w.hostRate), int(2*w.hostBytes))
		w.fetches[host] = l
	}
	l.ReserveN(time.Now(), int(min(n, 2*w.hostBytes)))
}

// waitTime is how long the next blocking read of the host list may wait:
// watchWait, or less when a deferred host may be fetched sooner.
func (w *watcher) waitTime() time.Duration {
	wait := watchWait
	now := time.Now()
	for host := range w.deferred {
		if l := w.fetches[host]; l != nil {
			d := time.Duration(-l.TokensAt(now) / float64(w.hostRate) * float64(time.Second))
			wait = min(wait, max(d, 10*time.Millisecond))
		}
	}
	return wait
}

// fetchInto fetches the container documents of hosts and adds them to a new
// batch. A host whose subtree is over maxHostBytes keeps what it has (it is
// reported once, and fetched again when its document changes).
func (w *watcher) fetchInto(ctx context.Context, listed map[string]listedHost, hosts []string, force bool) (batch, error) {
	fetched, oversize, err := w.fetchHosts(ctx, hosts)
	if err != nil {
		return nil, err
	}
	b := batch{}
	for _, name := range hosts {
		h := listed[name]
		if oversize[name] {
			if _, seen := w.oversize[name]; !seen {
				invalidRecords.WithLabelValues("oversize").Inc()
				dataLog.warningf("host %s: its container documents are over %d KiB; keeping what was served for it", name, w.hostBytes>>10)
			}
			w.oversize[name] = h.index
			continue
		}
		delete(w.oversize, name)
		w.add(b, name, h, fetched[name], force)
	}
	return b, nil
}

// fullLoad reads the ownership policy, the host list and every container
// document at once, and applies every host whose data differ from what was
// applied. It is the first load and the safety net for producers that
// forget to bump rev. It returns the host list's index and the policy
// read's, for the blocking queries that follow.
func (w *watcher) fullLoad(ctx context.Context) (index, policyIndex uint64, err error) {
	policyIndex, u, err := w.readPolicy(ctx, 0, &w.policy, w.reports)
	if err != nil {
		return 0, 0, err
	}
	if u != nil {
		w.setPolicy(u)
	}
	pairs, meta, err := w.kv.List(record.HostsPrefix(w.prefix), (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return 0, 0, err
	}
	hosts := w.decodeHosts(pairs)
	reset := meta.LastIndex < w.lastIndex
	w.lastIndex = meta.LastIndex
	names := make([]string, 0, len(hosts))
	for name := range hosts {
		names = append(names, name)
	}
	sort.Strings(names)
	// One bounded read per host rather than one of the whole prefix: a
	// hostile host's subtree is cut off at maxHostBytes instead of passing
	// through memory whole.
	b, err := w.fetchInto(ctx, hosts, names, reset || u != nil)
	if err != nil {
		return 0, 0, err
	}
	w.addGone(b, hosts)
	w.apply(b, meta.LastIndex)
	return max(meta.LastIndex, 1), policyIndex, nil
}

// listedHost is a host document as the host list gave it: the first stage
// of a host in the watcher (then hostDocs, decoded with its containers, to
// compile; then appliedHost, what the zones have).
type listedHost struct {
	doc   *record.Host
	index uint64 // its ModifyIndex
}

// decodeHosts validates the host documents; an invalid one is skipped.
func (w *watcher) decodeHosts(pairs api.KVPairs) map[string]listedHost {
	hosts := make(map[string]listedHost, len(pairs))
	bad := map[string]bool{}
	for _, p := range pairs {
		name := strings.TrimPrefix(p.Key, record.HostsPrefix(w.prefix))
		h, err := record.DecodeHost(p.Key, p.Value)
		if err == nil && h.Name != name {
			err = errors.New("host document " + p.Key + ": name " + h.Name + " does not match its key")
		}
		if err != nil {
			w.reports.invalid(hostDocsReports, p, err)
			bad[p.Key] = true
			if st := w.hosts[name]; st != nil {
				// Garbage over a good document loses nothing: keep serving
				// the last valid version until a valid one replaces it.
				hosts[name] = listedHost{doc: st.doc, index: st.docIndex}
			}
			continue
		}
		hosts[name] = listedHost{doc: h, index: p.ModifyIndex}
	}
	w.reports.keep(hostDocsReports, bad)
	return hosts
}

// fetchHosts reads the container documents of each host, a few at a time,
// each read cut off at w.hostBytes (oversize). These reads are consistent
// (not stale), so they are never older than the host document that
// announced them.
func (w *watcher) fetchHosts(ctx context.Context, hosts []string) (out map[string]api.KVPairs, oversize map[string]bool, err error) {
	out = make(map[string]api.KVPairs, len(hosts))
	oversize = map[string]bool{}
	var (
		mu  sync.Mutex
		wg  sync.WaitGroup
		sem = make(chan struct{}, fetchParallel)
	)
	for _, h := range hosts {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			req := &consulRequest{kind: requestHost, maxBytes: w.hostBytes}
			pairs, _, ferr := w.kv.List(record.ContainersPrefix(w.prefix, h), (&api.QueryOptions{}).WithContext(withRequest(ctx, req)))
			mu.Lock()
			defer mu.Unlock()
			w.fetched(h, req.read)
			switch {
			case ferr != nil && req.exceeded:
				oversize[h] = true
			case ferr != nil:
				if err == nil {
					err = ferr
				}
			default:
				out[h] = pairs
			}
		}()
	}
	wg.Wait()
	return out, oversize, err
}

// batch collects the hosts that one round of the watcher changes, so that
// the zones merge each shared name once and install the round whole.
type batch map[string]*hostDocs

// add decodes one host's documents into the batch (doc nil: the host is
// gone) unless, short of force, nothing changed since the last time.
func (w *watcher) add(b batch, name string, h listedHost, pairs api.KVPairs, force bool) {
	if h.doc == nil {
		if _, ok := w.hosts[name]; ok {
			delete(w.hosts, name)
			b[name] = nil
		}
		w.reports.keep(name, nil)
		delete(w.fetches, name)
		delete(w.oversize, name)
		return
	}
	sig := signature(pairs)
	prev := w.hosts[name]
	if !force && prev != nil && prev.docIndex == h.index && prev.containers == sig {
		return
	}
	st := &appliedHost{doc: h.doc, docIndex: h.index, containers: sig, docs: map[string]*record.Container{}}
	w.hosts[name] = st
	data := &hostDocs{Host: h.doc}
	bad := map[string]bool{}
	for _, p := range pairs {
		_, id, ok := record.HostFromContainerKey(w.prefix, p.Key)
		if !ok {
			continue // a deeper key is no document of ours
		}
		c, err := record.DecodeContainer(p.Key, p.Value)
		if err == nil && c.ID != id {
			err = errors.New("container document " + p.Key + ": id " + c.ID + " does not match its key")
		}
		if err != nil {
			w.reports.invalid(name, p, err)
			bad[p.Key] = true
			if c = prev.lastValid(p.Key); c == nil {
				continue
			}
		}
		st.docs[p.Key] = c
		data.Containers = append(data.Containers, c)
	}
	sort.Slice(data.Containers, func(i, j int) bool { return data.Containers[i].ID < data.Containers[j].ID })
	w.reports.keep(name, bad)
	b[name] = data
}

// addGone adds to the batch the removal of every host no longer listed.
func (w *watcher) addGone(b batch, listed map[string]listedHost) {
	for name := range w.hosts {
		if _, ok := listed[name]; !ok {
			w.add(b, name, listedHost{}, nil, false)
		}
	}
}

// apply installs a batch, read from Consul's state at index (the host
// list's), in every zone. The batch may be empty: the serial follows the
// index all the same (see Zone.nextSerial). The ownership policy is part of
// the data: its document's index counts too.
func (w *watcher) apply(b batch, index uint64) {
	index = max(index, w.policy.index)
	changed := false
	for _, z := range w.zones {
		if z.update(b, index) {
			changed = true
		}
	}
	if !changed {
		return
	}
	updateGauges(w.zones, len(w.hosts))
	if w.changed != nil {
		w.changed()
	}
}

func (st *appliedHost) lastValid(key string) *record.Container {
	if st == nil {
		return nil
	}
	return st.docs[key]
}

// data is the host's documents as last applied, to compile them again
// (under a new ownership policy) without reading Consul.
func (st *appliedHost) data() *hostDocs {
	d := &hostDocs{Host: st.doc, Containers: make([]*record.Container, 0, len(st.docs))}
	for _, c := range st.docs {
		d.Containers = append(d.Containers, c)
	}
	sort.Slice(d.Containers, func(i, j int) bool { return d.Containers[i].ID < d.Containers[j].ID })
	return d
}

func signature(pairs api.KVPairs) string {
	var b strings.Builder
	for _, p := range pairs {
		b.WriteString(p.Key)
		b.WriteByte('@')
		b.WriteString(strconv.FormatUint(p.ModifyIndex, 10))
		b.WriteByte(' ')
	}
	return b.String()
}

// watchBackoff spaces the watcher's retries: from 250ms to 8s, a random half
// of each wait jitter, so that many CoreDNS servers do not return to a
// recovering Consul in step. The cap bounds how long answers stay stale
// once Consul is back; a query to a Consul that is down costs it nothing.
var watchBackoff = backoff.Policy{Min: 250 * time.Millisecond, Max: 8 * time.Second}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
