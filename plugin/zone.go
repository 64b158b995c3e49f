package berth

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/berthdns/berth/record"
	"github.com/miekg/dns"
)

// hostData is one host's documents as the watcher read them from Consul,
// already decoded and validated.
type hostData struct {
	Host       *record.Host
	Containers []*record.Container // sorted by ID
}

// node holds the records of one owner name, built once when the data
// changes and shared read-only by every query. A node with no records is an
// empty non-terminal.
type node struct {
	a, aaaa, srv, txt, ptr, ns []dns.RR
	glue                       []dns.RR // A/AAAA of SRV and NS targets, for the additional section

	// A large name that many hosts share (a DNS-SD service type lists every
	// instance of the zone) keeps its hosts' parts, in host order, and joins
	// their records on first use rather than at every change of any host:
	// a change then costs the changed host's parts, not the zone's.
	parts  []*node
	count  int // records in parts
	joined sync.Once
}

// join puts a lazily merged node's records in place; every reader of the
// record fields calls it first.
func (n *node) join() *node {
	if n.parts != nil {
		n.joined.Do(func() {
			for _, p := range n.parts {
				n.srv = append(n.srv, p.srv...)
				n.txt = append(n.txt, p.txt...)
				n.ptr = append(n.ptr, p.ptr...)
				n.glue = append(n.glue, p.glue...)
			}
		})
	}
	return n
}

func (n *node) empty() bool {
	return n.size() == 0
}

func (n *node) size() int {
	switch {
	case n == nil:
		return 0
	case n.parts != nil:
		return n.count
	}
	return len(n.a) + len(n.aaaa) + len(n.srv) + len(n.txt) + len(n.ptr) + len(n.ns)
}

// answer returns the records of qtype and their additional records.
func (n *node) answer(qtype uint16) (answer, extra []dns.RR) {
	n.join()
	switch qtype {
	case dns.TypeA:
		return n.a, nil
	case dns.TypeAAAA:
		return n.aaaa, nil
	case dns.TypeSRV:
		return n.srv, n.glue
	case dns.TypeTXT:
		return n.txt, nil
	case dns.TypePTR:
		return n.ptr, nil
	case dns.TypeNS:
		return n.ns, n.glue
	case dns.TypeANY:
		return n.all(), nil
	}
	return nil, nil
}

func (n *node) all() []dns.RR {
	n.join()
	return slices.Concat(n.ns, n.a, n.aaaa, n.srv, n.txt, n.ptr)
}

// entNode stands for every empty non-terminal.
var entNode = &node{}

// Zone is the in-memory index of one served zone. Queries read it under a
// read lock held only for a map lookup; the single watcher goroutine builds
// new nodes without the lock and installs one host's changes under the write
// lock, so a query sees a host's update whole or not at all.
type Zone struct {
	origin string // lower-case FQDN
	ttl    uint32
	ns     *node // the apex: NS records and their glue

	mu      sync.RWMutex
	names   map[string]*node
	soa     []dns.RR // the SOA alone: the authority section of every negative answer, shared, never modified
	loaded  bool
	journal journal // the differences behind the last serials, for IXFR

	timers    soaTimers // set before the first load
	serial    uint32    // the serial of the installed state
	hasSerial bool      // false until the first update

	records atomic.Int64 // resource records indexed, kept by install

	// Only the updating goroutine uses the fields below.
	hosts  map[string]*contribution       // what each host contributes
	shared map[string]map[string]*node    // shared name -> host -> its part
	below  map[string]int                 // name -> number of names with records strictly below it
	static map[string]bool                // names set by the Corefile, never overridden
	policy *record.Policy                 // who may publish which service names
	skip   func(reason, name, why string) // reports a name that cannot be published
	// What has been reported through skip and still holds, so that a name
	// is reported once, not on every update of its host.
	skipped map[string]map[skipKey]string // host -> names left out of its records
}

// contribution is what one host adds to the zone: names that only it has,
// and its parts of names that several hosts share (services, DNS-SD).
type contribution struct {
	owned  map[string]*node
	shared map[string]*node
}

// NSRecord is one `ns NAME [ADDRESS...]` line of the Corefile.
type NSRecord struct {
	Name  string
	Addrs []netip.Addr
}

