package berth

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/berthdns/berth/record"
	"github.com/hashicorp/consul/api"
	"golang.org/x/time/rate"
)

// The host index is read from two layouts at once (record.Layout): layout
// 1's host list, and layout 2's 64 shards, each followed by a blocking
// query of its own (a source). A host in both is one host; a fleet moves
// from one layout to the other host by host without a gap in answers
// (README.md#upgrading-the-kv-layout).

// sourceV1 names layout 1's host list among the sources; the others are
// shard names ("00" to "3f").
const sourceV1 = "v1"

// listedHost is a host as the index lists it: the first stage of a host in
// the watcher (then hostDocs, decoded with its containers, to compile; then
// appliedHost, what the zones have).
type listedHost struct {
	v1      *record.Host // layout 1's document; nil: not in layout 1
	v1Index uint64       // its ModifyIndex
	v2Key   string       // layout 2's <prefix>/shards/<ss>/<host>/<rev>; "": not in layout 2
	v2Rev   uint64
}

func (l listedHost) present() bool { return l.v1 != nil || l.v2Key != "" }

// version names what the index says of the host: any write of its
// exporter changes it, in either layout, so the host is fetched again.
func (l listedHost) version() string {
	var b strings.Builder
	if l.v1 != nil {
		b.WriteString("1@")
		b.WriteString(strconv.FormatUint(l.v1Index, 10))
	}
	if l.v2Key != "" {
		b.WriteString(" 2@")
		b.WriteString(l.v2Key)
	}
	return b.String()
}

// hostIndex is what the sources last said: layout 1's documents and layout
// 2's keys, by host, and each source's Consul index.
type hostIndex struct {
	v1      map[string]listedHost            // host -> layout 1 entry
	shards  map[string]map[string]listedHost // shard -> host -> layout 2 entry
	indexes map[string]uint64                // source -> Consul index of its last read, while it lists a host
}

func newHostIndex() *hostIndex {
	return &hostIndex{v1: map[string]listedHost{},
		shards: map[string]map[string]listedHost{}, indexes: map[string]uint64{}}
}

// lookup merges a host's entries in both layouts.
func (x *hostIndex) lookup(host string) listedHost {
	l := x.v1[host]
	if e, ok := x.shards[record.Shard(host)][host]; ok {
		l.v2Key, l.v2Rev = e.v2Key, e.v2Rev
	}
	return l
}

// names adds every listed host to set.
func (x *hostIndex) names(set map[string]bool) {
	for h := range x.v1 {
		set[h] = true
	}
	for _, s := range x.shards {
		for h := range s {
			set[h] = true
		}
	}
}

// dataIndex is Consul's index of the host index: the highest of the
// sources' that list a host. A source that lists nothing is left out:
// Consul answers a read of an empty prefix with the index of the whole KV
// store, which moves with writes that are none of the zone's.
func (x *hostIndex) dataIndex() uint64 {
	var idx uint64
	for _, i := range x.indexes {
		idx = max(idx, i)
	}
	return idx
}

// setV1 replaces layout 1's entries with a read of the host list; it adds
// to changed every host whose entry differs.
func (x *hostIndex) setV1(hosts map[string]listedHost, index uint64, changed map[string]bool) {
	diffHosts(x.v1, hosts, changed)
	x.v1 = hosts
	x.setIndex(sourceV1, index, len(hosts) > 0)
}

// setShard replaces one shard's entries with a read of it.
func (x *hostIndex) setShard(shard string, hosts map[string]listedHost, index uint64, changed map[string]bool) {
	diffHosts(x.shards[shard], hosts, changed)
	x.shards[shard] = hosts
	x.setIndex(shard, index, len(hosts) > 0)
}

func (x *hostIndex) setIndex(source string, index uint64, listsHosts bool) {
	if listsHosts {
		x.indexes[source] = index
	} else {
		delete(x.indexes, source)
	}
}

