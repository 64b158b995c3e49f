package berth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"maps"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/berthdns/berth/internal/backoff"
	"github.com/berthdns/berth/record"
	"github.com/hashicorp/consul/api"
	"golang.org/x/time/rate"
)

// watchWait is how long one blocking query of the host index may wait; the
// HTTP client's timeout sits just above it, so a Consul that hangs (an agent
// whose servers vanished without closing their connections, say) is noticed
// and reported stale within about this long. One idle query per source per
// 15 s is cheap.
const watchWait = 15 * time.Second

// fetchParallel bounds the per-host fetches in flight in one round.
const fetchParallel = 16

// maxHostBytes bounds one host's container documents as read from Consul
// (record.MaxHostBytes): over it, the host keeps what was served for it.
const maxHostBytes = record.MaxHostBytes

// maxHostDocBytes bounds the read of a host's layout 2 entry
// (record.MaxHostEntryBytes).
const maxHostDocBytes = record.MaxHostEntryBytes

// maxShardBytes bounds the key list of one shard of layout 2: some 100,000
// hosts' entries. A shard over it holds a host that writes far more than
// its one entry (see readShardByHost).
const maxShardBytes = 4 << 20

// hostByteRate is what a host's documents may cost in reads from Consul, on
// average, with a burst of two full-size reads: far above what a host of
// hundreds of containers changing many times a second costs, so that only
// a hostile or broken one (a large subtree and a flapping rev) is held to
// it. Its changes are then coalesced into the latest, fetched when its
// allowance is back, so it costs bounded work and cannot slow other hosts'
// answers.
const hostByteRate = 2 << 20

// watcher keeps the zones equal to Consul KV: it follows the host index in
// both layouts (index.go), and for every host whose entry changed fetches
// that host's documents (README.md#consul-kv). It alone updates the zones;
// its main loop (run) owns every field below but the followers' channel.
type watcher struct {
	kv      *api.KV
	prefix  string
	zones   []*Zone
	resync  time.Duration // every host is read again within this long (the safety net)
	loaded  func()        // called once after the first full load
	changed func()        // called after a round that changed a zone's serial

	index    *hostIndex
	hosts    map[string]*appliedHost
	reports  *reporter
	fetches  map[string]*rate.Limiter // per host, bytes: see hostByteRate
	deferred map[string]bool          // hosts changed but not fetched yet: over their rate
	// entryDocs are the layout 2 documents a full load read with their
	// shards (readShardDocs, loneEntries), by key: set for the load's round alone, when
	// the fetching goroutines read it and nothing writes it.
	entryDocs map[string]*api.KVPair
	retry     map[string]bool   // hosts whose fetch failed, read again after a backoff
	oversize  map[string]string // host -> the listed version at which its documents were over their bound (or oversizeEntry)

	// maxHostBytes, hostByteRate, maxShardBytes and maxHostDocBytes,
	// which tests lower.
	hostBytes, hostRate, shardBytes, entryBytes int64

	policy   policyUpdate       // the ownership policy the zones have
	policyCh chan *policyUpdate // from watchPolicy: a newer policy to apply

	reads      chan sourceRead    // from the followers (index.go)
	gen        uint64             // the followers' generation: a full load starts a new one
	stopFollow context.CancelFunc // ends the current generation
	failing    map[string]bool    // sources whose last read failed
	consulBack *signal            // fired when a failing source reads again: the others retry at once
	failures   int                // consecutive failed rounds, for the backoff and the logs
	retryAt    time.Time          // when to read the hosts in retry again (or reload)
	reload     bool               // a full load is due: Consul's index went backwards
	resyncNext int                // the shard the rolling resync reads next
}

// appliedHost is what the watcher last applied for one host.
type appliedHost struct {
	doc        *record.Host
	version    string              // the index's entry (listedHost.version) when fetched
	containers [sha256.Size]byte   // signature of the container keys and their ModifyIndex
	docs       []*record.Container // the last valid version of each, sorted by ID (the key's last segment)
	created    []uint64            // each one's key's CreateIndex (hostDocs.Created)
}