// NewZone returns an empty zone for origin; it answers SERVFAIL until
// MarkLoaded, after the first update.
func NewZone(origin string, ttl uint32, nameservers []NSRecord, skip func(reason, name, why string)) *Zone {
	origin = strings.ToLower(dns.Fqdn(origin))
	if skip == nil {
		skip = func(string, string, string) {}
	}
	z := &Zone{
		origin: origin, ttl: ttl,
		names:   map[string]*node{},
		hosts:   map[string]*contribution{},
		shared:  map[string]map[string]*node{},
		below:   map[string]int{},
		static:  map[string]bool{},
		skip:    skip,
		skipped: map[string]map[skipKey]string{},
		policy:  record.OpenPolicy,
	}
	if len(nameservers) == 0 {
		nameservers = []NSRecord{{Name: "ns.dns." + origin}}
	}
	apex := &node{}
	for _, ns := range nameservers {
		name := strings.ToLower(dns.Fqdn(ns.Name))
		apex.ns = append(apex.ns, &dns.NS{Hdr: z.hdr(origin, dns.TypeNS), Ns: name})
		glue := &node{}
		for _, a := range ns.Addrs {
			rr := z.addrRR(name, a)
			apex.glue = append(apex.glue, rr)
			glue.add(rr)
		}
		if dns.IsSubDomain(origin, name) && name != origin && !glue.empty() {
			z.names[name] = glue
			z.static[name] = true
		}
	}
	z.names[origin] = apex
	z.static[origin] = true
	z.ns = apex
	for name := range z.static {
		z.countAncestors(name, +1)
		z.records.Add(int64(z.names[name].size()))
	}
	for name, n := range z.below {
		if n > 0 && z.names[name] == nil {
			z.names[name] = entNode
		}
	}
	z.timers = defaultTimers
	z.soa = []dns.RR{z.newSOA(0)}
	return z
}

// soaTimers are the SOA's refresh, retry and expire, in seconds.
type soaTimers struct{ refresh, retry, expire uint32 }

// defaultTimers suit secondaries that hear of changes by NOTIFY: refresh
// is only the safety net for a lost NOTIFY (and BIND will not poll more
// often than every 300 s anyway), and a hidden primary that is down for a
// while must not make its secondaries give up the zone (two weeks).
var defaultTimers = soaTimers{refresh: 300, retry: 60, expire: 14 * 24 * 3600}

// setTimers sets the SOA timers; only before the first update.
func (z *Zone) setTimers(t soaTimers) {
	z.timers = t
	z.soa = []dns.RR{z.newSOA(z.serial)}
}

func (z *Zone) hdr(name string, rrtype uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: rrtype, Class: dns.ClassINET, Ttl: z.ttl}
}

func (z *Zone) addrRR(name string, a netip.Addr) dns.RR {
	if a.Is4() {
		return &dns.A{Hdr: z.hdr(name, dns.TypeA), A: a.AsSlice()}
	}
	return &dns.AAAA{Hdr: z.hdr(name, dns.TypeAAAA), AAAA: a.AsSlice()}
}

func (z *Zone) newSOA(serial uint32) *dns.SOA {
	return &dns.SOA{
		Hdr:     z.hdr(z.origin, dns.TypeSOA),
		Ns:      z.ns.ns[0].(*dns.NS).Ns,
		Mbox:    "hostmaster." + z.origin,
		Serial:  serial,
		Refresh: z.timers.refresh, Retry: z.timers.retry, Expire: z.timers.expire,
		Minttl: z.ttl,
	}
}

// Origin is the zone's name, lower case and fully qualified.
func (z *Zone) Origin() string { return z.origin }

// Loaded reports whether the zone has had its first full load.
func (z *Zone) Loaded() bool {
	z.mu.RLock()
	defer z.mu.RUnlock()
	return z.loaded
}

// SOA is the zone's current SOA record.
func (z *Zone) SOA() *dns.SOA {
	z.mu.RLock()
	defer z.mu.RUnlock()
	return z.soa[0].(*dns.SOA)
}

