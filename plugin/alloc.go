package berth

import (
	"net/netip"

	"github.com/miekg/dns"
)

// hostAlloc makes one host's nodes and records in a few arrays, one per
// type, rather than an object each. The index is long-lived: every garbage
// collection marks all of it, and marking millions of small objects cost
// about three times what marking the same records in arrays does (measured
// in bench/analysis.md); at a million instances that marking is what slowed
// queries. An array lives as long as any element in it, so a host's arrays
// must go together when it changes: install replaces every node of a
// changed host, even one whose records are the same, and the journal keeps
// copies of the records it holds.
type hostAlloc struct {
	nodes slab[node]
	rrs   slab[dns.RR] // the nodes' record arrays
	a     slab[dns.A]
	aaaa  slab[dns.AAAA]
	ips   slab[byte] // the A and AAAA records' addresses
	srv   slab[dns.SRV]
	txt   slab[dns.TXT]
	strs  slab[string] // the TXT records' strings
	ptr   slab[dns.PTR]
}

// txtStrings is the most strings a container's TXT record has: service,
// id, image, health and tags.
const txtStrings = 5

// The room compile makes in a node for its records, by kind of name; a
// node that needs more grows an array of its own.
const (
	serviceRoom  = 3 // a service's own name: address, SRV, glue
	srvRoom      = 2 // a name by port or by port name: SRV, glue
	instanceRoom = 3 // a DNS-SD instance: TXT, SRV, glue
)

// containerRoom is the room of a container's name with ports ports:
// addresses, TXT, SRV records, glue.
func containerRoom(ports int) int { return 2 + 2*ports }

// newHostAlloc sizes each type's array for what compiling data takes at
// most (before duplicates are dropped): exact for a container that
// publishes its service, more for one that does not, so a host's records
// usually fit one array of each type. Aliases' nodes, and the zone-wide
// DNS-SD lists that grow with the host's instances, are made apart
// (builder.alias, builder.listNode).
func newHostAlloc(data *hostDocs) *hostAlloc {
	h := &hostAlloc{}
	addrs := func(a netip.Addr, n int) {
		if a.Is4() {
			h.a.need += n
			h.ips.need += net4 * n
		} else {
			h.aaaa.need += n
			h.ips.need += net6 * n
		}
	}
	h.nodes.need, h.rrs.need = 1, len(data.Host.Addrs)
	for _, a := range data.Host.Addrs {
		addrs(a, 1)
	}
	// A host's replicas of one service share the service's names (and
	// have the same ports, or the arrays grow).
	services := make(map[string]bool, len(data.Containers))
	for _, c := range data.Containers {
		// The container's name: addresses, TXT, SRV records and glue.
		h.nodes.need++
		h.rrs.need += containerRoom(len(c.Ports))
		h.txt.need++
		h.strs.need += txtStrings
		// A node of one of the service's names: its own, by port and by
		// name.
		first := !services[c.Service]
		services[c.Service] = true
		sharedNode := func(rrs int) {
			if first {
				h.nodes.need++
				h.rrs.need += rrs
			}
		}
		sharedNode(serviceRoom)
		for _, p := range c.Ports {
			// The container's, the service's and each alias's address;
			// the container's, the service's and by port SRV records,
			// and each alias's and its by port one.
			addrs(p.Addr, 2+len(c.Aliases))
			h.srv.need += 3 + 2*len(c.Aliases)
			sharedNode(srvRoom)
			if p.Name == "" {
				continue
			}
			// By name; the DNS-SD instance (a node, its TXT and SRV
			// records and glue) and the two PTRs to it; each alias's by
			// name.
			h.srv.need += 2 + len(c.Aliases)
			h.txt.need++
			h.ptr.need += 2
			h.nodes.need++
			h.rrs.need += instanceRoom
			sharedNode(srvRoom)
		}
	}
	return h
}

// The sizes of an IPv4 and an IPv6 address.
const (
	net4 = 4
	net6 = 16
)

// node makes a node with room for size records.
func (h *hostAlloc) node(size int) *node {
	return h.nodes.take(node{rrs: h.rrs.array(size)})
}

func (h *hostAlloc) addr(hdr dns.RR_Header, a netip.Addr) dns.RR {
	if a.Is4() {
		ip := a.As4()
		hdr.Rrtype = dns.TypeA
		return h.a.take(dns.A{Hdr: hdr, A: append(h.ips.array(net4), ip[:]...)})
	}
	ip := a.As16()
	hdr.Rrtype = dns.TypeAAAA
	return h.aaaa.take(dns.AAAA{Hdr: hdr, AAAA: append(h.ips.array(net6), ip[:]...)})
}

func (h *hostAlloc) srvRR(rr dns.SRV) *dns.SRV { return h.srv.take(rr) }

func (h *hostAlloc) ptrRR(hdr dns.RR_Header, ptr string) *dns.PTR {
	return h.ptr.take(dns.PTR{Hdr: hdr, Ptr: ptr})
}

func (h *hostAlloc) txtRR(hdr dns.RR_Header, txt []string) *dns.TXT {
	return h.txt.take(dns.TXT{Hdr: hdr, Txt: txt})
}

// txtStrings returns an empty slice with room for a TXT record's strings.
func (h *hostAlloc) txtStrings() []string { return h.strs.array(txtStrings) }

// give takes back rr, the last record of its type made, which addOnce
// found to be a duplicate, to be made again.
func (h *hostAlloc) give(rr dns.RR) {
	switch rr := rr.(type) {
	case *dns.A:
		if h.a.give(rr) {
			h.ips.giveArray(rr.A)
		}
	case *dns.AAAA:
		if h.aaaa.give(rr) {
			h.ips.giveArray(rr.AAAA)
		}
	case *dns.SRV:
		h.srv.give(rr)
	case *dns.TXT:
		h.txt.give(rr)
	case *dns.PTR:
		h.ptr.give(rr)
	}
}

// slab hands out the elements of arrays of T, each made with room for
// what the host may still take (need).
type slab[T any] struct {
	free []T // the current array: taken elements, then room
	need int
}

func (s *slab[T]) room(n int) {
	if cap(s.free)-len(s.free) < n {
		s.free = make([]T, 0, max(s.need, n))
	}
	s.need -= n
}

// take puts v in the next element and returns it.
func (s *slab[T]) take(v T) *T {
	s.room(1)
	s.free = append(s.free, v)
	return &s.free[len(s.free)-1]
}

// array returns an empty slice with room for n elements, which append
// fills without touching the elements after them.
func (s *slab[T]) array(n int) []T {
	s.room(n)
	at := len(s.free)
	s.free = s.free[:at+n]
	return s.free[at : at : at+n]
}

// give takes back p if it is the element take returned last.
func (s *slab[T]) give(p *T) bool {
	if n := len(s.free); n > 0 && &s.free[n-1] == p {
		s.free = s.free[:n-1]
		s.need++
		return true
	}
	return false
}

// giveArray takes back a if it is the slice array returned last.
func (s *slab[T]) giveArray(a []T) {
	if n, m := len(s.free), cap(a); m > 0 && n >= m && &s.free[n-m] == &a[:1][0] {
		s.free = s.free[:n-m]
		s.need += m
	}
}