func diffHosts(old, cur map[string]listedHost, changed map[string]bool) {
	for h, e := range cur {
		if o, ok := old[h]; !ok || o.version() != e.version() {
			changed[h] = true
		}
	}
	for h := range old {
		if _, ok := cur[h]; !ok {
			changed[h] = true
		}
	}
}

// decodeShard turns a keys-only read of one shard into its hosts' layout 2
// entries, reporting the keys it refuses once each (while they stay).
func (w *watcher) decodeShard(shard string, keys []string) map[string]listedHost {
	hosts, refused := parseShard(w.prefix, keys)
	bad := make(map[string]bool, len(refused))
	for key, err := range refused {
		w.reports.invalid(shardReports+shard, &api.KVPair{Key: key}, err)
		bad[key] = true
	}
	w.reports.keep(shardReports+shard, bad)
	return hosts
}

// parseShard reads layout 2 entries off one shard's keys: the highest rev
// of each host. A key that is not <prefix>/shards/<shard>/<host>/<rev>
// with <shard> its host's (record.ParseHostRevKey) is refused: it cannot
// shadow a host elsewhere.
func parseShard(prefix string, keys []string) (hosts map[string]listedHost, refused map[string]error) {
	hosts = make(map[string]listedHost, len(keys))
	refused = map[string]error{}
	for _, key := range keys {
		host, rev, err := record.ParseHostRevKey(prefix, key)
		if err != nil {
			refused[key] = err
			continue
		}
		if e, ok := hosts[host]; !ok || rev > e.v2Rev {
			hosts[host] = listedHost{v2Key: key, v2Rev: rev}
		}
	}
	return hosts, refused
}

// sourceRead is one answer of a source's blocking query, handed to the
// watcher's main loop.
type sourceRead struct {
	gen    uint64 // the generation of followers that read it (see follow)
	source string
	index  uint64
	v1     api.KVPairs // sourceV1: the host documents
	keys   []string    // a shard: its keys
	docs   api.KVPairs // a shard read with its documents (readShardDocs): keys' pairs, in keys' order
	err    error
	reset  bool // Consul's index went backwards

	// A shard over its bound (readShardByHost): the hosts whose own keys
	// are over theirs, and that the read was the slow one.
	oversize []string
	slow     bool
}

// nextWaitIndex is the one rule for the index of the next blocking read,
// after a read at prev answered got: an index that went backwards (a
// restored snapshot, a rebuilt cluster) starts over at 0, since indexes of
// two histories cannot be compared; 0 is never waited on.
func nextWaitIndex(prev, got uint64) (next uint64, reset bool) {
	if got < prev {
		return 0, true
	}
	return max(got, 1), false
}

// follow holds source's blocking query from index on, until ctx ends, and
// hands every answer that moved the index (and every failure) to out. Each
// source has its own rate bound: a flapping shard is read at most 20 times
// a second, its changes coalesced, and costs the others nothing.
func (w *watcher) follow(ctx context.Context, gen uint64, source string, index uint64, out chan<- sourceRead) {
	limit := rate.NewLimiter(rate.Every(50*time.Millisecond), 10)
	failing := false // the last read failed: the next answer is news, whatever its index
	failures := 0    // failed reads since the last answer, or since Consul answered another source
	last := index    // the index of the last answer: a failure sets index to 0, not this
	for limit.Wait(ctx) == nil {
		// Taken before the read: another source that reads again while
		// this read is failing still cuts this one's backoff short.
		back := w.consulBack.wait()
		rctx, cancel := ctx, context.CancelFunc(func() {})
		if failing {
			// A restarted agent holds a read it cannot answer yet (no
			// leader) for seconds: once Consul answers another source,
			// such a read is cut and made again.
			rctx, cancel = cutOn(ctx, back)
		}
		r := w.readSource(rctx, source, index, watchWait)
		cancel()
		r.gen = gen
		if ctx.Err() != nil {
			return
		}
		if r.err != nil {
			failing = true
			failures++
			index = 0
			if !send(ctx, out, r) {
				return
			}
			select { // the backoff, cut short once another source reads again
			case <-ctx.Done():
			case <-time.After(watchBackoff.Delay(failures)):
			case <-back:
				// Consul answers again. A restarted agent can still refuse
				// a read or two while it settles: start the backoff over,
				// so that such a refusal costs a short wait, not the
				// outage's long one.
				failures = 0
			}
			continue
		}
		if r.index == last && !failing {
			continue // the wait ran out: nothing changed
		}
		failing, failures = false, 0
		index, r.reset = nextWaitIndex(last, r.index)
		last = r.index
		if !send(ctx, out, r) {
			return
		}
		if r.slow {
			sleep(ctx, time.Second)
		}
	}
}