// Lookup finds qname (lower case, fully qualified, inside the zone). It
// returns the answer, shuffled when it holds several records, the additional
// section, the authority section of a negative answer (the SOA alone; the
// slice is shared by every query and must not be modified), and whether the
// name exists at all. Only a shuffled answer costs an allocation.
func (z *Zone) Lookup(qname string, qtype uint16) (answer, extra, soa []dns.RR, exists, loaded bool) {
	z.mu.RLock()
	n, exists := z.names[qname]
	soa, loaded = z.soa, z.loaded
	z.mu.RUnlock()
	if !exists {
		return nil, nil, soa, false, loaded
	}
	if qtype == dns.TypeSOA && qname == z.origin {
		return soa, nil, soa, true, loaded
	}
	answer, extra = n.answer(qtype)
	if len(answer) == 0 {
		extra = nil // NODATA: glue would be unrelated to the question
	}
	if qname == z.origin && qtype == dns.TypeANY {
		answer = append([]dns.RR{soa[0]}, answer...)
	}
	if len(answer) > 1 {
		answer = slices.Clone(answer)
		rand.Shuffle(len(answer), func(i, j int) { answer[i], answer[j] = answer[j], answer[i] })
	}
	return answer, extra, soa, true, loaded
}

// Records is the number of resource records indexed.
func (z *Zone) Records() int64 { return z.records.Load() }

// update replaces what each host contributes to the zone with its data
// (nil removes the host), as Consul held it at index. Every name shared by
// several hosts (a service, a DNS-SD list) that the batch touches is merged
// once, and all changes are installed together under the write lock with
// the serial of index (see nextSerial). It reports whether the serial
// changed. Only one goroutine may call update and MarkLoaded.
func (z *Zone) update(updates map[string]*hostData, index uint64) bool {
	changed := map[string]*node{}
	touched := map[string]bool{}
	for host, data := range updates {
		old := z.hosts[host]
		if old == nil {
			old = &contribution{}
		}
		cur, skipped := z.compile(data)
		z.reportSkipped(host, skipped)
		if data == nil || (len(cur.owned) == 0 && len(cur.shared) == 0) {
			delete(z.hosts, host)
		} else {
			z.hosts[host] = cur
		}
		// Owned names contain the host's own label: no other host has them.
		for name := range old.owned {
			changed[name] = nil
		}
		for name, n := range cur.owned {
			changed[name] = n
		}
		for name := range mergeKeys(old.shared, cur.shared) {
			touched[name] = true
			parts := z.shared[name]
			if part := cur.shared[name]; part != nil {
				if parts == nil {
					parts = map[string]*node{}
					z.shared[name] = parts
				}
				parts[host] = part
			} else {
				delete(parts, host)
			}
		}
	}
	for name := range touched {
		if parts := z.shared[name]; len(parts) > 0 {
			changed[name] = merge(name, parts)
		} else {
			delete(z.shared, name)
			changed[name] = nil
		}
	}
	return z.install(changed, index)
}

// reportSkipped reports the names left out of host's records that were not
// left out at its previous update.
func (z *Zone) reportSkipped(host string, skipped map[skipKey]string) {
	before := z.skipped[host]
	for k, why := range skipped {
		if _, ok := before[k]; !ok {
			z.skip(k.reason, k.name, why)
		}
	}
	if len(skipped) == 0 {
		delete(z.skipped, host)
	} else {
		z.skipped[host] = skipped
	}
}

func mergeKeys(a, b map[string]*node) map[string]bool {
	keys := make(map[string]bool, len(a)+len(b))
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	return keys
}

