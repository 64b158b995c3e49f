package berth

import (
	"net/netip"
	"slices"
	"sync"

	"github.com/miekg/dns"
)

// Kinds of record a node holds, in the order of its records: a node keeps
// one slice, grouped by kind, so that it costs one small object and one
// backing array however many types it has (the zone holds one node per
// name, and most names have two or three records).
const (
	kindNS = iota
	kindA
	kindAAAA
	kindSRV
	kindTXT
	kindPTR
	kinds
)

func kindOf(rrtype uint16) int {
	switch rrtype {
	case dns.TypeNS:
		return kindNS
	case dns.TypeA:
		return kindA
	case dns.TypeAAAA:
		return kindAAAA
	case dns.TypeSRV:
		return kindSRV
	case dns.TypeTXT:
		return kindTXT
	case dns.TypePTR:
		return kindPTR
	}
	return -1
}

// node holds the records of one owner name, built once when the data
// changes and shared read-only by every query. A node with no records is an
// empty non-terminal.
type node struct {
	// rrs holds the records, grouped by kind (kindNS first), then the glue:
	// A/AAAA of SRV and NS targets, for the additional section. end[k] is
	// where kind k's records end; the glue runs from end[kinds-1].
	rrs []dns.RR
	end [kinds]uint32

	// A large name that many hosts share (a DNS-SD service type lists every
	// instance of the zone) keeps its hosts' parts, in host order, and joins
	// their records on first use rather than at every change of any host:
	// a change then costs the changed host's parts, not the zone's.
	lazy *lazyJoin
}

// lazyJoin is a lazily joined node's parts.
type lazyJoin struct {
	parts  []part // never modified: update replaces the slice
	count  int    // records in parts
	joined sync.Once
}

// join puts a lazily joined node's records in place; every reader of rrs
// and end calls it first.
func (n *node) join() *node {
	if n.lazy != nil {
		n.lazy.joined.Do(func() {
			n.gather(n.lazy.parts, nil)
		})
	}
	return n
}

// gather fills the empty node n with the records of parts, kind by kind and
// in the parts' order, then their glue; keep, if not nil, says which
// records of a kind go in.
func (n *node) gather(parts []part, keep func(kind int, rr dns.RR) bool) {
	size := 0
	for _, p := range parts {
		size += len(p.n.rrs)
	}
	n.rrs = make([]dns.RR, 0, size)
	for k := range kinds {
		for _, p := range parts {
			for _, rr := range p.n.records(k) {
				if keep == nil || keep(k, rr) {
					n.rrs = append(n.rrs, rr)
				}
			}
		}
		n.end[k] = uint32(len(n.rrs))
	}
	for _, p := range parts {
		n.rrs = append(n.rrs, p.n.glue()...)
	}
}

// records returns the records of kind k. Like every slice a node hands
// out, it has no room to append into: queries share it.
func (n *node) records(k int) []dns.RR {
	start := uint32(0)
	if k > 0 {
		start = n.end[k-1]
	}
	return n.rrs[start:n.end[k]:n.end[k]]
}

func (n *node) glue() []dns.RR {
	return n.rrs[n.end[kinds-1]:len(n.rrs):len(n.rrs)]
}

func (n *node) empty() bool {
	return n.size() == 0
}

func (n *node) size() int {
	switch {
	case n == nil:
		return 0
	case n.lazy != nil:
		return n.lazy.count
	}
	return int(n.end[kinds-1])
}

// answer returns the records of qtype and their additional records.
func (n *node) answer(qtype uint16) (answer, extra []dns.RR) {
	n.join()
	switch qtype {
	case dns.TypeSRV:
		return n.records(kindSRV), n.glue()
	case dns.TypeNS:
		return n.records(kindNS), n.glue()
	case dns.TypeANY:
		return n.all(), nil
	}
	if k := kindOf(qtype); k >= 0 {
		return n.records(k), nil
	}
	return nil, nil
}

// all returns every record but the glue: NS, A, AAAA, SRV, TXT, PTR.
func (n *node) all() []dns.RR {
	n.join()
	return n.rrs[:n.end[kinds-1]:n.end[kinds-1]]
}

// add puts rr after the records of its kind; a node is built by one
// goroutine before any query sees it.
func (n *node) add(rr dns.RR) {
	k := kindOf(rr.Header().Rrtype)
	if k < 0 {
		return
	}
	n.rrs = slices.Insert(n.rrs, int(n.end[k]), rr)
	for ; k < kinds; k++ {
		n.end[k]++
	}
}

func (n *node) addGlue(rr dns.RR) {
	n.rrs = append(n.rrs, rr)
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

// entNode stands for every empty non-terminal.
var entNode = &node{}