func newWatcher(kv *api.KV, prefix string, zones []*Zone, resync time.Duration, loaded, changed func()) *watcher {
	return &watcher{
		kv: kv, prefix: prefix, zones: zones, resync: resync, loaded: loaded, changed: changed,
		index:     newHostIndex(),
		hosts:     map[string]*appliedHost{},
		reports:   newReporter(),
		fetches:   map[string]*rate.Limiter{},
		deferred:  map[string]bool{},
		retry:     map[string]bool{},
		oversize:  map[string]string{},
		hostBytes: maxHostBytes, hostRate: hostByteRate, shardBytes: maxShardBytes, entryBytes: maxHostDocBytes,
		policy:     policyUpdate{policy: record.OpenPolicy},
		policyCh:   make(chan *policyUpdate, 1),
		reads:      make(chan sourceRead, record.ShardCount+1),
		failing:    map[string]bool{},
		consulBack: newSignal(),
	}
}

// Buckets of the reporter for documents that belong to no one host.
const (
	hostDocsReports = "/hosts"
	policyReports   = "/policy"
	shardReports    = "/shards/" // + the shard
)

// run watches until ctx ends. Failures back off with jitter; the zones
// keep answering from the last good data meanwhile.
func (w *watcher) run(ctx context.Context) {
	defer func() {
		if w.stopFollow != nil {
			w.stopFollow()
		}
	}()
	var policyIndex uint64
	for {
		var err error
		if policyIndex, err = w.fullLoad(ctx, false); err == nil {
			break
		}
		if !w.failed(ctx, err, false) {
			return
		}
	}
	for _, z := range w.zones {
		z.MarkLoaded()
	}
	w.loaded()
	// The first load's garbage (every document as Consul sent it, and as
	// decoded) is several times the index it built: give it back to the
	// system now rather than over the runtime's slow scavenging, so that the
	// server's resident memory is its index, not its start-up's peak.
	debug.FreeOSMemory()
	if w.policy.policy == record.OpenPolicy {
		log.Warningf("no ownership policy at %s: any host may publish any service name (README: Security)", record.PolicyKey(w.prefix))
	}
	setPolicyValid(w.zones, w.policy.err == nil)
	last := w.policy
	go w.watchPolicy(ctx, policyIndex, &last)

	// The safety net reads one shard's hosts again at a time, so that
	// every host is read within resync at an even cost, not the whole
	// prefix at once.
	resync := time.NewTicker(max(w.resync/record.ShardCount, 10*time.Millisecond))
	defer resync.Stop()
	for {
		retry := stoppedTimer()
		if len(w.retry) > 0 || w.reload {
			retry.Reset(time.Until(w.retryAt))
		}
		deferred := stoppedTimer()
		if len(w.deferred) > 0 {
			deferred.Reset(w.deferredWait())
		}
		var err error
		select {
		case <-ctx.Done():
			return
		case u := <-w.policyCh:
			w.applyPolicy(u)
		case r := <-w.reads:
			err = w.handleReads(ctx, r)
		case <-resync.C:
			err = w.resyncShard(ctx)
		case <-retry.C:
			if w.reload {
				_, err = w.fullLoad(ctx, true)
			} else {
				err = w.round(ctx, takeAll(&w.retry), changedOnly)
			}
		case <-deferred.C:
			err = w.round(ctx, maps.Clone(w.deferred), changedOnly)
		}
		retry.Stop()
		deferred.Stop()
		if err == nil {
			// Any step that went well may be the one that ends a run of
			// failures: a source reading again, or a retry of the hosts.
			w.recovered()
		} else if !w.failed(ctx, err, true) {
			return
		}
	}
}

func stoppedTimer() *time.Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}