// install applies changed (name -> node, nil to remove), keeps empty
// non-terminals in step, moves the serial to index's, and journals the
// difference; it reports whether the serial changed.
func (z *Zone) install(changed map[string]*node, index uint64) bool {
	final := map[string]*node{}
	for name, n := range changed {
		if z.static[name] {
			continue // compile reported any host's claim on it
		}
		was, is := !z.names[name].empty(), !n.empty()
		if was != is {
			d := 1
			if !is {
				d = -1
			}
			for _, a := range z.countAncestors(name, d) {
				if _, ok := changed[a]; !ok {
					final[a] = z.names[a]
				}
			}
		}
		final[name] = n
	}
	for name, n := range final {
		if n.empty() {
			if z.below[name] > 0 || z.static[name] {
				final[name] = entNode
			} else {
				final[name] = nil
			}
		}
	}
	// Recompiling a host builds new nodes; keep the installed ones where the
	// records are the same, so that the serial rises only on real changes.
	for name, n := range final {
		if cur, ok := z.names[name]; ok == (n != nil) && (cur == n || sameRecords(cur, n)) {
			delete(final, name)
		}
	}
	serial := z.nextSerial(index, len(final) > 0)
	if serial == z.serial && z.hasSerial && len(final) == 0 {
		return false
	}
	var (
		delta    int64
		diff     = zoneDelta{from: z.serial, to: serial}
		journals = z.loaded // no secondary can hold a state from before the first load
	)
	for name, n := range final {
		was := z.names[name]
		delta += int64(n.size() - was.size())
		if journals {
			diff.addName(was, n)
		}
	}
	soa := z.newSOA(serial)
	z.mu.Lock()
	for name, n := range final {
		if n == nil {
			delete(z.names, name)
		} else {
			z.names[name] = n
		}
	}
	z.soa = []dns.RR{soa}
	if journals {
		z.journal.add(diff)
	}
	z.mu.Unlock()
	z.serial, z.hasSerial = serial, true
	z.records.Add(delta)
	return true
}

// nextSerial is the SOA serial of the zone once Consul's state at index is
// installed. The serial is a property of the data, not of the process:
// Consul's index of the state, in RFC 1982 arithmetic (modulo 2^32), so
// every server reading one Consul serves one serial for the same data, and
// a restarted server starts where it was. An index that is not newer than
// the serial (it went backwards: a restored snapshot, a stale read) never
// lowers the serial: it stays, or rises by one when the records changed,
// until Consul's index overtakes it again.
func (z *Zone) nextSerial(index uint64, changed bool) uint32 {
	s := uint32(index)
	switch {
	case !z.hasSerial, serialNewer(s, z.serial):
		return s
	case changed:
		return z.serial + 1
	}
	return z.serial
}

// countAncestors adds d to the count of names below each ancestor of name
// inside the zone (the apex excluded) and returns those ancestors.
func (z *Zone) countAncestors(name string, d int) []string {
	var ancestors []string
	for off, end := dns.NextLabel(name, 0); !end; off, end = dns.NextLabel(name, off) {
		a := name[off:]
		if a == z.origin || len(a) < len(z.origin) {
			break
		}
		z.below[a] += d
		if z.below[a] == 0 {
			delete(z.below, a)
		}
		ancestors = append(ancestors, a)
	}
	return ancestors
}

// MarkLoaded records the first full load: from now on the zone answers.
func (z *Zone) MarkLoaded() {
	z.mu.Lock()
	z.loaded = true
	z.mu.Unlock()
}

// sameRecords reports whether two nodes hold the same records and glue. A
// merged node mostly reuses its parts' records, so pointers usually decide.
func sameRecords(a, b *node) bool {
	if a.size() != b.size() {
		return false
	}
	if a.parts != nil && b.parts != nil {
		// Every record of a part names its host, so parts of different
		// hosts never hold the same records: compare them in place.
		return slices.EqualFunc(a.parts, b.parts, func(p, q *node) bool { return p == q || sameRecords(p, q) })
	}
	a, b = a.join(), b.join()
	if len(a.glue) != len(b.glue) {
		return false
	}
	same := func(x, y []dns.RR) bool {
		return slices.EqualFunc(x, y, func(p, q dns.RR) bool {
			return p == q || (dns.IsDuplicate(p, q) && p.Header().Ttl == q.Header().Ttl)
		})
	}
	return same(a.a, b.a) && same(a.aaaa, b.aaaa) && same(a.srv, b.srv) && same(a.txt, b.txt) &&
		same(a.ptr, b.ptr) && same(a.ns, b.ns) && same(a.glue, b.glue)
}

// lazyJoinMin is the size from which a shared name without addresses is
// joined on first use (see node.parts) rather than when it changes.
const lazyJoinMin = 256