// cutOn returns a context that ends with ctx, or once cut is closed.
func cutOn(ctx context.Context, cut <-chan struct{}) (context.Context, context.CancelFunc) {
	c, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-cut:
			cancel()
		case <-c.Done():
		}
	}()
	return c, cancel
}

// signal wakes every goroutine waiting on it, and can be fired again.
type signal struct {
	mu sync.Mutex
	ch chan struct{}
}

func newSignal() *signal { return &signal{ch: make(chan struct{})} }

func (s *signal) wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ch
}

func (s *signal) fire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.ch)
	s.ch = make(chan struct{})
}

func send(ctx context.Context, out chan<- sourceRead, r sourceRead) bool {
	select {
	case out <- r:
		return true
	case <-ctx.Done():
		return false
	}
}

// readSource is one read of source: a blocking one at index (0: now).
func (w *watcher) readSource(ctx context.Context, source string, index uint64, wait time.Duration) sourceRead {
	r := sourceRead{source: source}
	q := (&api.QueryOptions{WaitIndex: index, WaitTime: wait, AllowStale: true})
	var meta *api.QueryMeta
	if source == sourceV1 {
		q = q.WithContext(withRequest(ctx, &consulRequest{kind: requestWatch}))
		r.v1, meta, r.err = w.kv.List(record.HostsPrefix(w.prefix), q)
	} else {
		req := &consulRequest{kind: requestShard, maxBytes: w.shardBytes}
		r.keys, meta, r.err = w.kv.Keys(record.ShardPrefix(w.prefix, source), "", q.WithContext(withRequest(ctx, req)))
		if r.err != nil && req.exceeded {
			return w.readShardByHost(ctx, source, index, wait)
		}
	}
	if r.err == nil {
		r.index = meta.LastIndex
	}
	return r
}

// readShardDocs reads one shard for a full load: its keys, as the follower
// reads them, and with them each host's document, so that the load then
// reads only each host's containers (one request per host, as layout 1
// costs, rather than two). A shard over its bound that way is read as the
// follower reads it (readSource), and its hosts' documents one by one.
func (w *watcher) readShardDocs(ctx context.Context, shard string) sourceRead {
	req := &consulRequest{kind: requestShard, maxBytes: w.shardBytes}
	q := (&api.QueryOptions{AllowStale: true}).WithContext(withRequest(ctx, req))
	pairs, meta, err := w.kv.List(record.ShardPrefix(w.prefix, shard), q)
	switch {
	case err != nil && req.exceeded:
		return w.readSource(ctx, shard, 0, 0)
	case err != nil:
		return sourceRead{source: shard, err: err}
	}
	r := sourceRead{source: shard, index: meta.LastIndex, keys: make([]string, len(pairs)), docs: pairs}
	for i, p := range pairs {
		r.keys[i] = p.Key
	}
	return r
}