// failed counts and reports a failed read, marks the zones stale and, for
// the first load, waits before the next attempt; it returns false once
// ctx has ended.
func (w *watcher) failed(ctx context.Context, err error, loaded bool) bool {
	if ctx.Err() != nil {
		return false
	}
	w.failures++
	w.retryAt = time.Now().Add(watchBackoff.Delay(w.failures))
	consulErrors.Inc()
	setStale(w.zones, true)
	switch {
	case w.failures == 1 && loaded:
		log.Warningf("consul: %v; serving the last good data until it recovers", err)
	case w.failures == 1:
		log.Warningf("consul: %v; no data yet: answering SERVFAIL until the first load", err)
	}
	if !loaded {
		sleep(ctx, watchBackoff.Delay(w.failures))
	}
	return ctx.Err() == nil
}

// recovered ends a run of failures once every source reads and no fetch
// waits for a retry.
func (w *watcher) recovered() {
	if len(w.failing) > 0 || len(w.retry) > 0 {
		return
	}
	if w.failures > 0 {
		log.Infof("consul: recovered after %d failed attempts", w.failures)
		w.failures = 0
	}
	setStale(w.zones, false)
}

func takeAll(set *map[string]bool) map[string]bool {
	all := *set
	*set = map[string]bool{}
	return all
}

// handleReads applies first and every other source read waiting, as one
// round.
func (w *watcher) handleReads(ctx context.Context, first sourceRead) error {
	reads := []sourceRead{first}
	for more := true; more; {
		select {
		case r := <-w.reads:
			reads = append(reads, r)
		default:
			more = false
		}
	}
	changed := map[string]bool{}
	// The sources whose last read in this batch failed: a failure that a
	// later read of the same source in the batch answered is over.
	readErrs := map[string]error{}
	for _, r := range reads {
		switch {
		case r.gen != w.gen:
			continue // a follower of an earlier full load
		case r.err != nil:
			if !w.failing[r.source] {
				watchRestarts.Inc()
			}
			w.failing[r.source] = true
			readErrs[r.source] = r.err
			continue
		case r.reset:
			// Consul's index went backwards: ModifyIndex values of two
			// histories cannot be compared, so read every host again.
			log.Warningf("consul: index of %s went backwards; reloading every host", r.source)
			watchRestarts.Inc()
			w.reload = true
			_, err := w.fullLoad(ctx, true)
			return err
		}
		delete(readErrs, r.source)
		if w.failing[r.source] {
			// Consul answers again: the hosts waiting for a retry (or a
			// reload) need not wait out the outage's backoff.
			delete(w.failing, r.source)
			w.retryAt = time.Now()
			if len(w.failing) > 0 {
				w.consulBack.fire()
			}
		}
		w.setSource(r, changed)
	}
	if err := w.round(ctx, changed, changedOnly); err != nil {
		return err
	}
	for _, err := range readErrs {
		return err
	}
	return nil
}

// setSource puts a source's read into the index, adding to changed the
// hosts whose entries it changed. A host refused for the size of its own
// keys (oversize) keeps its last entry, and is reported once.
func (w *watcher) setSource(r sourceRead, changed map[string]bool) {
	if r.source == sourceV1 {
		w.index.setV1(w.decodeHosts(r.v1), r.index, changed)
		return
	}
	hosts := w.decodeShard(r.source, r.keys)
	for _, host := range r.oversize {
		if e, ok := w.index.shards[r.source][host]; ok {
			hosts[host] = e
		}
		if _, seen := w.oversize[host]; !seen {
			invalidRecords.WithLabelValues("oversize").Inc()
			dataLog.warningf("host %s: its layout 2 entry %s holds keys over %d KiB; keeping what was served for it", host, record.HostRevPrefix(w.prefix, host), w.entryBytes>>10)
			w.oversize[host] = oversizeEntry
		}
	}
	w.index.setShard(r.source, hosts, r.index, changed)
}

// oversizeEntry marks, in watcher.oversize, a host refused for the keys of
// its layout 2 entry rather than for its container documents.
const oversizeEntry = "entry"