// merge joins several hosts' parts of one shared name, in host order so the
// result does not depend on map order. Records of different hosts can only
// coincide as addresses (two hosts binding one address) and as DNS-SD
// service types in the browsing list; SRV and PTR records and glue name
// their host, so they are appended without a check: merging stays linear in
// the records of the name. A large name with neither (the zone-wide DNS-SD
// instance lists, a service's SRV names) is left to join on first use.
func merge(name string, parts map[string]*node) *node {
	browse := strings.HasPrefix(name, dnssdServices)
	hosts := make([]string, 0, len(parts))
	var size [6]int
	for h, p := range parts {
		hosts = append(hosts, h)
		size[0] += len(p.a)
		size[1] += len(p.aaaa)
		size[2] += len(p.srv)
		size[3] += len(p.ptr)
		size[4] += len(p.txt)
		size[5] += len(p.glue)
	}
	sort.Strings(hosts)
	if count := size[2] + size[3] + size[4]; !browse && size[0]+size[1] == 0 && count >= lazyJoinMin {
		m := &node{parts: make([]*node, len(hosts)), count: count}
		for i, h := range hosts {
			m.parts[i] = parts[h]
		}
		return m
	}
	m := &node{
		a: make([]dns.RR, 0, size[0]), aaaa: make([]dns.RR, 0, size[1]), srv: make([]dns.RR, 0, size[2]),
		ptr: make([]dns.RR, 0, size[3]), txt: make([]dns.RR, 0, size[4]), glue: make([]dns.RR, 0, size[5]),
	}
	addrs := map[netip.Addr]bool{}
	ptrs := map[string]bool{}
	for _, h := range hosts {
		p := parts[h]
		for _, rr := range p.a {
			if a, _ := netip.AddrFromSlice(rr.(*dns.A).A); !addrs[a] {
				addrs[a] = true
				m.a = append(m.a, rr)
			}
		}
		for _, rr := range p.aaaa {
			if a, _ := netip.AddrFromSlice(rr.(*dns.AAAA).AAAA); !addrs[a] {
				addrs[a] = true
				m.aaaa = append(m.aaaa, rr)
			}
		}
		if !browse {
			m.ptr = append(m.ptr, p.ptr...)
		}
		for _, rr := range p.ptr {
			if t := rr.(*dns.PTR).Ptr; browse && !ptrs[t] {
				ptrs[t] = true
				m.ptr = append(m.ptr, rr)
			}
		}
		m.srv = append(m.srv, p.srv...)
		m.txt = append(m.txt, p.txt...)
		m.glue = append(m.glue, p.glue...)
	}
	return m
}

func (n *node) add(rr dns.RR) {
	switch rr.(type) {
	case *dns.A:
		n.a = append(n.a, rr)
	case *dns.AAAA:
		n.aaaa = append(n.aaaa, rr)
	case *dns.SRV:
		n.srv = append(n.srv, rr)
	case *dns.TXT:
		n.txt = append(n.txt, rr)
	case *dns.PTR:
		n.ptr = append(n.ptr, rr)
	case *dns.NS:
		n.ns = append(n.ns, rr)
	}
}

// rrKey identifies a record within one owner name (all records of a node
// share owner, class and TTL), without the cost of formatting it.
type rrKey struct {
	rrtype             uint16
	glue               bool
	name               string // target of SRV and PTR; owner of glue
	addr               netip.Addr
	port, prio, weight uint16
}

func keyOf(rr dns.RR, glue bool) rrKey {
	k := rrKey{rrtype: rr.Header().Rrtype, glue: glue}
	switch rr := rr.(type) {
	case *dns.A:
		k.addr, _ = netip.AddrFromSlice(rr.A)
		k.name = rr.Hdr.Name
	case *dns.AAAA:
		k.addr, _ = netip.AddrFromSlice(rr.AAAA)
		k.name = rr.Hdr.Name
	case *dns.SRV:
		k.name, k.port, k.prio, k.weight = rr.Target, rr.Port, rr.Priority, rr.Weight
	case *dns.PTR:
		k.name = rr.Ptr
	}
	return k
}

// addOnce adds rr unless an identical record is already there: a port bound
// on both 0.0.0.0 and :: gives the same SRV twice, and instances on one host
// share its addresses. A node has one TXT record, so TXT needs no key beyond
// its type.
func (n *node) addOnce(rr dns.RR, seen map[rrKey]bool) {
	if k := keyOf(rr, false); !seen[k] {
		seen[k] = true
		n.add(rr)
	}
}

func (n *node) glueOnce(rr dns.RR, seen map[rrKey]bool) {
	if k := keyOf(rr, true); !seen[k] {
		seen[k] = true
		n.glue = append(n.glue, rr)
	}
}
