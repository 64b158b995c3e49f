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

// watcher keeps the zones equal to Consul KV: one blocking query on the
// small host list, and for every host whose document changed one fetch of
// that host's container documents (namespace v1, section 3). It alone
// updates the zones.
type watcher struct {
	kv      *api.KV
	prefix  string
	zones   []*Zone
	resync  time.Duration // safety-net full reload
	limit   *rate.Limiter // re-fetch rate
	loaded  func()        // called once after the first full load
	changed func()        // called after a round that changed a zone's serial

	hosts     map[string]*hostState
	reports   *reporter
	lastIndex uint64 // the host list's last Consul index, to notice one going backwards

	policy   policyUpdate       // the ownership policy the zones have
	policyCh chan *policyUpdate // from watchPolicy: a newer policy to apply

	wakeMu     sync.Mutex
	cancelRead context.CancelFunc // ends the blocking read of the host list in flight
}

// hostState is what the watcher last applied for one host.
type hostState struct {
	doc        *record.Host
	docIndex   uint64                       // ModifyIndex of the host document
	containers string                       // signature of the container keys and their ModifyIndex
	docs       map[string]*record.Container // by key: the last valid version of each
}

func newWatcher(kv *api.KV, prefix string, zones []*Zone, resync time.Duration, loaded, changed func()) *watcher {
	return &watcher{
		kv: kv, prefix: prefix, zones: zones, resync: resync, loaded: loaded, changed: changed,
		limit:    rate.NewLimiter(rate.Every(50*time.Millisecond), 10),
		hosts:    map[string]*hostState{},
		reports:  newReporter(),
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
			stale.Set(1)
			if failures == 1 {
				log.Warningf("consul: %v; serving the last good data until it recovers", err)
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
		stale.Set(0)
		lastSync.SetToCurrentTime()
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
	q := (&api.QueryOptions{WaitIndex: index, WaitTime: watchWait, AllowStale: true}).WithContext(readCtx)
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
	for name, h := range hosts {
		if st := w.hosts[name]; reset || st == nil || st.docIndex != h.index {
			changed = append(changed, name)
		}
	}
	sort.Strings(changed)
	fetched, err := w.fetchHosts(ctx, changed)
	if err != nil {
		return 0, err
	}
	b := batch{}
	for _, name := range changed {
		w.add(b, name, hosts[name], fetched[name], reset)
	}
	w.addGone(b, hosts)
	w.apply(b, meta.LastIndex)
	return max(next, 1), nil
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
	all, _, err := w.kv.List(record.AllContainersPrefix(w.prefix), (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return 0, 0, err
	}
	byHost := map[string]api.KVPairs{}
	for _, p := range all {
		if host, _, ok := record.HostFromContainerKey(w.prefix, p.Key); ok {
			byHost[host] = append(byHost[host], p)
		}
	}
	hosts := w.decodeHosts(pairs)
	reset := meta.LastIndex < w.lastIndex
	w.lastIndex = meta.LastIndex
	b := batch{}
	for name, h := range hosts {
		w.add(b, name, h, byHost[name], reset || u != nil)
	}
	w.addGone(b, hosts)
	w.apply(b, meta.LastIndex)
	return max(meta.LastIndex, 1), policyIndex, nil
}

type hostDoc struct {
	doc   *record.Host
	index uint64
}

// decodeHosts validates the host documents; an invalid one is skipped.
func (w *watcher) decodeHosts(pairs api.KVPairs) map[string]hostDoc {
	hosts := make(map[string]hostDoc, len(pairs))
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
				hosts[name] = hostDoc{doc: st.doc, index: st.docIndex}
			}
			continue
		}
		hosts[name] = hostDoc{doc: h, index: p.ModifyIndex}
	}
	w.reports.keep(hostDocsReports, bad)
	return hosts
}

// fetchHosts reads the container documents of each host, a few at a time.
// These reads are consistent (not stale), so they are never older than the
// host document that announced them.
func (w *watcher) fetchHosts(ctx context.Context, hosts []string) (map[string]api.KVPairs, error) {
	out := make(map[string]api.KVPairs, len(hosts))
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		firstErr error
		sem      = make(chan struct{}, fetchParallel)
	)
	for _, h := range hosts {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			pairs, _, err := w.kv.List(record.ContainersPrefix(w.prefix, h), (&api.QueryOptions{}).WithContext(ctx))
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			out[h] = pairs
		}()
	}
	wg.Wait()
	return out, firstErr
}

// batch collects the hosts that one round of the watcher changes, so that
// the zones merge each shared name once and install the round whole.
type batch map[string]*hostData

// add decodes one host's documents into the batch (doc nil: the host is
// gone) unless, short of force, nothing changed since the last time.
func (w *watcher) add(b batch, name string, h hostDoc, pairs api.KVPairs, force bool) {
	if h.doc == nil {
		if _, ok := w.hosts[name]; ok {
			delete(w.hosts, name)
			b[name] = nil
		}
		w.reports.keep(name, nil)
		return
	}
	sig := signature(pairs)
	prev := w.hosts[name]
	if !force && prev != nil && prev.docIndex == h.index && prev.containers == sig {
		return
	}
	st := &hostState{doc: h.doc, docIndex: h.index, containers: sig, docs: map[string]*record.Container{}}
	w.hosts[name] = st
	data := &hostData{Host: h.doc}
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
func (w *watcher) addGone(b batch, listed map[string]hostDoc) {
	for name := range w.hosts {
		if _, ok := listed[name]; !ok {
			w.add(b, name, hostDoc{}, nil, false)
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

func (st *hostState) lastValid(key string) *record.Container {
	if st == nil {
		return nil
	}
	return st.docs[key]
}

// data is the host's documents as last applied, to compile them again
// (under a new ownership policy) without reading Consul.
func (st *hostState) data() *hostData {
	d := &hostData{Host: st.doc, Containers: make([]*record.Container, 0, len(st.docs))}
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