// resyncShard reads the hosts of the next shard again, whatever the index
// says of them: the safety net for producers that forget to bump rev. Only
// a host whose documents differ from what was applied is compiled again.
func (w *watcher) resyncShard(ctx context.Context) error {
	shard := record.Shards()[w.resyncNext]
	w.resyncNext = (w.resyncNext + 1) % record.ShardCount
	names := map[string]bool{}
	w.index.names(names)
	for name := range w.hosts {
		names[name] = true
	}
	for name := range names {
		if record.Shard(name) != shard {
			delete(names, name)
		}
	}
	return w.round(ctx, names, reread)
}

// How a round reads and compiles the hosts it is given.
type roundMode int

const (
	changedOnly roundMode = iota // fetch a host whose index entry changed
	reread                       // fetch every host; compile those whose documents changed
	recompile                    // fetch and compile every host
)

// round brings the named hosts up to what the index lists: a host the
// index no longer lists is taken away (once confirmGone agrees), a host
// whose entry changed since it was applied is fetched (every host, by
// mode), within its byte allowance.
func (w *watcher) round(ctx context.Context, names map[string]bool, mode roundMode) error {
	for name := range names {
		if !w.index.lookup(name).present() && w.hosts[name] != nil {
			if err := w.confirmGone(ctx, name); err != nil {
				w.retry[name] = true
				return err
			}
		}
	}
	b := batch{}
	listed := map[string]listedHost{}
	var fetch []string
	for name := range names {
		l := w.index.lookup(name)
		if !l.present() {
			w.add(b, name, nil, false)
			continue
		}
		st := w.hosts[name]
		v := l.version()
		if mode == changedOnly && (st != nil && st.version == v || w.oversize[name] == v) {
			delete(w.deferred, name)
			continue
		}
		if !w.fetchAllowed(name) {
			// Held to its allowance: this round's serial stands for data
			// that lacks the host's latest change, which a later round
			// brings (with the serial one up, if Consul's index did not
			// move meanwhile). Only a host far over its allowance, hostile
			// or broken, ever gets here (see hostByteRate).
			if !w.deferred[name] {
				hostFetchesDeferred.Inc()
				dataLog.warningf("host %s changes faster than its documents may be read (%d KiB/s): fetching its latest state at that rate", name, w.hostRate>>10)
			}
			w.deferred[name] = true
			continue
		}
		delete(w.deferred, name)
		listed[name] = l
		fetch = append(fetch, name)
	}
	sort.Strings(fetch)
	err := w.fetchInto(ctx, b, listed, fetch, mode == recompile)
	w.apply(b, w.index.dataIndex())
	return err
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

// deferredWait is how long until the first deferred host may be fetched.
func (w *watcher) deferredWait() time.Duration {
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

// fetchInto fetches the documents of hosts and adds them to b. A host whose
// subtree is over maxHostBytes keeps what it has (it is reported once, and
// fetched again when its entry changes); a host whose fetch failed is
// retried after a backoff, the others are applied. Before the first load
// is done no query sees the zones, so the hosts are installed in chunks as
// they arrive: building the index overlaps with Consul's serving the rest.
func (w *watcher) fetchInto(ctx context.Context, b batch, listed map[string]listedHost, hosts []string, force bool) error {
	var firstErr error
	for f := range w.fetchHosts(ctx, listed, hosts) {
		name := f.host
		w.fetched(name, f.read)
		switch {
		case f.err != nil:
			w.retry[name] = true
			if firstErr == nil {
				firstErr = f.err
			}
		case f.oversize:
			if _, seen := w.oversize[name]; !seen {
				invalidRecords.WithLabelValues("oversize").Inc()
				dataLog.warningf("host %s: its documents are over the read bound (%d KiB of containers, %d KiB of its layout 2 entry); keeping what was served for it", name, w.hostBytes>>10, w.entryBytes>>10)
			}
			w.oversize[name] = listed[name].version()
		default:
			delete(w.oversize, name)
			w.add(b, name, &f, force)
		}
		if len(b) >= loadChunk && !w.zones[0].Loaded() {
			w.apply(b, w.index.dataIndex())
			clear(b)
		}
	}
	return firstErr
}

// loadChunk is how many hosts the first load installs at a time.
const loadChunk = 32

// fullLoad reads the ownership policy, the whole host index and every
// host's documents, applies every host whose data differ from what was
// applied (every host, with force), and starts a new generation of
// followers from the indexes it read. It is the first load, and the
// restart after Consul's index went backwards. It returns the policy
// read's index, for the blocking reads that follow.
func (w *watcher) fullLoad(ctx context.Context, force bool) (policyIndex uint64, err error) {
	policyIndex, u, err := w.readPolicy(ctx, 0, &w.policy, w.reports)
	if err != nil {
		return 0, err
	}
	if u != nil {
		w.setPolicy(u)
		force = true
	}
	starts := map[string]uint64{}
	changed := map[string]bool{}
	entryDocs := map[string]*api.KVPair{}
	for _, source := range append([]string{sourceV1}, record.Shards()...) {
		var r sourceRead
		if source == sourceV1 {
			r = w.readSource(ctx, source, 0, 0)
		} else {
			r = w.readShardDocs(ctx, source)
		}
		if r.err != nil {
			return 0, r.err
		}
		starts[source] = r.index
		w.setSource(r, changed)
		w.loneEntries(r.docs, entryDocs)
	}
	names := map[string]bool{}
	w.index.names(names)
	for name := range w.hosts {
		names[name] = true
	}
	w.retry = map[string]bool{}
	mode := changedOnly
	if force {
		mode = recompile
	}
	w.entryDocs = entryDocs
	err = w.round(ctx, names, mode)
	w.entryDocs = nil
	if err != nil {
		return 0, err
	}
	w.startFollowers(ctx, starts)
	w.failing = map[string]bool{}
	w.reload = false
	w.recovered()
	return policyIndex, nil
}

// loneEntries adds to into, by key, the layout 2 pair of each host that
// has one key in a shard read with its documents and whose own read would
// fit its bound (fetchHost's, entryBytes); any other host, a flooding one
// included, is read on its own and bounded as before.
func (w *watcher) loneEntries(pairs api.KVPairs, into map[string]*api.KVPair) {
	lone := map[string]*api.KVPair{} // host -> its one pair; nil: several
	for _, p := range pairs {
		host, _, err := record.ParseHostRevKey(w.prefix, p.Key)
		if err != nil {
			continue // refused by decodeShard, and reported
		}
		if _, seen := lone[host]; seen {
			lone[host] = nil
			continue
		}
		lone[host] = p
	}
	for _, p := range lone {
		// A generous bound of that read's response: the key, the value in
		// base64, and the other fields of one pair in Consul's JSON.
		if p != nil && int64(len(p.Key)+base64.StdEncoding.EncodedLen(len(p.Value))+512) <= w.entryBytes {
			into[p.Key] = p
		}
	}
}

// startFollowers ends the followers of the last full load and starts one
// per source, each from the index the full load read it at: whatever
// changed since reaches the main loop.
func (w *watcher) startFollowers(ctx context.Context, starts map[string]uint64) {
	if w.stopFollow != nil {
		w.stopFollow()
	}
	fctx, cancel := context.WithCancel(ctx)
	w.stopFollow = cancel
	w.gen++
	for source, index := range starts {
		go w.follow(fctx, w.gen, source, max(index, 1), w.reads)
	}
}

// fetchedHost is one host's documents as read from Consul, its container
// documents decoded by the fetching goroutine (decoding is most of a first
// load's work, and runs on every core that way).
type fetchedHost struct {
	host     string
	read     int64       // bytes read, charged to the host's allowance
	v2       *api.KVPair // layout 2's host document (the highest rev), if listed there
	pairs    api.KVPairs // its container documents
	decoded  []decodedContainer
	oversize bool
	err      error
}

// decodedContainer is one key of a host's subtree, decoded and validated.
type decodedContainer struct {
	pair *api.KVPair
	doc  *record.Container // nil: invalid (err) or a deeper key (neither)
	err  error
}

func (w *watcher) decodeContainers(pairs api.KVPairs) []decodedContainer {
	out := make([]decodedContainer, 0, len(pairs))
	for _, p := range pairs {
		_, id, ok := record.HostFromContainerKey(w.prefix, p.Key)
		if !ok {
			continue // a deeper key is no document of ours
		}
		c, err := record.DecodeContainerOf(id, p.Key, p.Value)
		out = append(out, decodedContainer{pair: p, doc: c, err: err})
	}
	return out
}

// fetchHosts reads the documents of each host, a few at a time, each read
// cut off at its bound (oversize), and hands them over as they come. These
// reads are consistent (not stale), so they are never older than the index
// entry that announced them.
func (w *watcher) fetchHosts(ctx context.Context, listed map[string]listedHost, hosts []string) <-chan fetchedHost {
	out := make(chan fetchedHost, fetchParallel)
	go func() {
		defer close(out)
		var wg sync.WaitGroup
		sem := make(chan struct{}, fetchParallel)
		for _, h := range hosts {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				out <- w.fetchHost(ctx, h, listed[h])
			})
		}
		wg.Wait()
	}()
	return out
}

