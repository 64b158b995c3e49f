package berth

import (
	"sort"

	"github.com/coredns/coredns/plugin/transfer"
	"github.com/miekg/dns"
)

// Transfer implements transfer.Transferer. An IXFR from a serial the
// journal still holds gets the differences since (RFC 1995); one from the
// current serial or a newer one only the SOA; anything else, and an IXFR
// whose differences outweigh half the zone, the whole zone (AXFR).
func (b *Berth) Transfer(zone string, serial uint32) (<-chan []dns.RR, error) {
	z, ok := b.zones[dns.CanonicalName(zone)]
	if !ok || !z.Loaded() {
		return nil, transfer.ErrNotAuthoritative
	}
	ch := make(chan []dns.RR)
	if serial != 0 {
		soa, deltas, current := z.ixfr(serial)
		if current || deltas != nil {
			go func() {
				defer close(ch)
				ch <- []dns.RR{soa}
				if current {
					return
				}
				for _, d := range deltas {
					ch <- append([]dns.RR{z.newSOA(d.from)}, d.del...)
					ch <- append([]dns.RR{z.newSOA(d.to)}, d.add...)
				}
				ch <- []dns.RR{soa}
			}()
			transfers.WithLabelValues(z.origin, "ixfr").Inc()
			return ch, nil
		}
	}
	soa, records := z.snapshot()
	transfers.WithLabelValues(z.origin, "axfr").Inc()
	go func() {
		defer close(ch)
		ch <- []dns.RR{soa}
		for i := 0; i < len(records); i += 500 {
			ch <- records[i:min(i+500, len(records))]
		}
		ch <- []dns.RR{soa}
	}()
	return ch, nil
}

// ixfr returns, for a secondary at serial, the current SOA and either
// current (it is up to date, or ahead: after a restore, say) or the
// differences that bring it up to date; neither means it needs the whole
// zone.
func (z *Zone) ixfr(serial uint32) (soa *dns.SOA, deltas []zoneDelta, current bool) {
	z.mu.RLock()
	defer z.mu.RUnlock()
	soa = z.soa[0].(*dns.SOA)
	if !serialNewer(soa.Serial, serial) {
		return soa, nil, true
	}
	deltas, ok := z.journal.since(serial)
	if !ok {
		return soa, nil, false
	}
	size := 0
	for _, d := range deltas {
		size += d.size() + 2
	}
	if size > int(z.records.Load())/2 {
		return soa, nil, false
	}
	return soa, deltas, false
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
