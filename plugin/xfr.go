package berth

import (
	"sort"

	"github.com/coredns/coredns/plugin/transfer"
	"github.com/miekg/dns"
)

// Transfer implements transfer.Transferer: AXFR of the whole zone, and the
// IXFR fallback (only the SOA) when the secondary is current.
func (b *Berth) Transfer(zone string, serial uint32) (<-chan []dns.RR, error) {
	z, ok := b.zones[dns.CanonicalName(zone)]
	if !ok || !z.Loaded() {
		return nil, transfer.ErrNotAuthoritative
	}
	soa, records := z.snapshot()
	ch := make(chan []dns.RR)
	go func() {
		defer close(ch)
		if serial != 0 && !serialNewer(soa.Serial, serial) {
			ch <- []dns.RR{soa}
			return
		}
		ch <- []dns.RR{soa}
		for i := 0; i < len(records); i += 500 {
			ch <- records[i:min(i+500, len(records))]
		}
		ch <- []dns.RR{soa}
	}()
	return ch, nil
}

// serialNewer compares SOA serials in RFC 1982 arithmetic.
func serialNewer(a, b uint32) bool { return a != b && int32(a-b) > 0 }

// snapshot returns the SOA and every other record of the zone, apex first
// and then by name, read under one lock so that they belong together.
func (z *Zone) snapshot() (*dns.SOA, []dns.RR) {
	z.mu.RLock()
	soa := z.soa[0].(*dns.SOA)
	names := make([]string, 0, len(z.names))
	nodes := make(map[string]*node, len(z.names))
	for name, n := range z.names {
		if !n.empty() {
			names = append(names, name)
			nodes[name] = n
		}
	}
	z.mu.RUnlock()
	sort.Slice(names, func(i, j int) bool {
		if (names[i] == z.origin) != (names[j] == z.origin) {
			return names[i] == z.origin
		}
		return names[i] < names[j]
	})
	var records []dns.RR
	for _, name := range names {
		records = append(records, nodes[name].all()...)
	}
	return soa, records
}