// fetchHost reads one host's layout 2 document (when listed there, and not
// read already with its shard) and its container documents.
func (w *watcher) fetchHost(ctx context.Context, host string, l listedHost) (f fetchedHost) {
	f.host = host
	if p := w.entryDocs[l.v2Key]; p != nil {
		f.v2 = p // read with its shard: the document of the key the index lists
		f.read += int64(len(p.Value))
	} else if l.v2Key != "" {
		pairs, ok := w.boundedList(ctx, record.HostRevPrefix(w.prefix, host), w.entryBytes, &f)
		if !ok {
			return f
		}
		f.v2 = highestRev(w.prefix, pairs)
	}
	if pairs, ok := w.boundedList(ctx, record.ContainersPrefix(w.prefix, host), w.hostBytes, &f); ok {
		f.pairs, f.decoded = pairs, w.decodeContainers(pairs)
	}
	return f
}

// boundedList reads the pairs under prefix for f's host, cut off at
// maxBytes: it adds the bytes read to f.read, and on a read over the bound
// (f.oversize) or a failed one (f.err) returns false.
func (w *watcher) boundedList(ctx context.Context, prefix string, maxBytes int64, f *fetchedHost) (api.KVPairs, bool) {
	req := &consulRequest{kind: requestHost, maxBytes: maxBytes}
	pairs, _, err := w.kv.List(prefix, (&api.QueryOptions{}).WithContext(withRequest(ctx, req)))
	f.read += req.read
	switch {
	case err != nil && req.exceeded:
		f.oversize = true
	case err != nil:
		f.err = err
	}
	return pairs, err == nil
}

