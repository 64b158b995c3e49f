package berth

import (
	"net/netip"
	"slices"
	"sync"

	"github.com/miekg/dns"
)

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
