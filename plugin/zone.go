package berth

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/berthdns/berth/record"
	"github.com/miekg/dns"
)

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
	hosts    map[string]*contribution // what each host contributes
	shared   map[string][]part        // shared name -> its hosts' parts, by key
	below    map[string]int           // name -> number of names with records strictly below it
	static   map[string]bool          // names set by the Corefile, never overridden
	reserved map[string]bool          // the names the zone owns (zoneOwns), never claimable
	// interned is the shared names the batch being compiled has made that
	// the zone does not have yet (builder.intern); nil between batches.
	interned map[string]string
	policy   *record.Policy // who may publish which service names
	// allowLoopback publishes loopback addresses (the Corefile's
	// allow_loopback, for a single machine); set before the first update.
	allowLoopback bool
	// denied is the Corefile's deny_addresses: ranges never published;
	// set before the first update.
	denied  record.DenyList
	skip    func(reason, name, why string)           // reports a name that cannot be published
	dropped func(name string, p part, holder string) // also told of each claim merge drops (Check); nil: none
	// What has been reported through skip and still holds, so that a name
	// is reported once, not on every update of its host.
	skipped   map[string]map[skipKey]string // host -> names left out of its records
	conflicts map[string]string             // shared name -> the alias parts merge left out of it, reported
	holders   map[string]string             // a name several services claim -> its holder (holderChanges)
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
		names:     map[string]*node{},
		hosts:     map[string]*contribution{},
		shared:    map[string][]part{},
		below:     map[string]int{},
		static:    map[string]bool{},
		reserved:  map[string]bool{origin: true, record.HostsLabel + "." + origin: true},
		skip:      skip,
		skipped:   map[string]map[skipKey]string{},
		conflicts: map[string]string{},
		holders:   map[string]string{},
		policy:    record.OpenPolicy,
	}
	if len(nameservers) == 0 {
		nameservers = []NSRecord{{Name: "ns.dns." + origin}}
	}
	apex := &node{}
	for _, ns := range nameservers {
		name := strings.ToLower(dns.Fqdn(ns.Name))
		if record.InZone(name, origin) {
			z.reserved[name] = true
		}
		apex.add(&dns.NS{Hdr: z.hdr(origin, dns.TypeNS), Ns: name})
		glue := &node{}
		for _, a := range ns.Addrs {
			rr := z.addrRR(name, a)
			apex.addGlue(rr)
			glue.add(rr)
		}
		if z.zoneOwns(name) && name != origin && !glue.empty() { // in the zone (record.InZone, above)
			z.names[name] = glue
			z.static[name] = true
		}
	}
	z.names[origin] = apex
	z.static[origin] = true
	z.ns = apex
	for name := range z.static {
		z.countAncestors(name, +1, nil)
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

// zoneOwns reports whether name (lower case, fully qualified) is one the
// zone itself owns, which no service or alias may claim: the apex, the
// hosts' subtree's root (README.md#labels: "hosts" is reserved), and every
// nameserver name inside the zone, with or without addresses in the
// Corefile (the default ns.dns.<zone> when there is no ns line). The SOA's
// primary name is the first of these (newSOA). A resolver that trusts
// child NS data would follow a claimed nameserver name to the claimant.
func (z *Zone) zoneOwns(name string) bool { return z.reserved[name] }

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
		Ns:      z.ns.records(kindNS)[0].(*dns.NS).Ns,
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

// Result is what Lookup found, as plugin/file's Lookup says it.
type Result int

const (
	// Success: the name has records of the type asked.
	Success Result = iota
	// NoData: the name exists (perhaps as an empty non-terminal) without
	// records of that type.
	NoData
	// NameError: the name does not exist.
	NameError
	// NotLoaded: the zone has not had its first load; it knows nothing.
	NotLoaded
)

// Lookup finds qname (lower case, fully qualified, inside the zone). It
// returns the answer, shuffled when it holds several records; the authority
// section of a negative answer (the SOA alone; the slice is shared by every
// query and must not be modified); the additional section; and what it
// found. Only a shuffled answer costs an allocation.
func (z *Zone) Lookup(qname string, qtype uint16) (answer, ns, extra []dns.RR, res Result) {
	z.mu.RLock()
	n, exists := z.names[qname]
	soa, loaded := z.soa, z.loaded
	z.mu.RUnlock()
	switch {
	case !loaded:
		return nil, nil, nil, NotLoaded
	case !exists:
		return nil, soa, nil, NameError
	case qtype == dns.TypeSOA && qname == z.origin:
		return soa, nil, nil, Success
	}
	answer, extra = n.answer(qtype)
	if qname == z.origin && qtype == dns.TypeANY {
		answer = append([]dns.RR{soa[0]}, answer...)
	}
	if len(answer) == 0 {
		return nil, soa, nil, NoData // glue would be unrelated to the question
	}
	if len(answer) > 1 {
		answer = slices.Clone(answer)
		rand.Shuffle(len(answer), func(i, j int) { answer[i], answer[j] = answer[j], answer[i] })
	}
	return answer, nil, extra, Success
}

// Records is the number of resource records indexed.
func (z *Zone) Records() int64 { return z.records.Load() }

// MarkLoaded records the first full load: from now on the zone answers.
func (z *Zone) MarkLoaded() {
	z.mu.Lock()
	z.loaded = true
	z.mu.Unlock()
}