// highestRev is the entry of the highest rev among a host's layout 2 keys.
func highestRev(prefix string, pairs api.KVPairs) *api.KVPair {
	var best *api.KVPair
	var bestRev uint64
	for _, p := range pairs {
		if _, rev, err := record.ParseHostRevKey(prefix, p.Key); err == nil && (best == nil || rev > bestRev) {
			best, bestRev = p, rev
		}
	}
	return best
}

// batch collects the hosts that one round of the watcher changes, so that
// the zones merge each shared name once and install the round whole.
type batch map[string]*hostDocs

// add decodes one host's fetched documents into the batch (f nil: the host
// is gone) unless, short of force, nothing it serves changed since the last
// time.
func (w *watcher) add(b batch, name string, f *fetchedHost, force bool) {
	if f == nil {
		if _, ok := w.hosts[name]; ok {
			delete(w.hosts, name)
			b[name] = nil
		}
		w.reports.keep(name, nil)
		delete(w.fetches, name)
		delete(w.oversize, name)
		delete(w.deferred, name)
		return
	}
	l := w.index.lookup(name)
	prev := w.hosts[name]
	doc, badDoc := w.hostDoc(name, l, f.v2, prev)
	if doc == nil {
		return // no valid host document: nothing of the host is served
	}
	sig := signature(f.pairs)
	if !force && prev != nil && prev.containers == sig && sameHost(prev.doc, doc) {
		prev.version = l.version()
		return
	}
	st := &appliedHost{doc: doc, version: l.version(), containers: sig}
	w.hosts[name] = st
	data := &hostDocs{Host: doc, Containers: make([]*record.Container, 0, len(f.decoded))}
	bad := map[string]bool{}
	created := make(map[*record.Container]uint64, len(f.decoded))
	for _, d := range f.decoded {
		c := d.doc
		if d.err != nil {
			w.reports.invalid(name, d.pair, d.err)
			bad[d.pair.Key] = true
			if c = prev.lastValid(w.prefix, d.pair.Key); c == nil {
				continue
			}
		}
		// The key's CreateIndex, the same for its last valid document:
		// a document rewritten in place keeps its claims' age (merge).
		created[c] = d.pair.CreateIndex
		data.Containers = append(data.Containers, c)
	}
	if badDoc != "" {
		bad[badDoc] = true
	}
	slices.SortFunc(data.Containers, func(a, b *record.Container) int { return strings.Compare(a.ID, b.ID) })
	data.Created = make([]uint64, len(data.Containers))
	for i, c := range data.Containers {
		data.Created[i] = created[c]
	}
	st.docs, st.created = data.Containers, data.Created // read-only from here on, shared with the batch
	w.reports.keep(name, bad)
	b[name] = data
}