// readShardByHost reads a shard whose key list is over its bound: some
// host of it writes keys far beyond its one entry (hostile or broken). It
// lists the shard's hosts, one line each whatever each holds, then each
// host's keys on their own, bounded; a host over that bound is refused
// (oversize), and keeps what was served for it, while the shard's other
// hosts are read as usual. It costs a read per host of the shard, so the
// follower waits a second after it.
func (w *watcher) readShardByHost(ctx context.Context, shard string, index uint64, wait time.Duration) sourceRead {
	r := sourceRead{source: shard, slow: true}
	q := (&api.QueryOptions{WaitIndex: index, WaitTime: wait, AllowStale: true}).WithContext(withRequest(ctx, &consulRequest{kind: requestShard}))
	dirs, meta, err := w.kv.Keys(record.ShardPrefix(w.prefix, shard), "/", q)
	if err != nil {
		r.err = err
		return r
	}
	r.index = meta.LastIndex
	for _, dir := range dirs {
		host := strings.TrimSuffix(strings.TrimPrefix(dir, record.ShardPrefix(w.prefix, shard)), "/")
		if record.ValidLabel(host) != nil || !strings.HasSuffix(dir, "/") {
			r.keys = append(r.keys, dir) // refused by parseShard, and reported
			continue
		}
		req := &consulRequest{kind: requestShard, maxBytes: w.entryBytes}
		keys, _, err := w.kv.Keys(record.HostRevPrefix(w.prefix, host), "", (&api.QueryOptions{AllowStale: true}).WithContext(withRequest(ctx, req)))
		switch {
		case err != nil && req.exceeded:
			r.oversize = append(r.oversize, host)
		case err != nil:
			r.err = err
			return r
		default:
			r.keys = append(r.keys, keys...)
		}
	}
	return r
}

// confirmGone re-reads, consistently, the layouts in which the index no
// longer lists host, before the watcher takes its records away: an exporter
// that moves a host from one layout to the other does so in one
// transaction, but the two layouts' followers may report it in either
// order, and a host must not vanish in between. What it finds goes into the
// index (the follower of that layout reports the same, later).
func (w *watcher) confirmGone(ctx context.Context, host string) error {
	kv := w.kv
	q := (&api.QueryOptions{}).WithContext(withRequest(ctx, &consulRequest{kind: requestHost}))
	pair, _, err := kv.Get(record.HostKey(w.prefix, host), q)
	if err != nil {
		return err
	}
	if pair != nil {
		if h, err := record.DecodeHostOf(host, pair.Key, pair.Value); err == nil {
			w.index.v1[host] = listedHost{v1: h, v1Index: pair.ModifyIndex}
		}
	}
	keys, _, err := kv.Keys(record.HostRevPrefix(w.prefix, host), "", q)
	if err != nil {
		return err
	}
	shard := record.Shard(host)
	if hosts, _ := parseShard(w.prefix, keys); hosts[host].present() {
		e := hosts[host]
		if w.index.shards[shard] == nil {
			w.index.shards[shard] = map[string]listedHost{}
		}
		w.index.shards[shard][host] = e
	}
	return nil
}

// decodeHosts validates layout 1's host documents; an invalid one is
// skipped, and a host whose document turned invalid keeps the last valid
// one (garbage over a good document loses nothing).
func (w *watcher) decodeHosts(pairs api.KVPairs) map[string]listedHost {
	hosts := make(map[string]listedHost, len(pairs))
	bad := map[string]bool{}
	for _, p := range pairs {
		name := strings.TrimPrefix(p.Key, record.HostsPrefix(w.prefix))
		h, err := record.DecodeHostOf(name, p.Key, p.Value)
		if err != nil {
			w.reports.invalid(hostDocsReports, p, err)
			bad[p.Key] = true
			if old, ok := w.index.v1[name]; ok {
				hosts[name] = old
			}
			continue
		}
		hosts[name] = listedHost{v1: h, v1Index: p.ModifyIndex}
	}
	w.reports.keep(hostDocsReports, bad)
	return hosts
}