// hostDoc is the host document to serve: of the layouts that list the
// host, the one of the higher rev (layout 2 on a tie, as an exporter
// writing both writes the same document twice). An invalid layout 2
// document is reported (badKey), and the layout 1 document or the last
// valid one stands in for it.
func (w *watcher) hostDoc(name string, l listedHost, v2 *api.KVPair, prev *appliedHost) (doc *record.Host, badKey string) {
	if v2 != nil {
		h, err := record.DecodeHostOf(name, v2.Key, v2.Value)
		if err != nil {
			w.reports.invalid(name, v2, err)
			badKey = v2.Key
		} else {
			doc = h
		}
	}
	switch {
	case doc != nil && (l.v1 == nil || doc.Rev >= l.v1.Rev):
		return doc, badKey
	case l.v1 != nil:
		return l.v1, badKey
	case prev != nil:
		return prev.doc, badKey
	}
	return nil, badKey
}

// sameHost reports whether two host documents serve the same records.
func sameHost(a, b *record.Host) bool {
	return a.Name == b.Name && slices.Equal(a.Addrs, b.Addrs)
}

// apply installs a batch, read from Consul's state at index (the host
// index's), in every zone. The batch may be empty: the serial follows the
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
	if w.changed != nil && w.zones[0].Loaded() { // the first load notifies once, when done
		w.changed()
	}
}

// lastValid is the last valid document applied at a container key.
func (st *appliedHost) lastValid(prefix, key string) *record.Container {
	_, id, ok := record.HostFromContainerKey(prefix, key)
	if st == nil || !ok {
		return nil
	}
	if i, found := slices.BinarySearchFunc(st.docs, id, func(c *record.Container, id string) int { return strings.Compare(c.ID, id) }); found {
		return st.docs[i]
	}
	return nil
}

// data is the host's documents as last applied, to compile them again
// (under a new ownership policy) without reading Consul.
func (st *appliedHost) data() *hostDocs {
	return &hostDocs{Host: st.doc, Containers: st.docs, Created: st.created}
}

// signature stands for a host's container keys and their ModifyIndex: a
// hash, not the list, so that it costs 32 bytes a host whatever its size.
func signature(pairs api.KVPairs) [sha256.Size]byte {
	h := sha256.New()
	var n [8]byte
	for _, p := range pairs {
		h.Write([]byte(p.Key))
		binary.BigEndian.PutUint64(n[:], p.ModifyIndex)
		h.Write(n[:])
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
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
