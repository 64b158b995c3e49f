package berth

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/berthdns/berth/record"
	"github.com/miekg/dns"
)

// hostDocs is one host's documents as the watcher read them from Consul,
// already decoded and validated.
type hostDocs struct {
	Host       *record.Host
	Containers []*record.Container // sorted by ID
}

// contribution is what one host adds to the zone: names that only it has,
// its parts of names that several hosts share (services, DNS-SD), and its
// parts of names that are aliases of its services.
type contribution struct {
	owned   map[string]*node
	shared  map[string]*node
	aliases map[string]aliasPart
}

// aliasPart is a host's records under an alias name: those of service.
type aliasPart struct {
	service string
	n       *node
}

// partKey is the key of a host's part of a shared name: the host, or for
// an alias the host and the service it stands for, so that merge can tell
// a service's own claim on a name from an alias's.
func partKey(host, aliasOf string) string {
	if aliasOf == "" {
		return host
	}
	return host + "\x00" + aliasOf
}

// update replaces what each host contributes to the zone with its data
// (nil removes the host), as Consul held it at index. Every name shared by
// several hosts (a service, a DNS-SD list) that the batch touches is merged
// once, and all changes are installed together under the write lock with
// the serial of index (see nextSerial). It reports whether the serial
// changed. Only one goroutine may call update and MarkLoaded.
func (z *Zone) update(updates map[string]*hostDocs, index uint64) bool {
	changed := map[string]*node{}
	touched := map[string]bool{}
	for host, data := range updates {
		old := z.hosts[host]
		if old == nil {
			old = &contribution{}
		}
		cur, skipped := z.compile(data)
		z.reportSkipped(host, skipped)
		if data == nil || (len(cur.owned) == 0 && len(cur.shared) == 0 && len(cur.aliases) == 0) {
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
			z.setPart(name, host, cur.shared[name])
		}
		for name, a := range old.aliases {
			touched[name] = true
			delete(z.shared[name], partKey(host, a.service))
		}
		for name, a := range cur.aliases {
			touched[name] = true
			z.setPart(name, partKey(host, a.service), a.n)
		}
	}
	for name := range touched {
		if parts := z.shared[name]; len(parts) > 0 {
			n, dropped := merge(name, parts)
			changed[name] = n
			z.reportConflicts(name, dropped)
		} else {
			delete(z.shared, name)
			z.reportConflicts(name, nil)
			changed[name] = nil
		}
	}
	return z.install(changed, index)
}

// setPart sets (n nil: removes) the part under key of the shared name.
func (z *Zone) setPart(name, key string, n *node) {
	parts := z.shared[name]
	if n == nil {
		delete(parts, key)
		return
	}
	if parts == nil {
		parts = map[string]*node{}
		z.shared[name] = parts
	}
	parts[key] = n
}

// reportConflicts reports the alias parts merge left out of name, once
// while the same ones are left out.
func (z *Zone) reportConflicts(name string, dropped []string) {
	sig := strings.Join(dropped, " ")
	if z.conflicts[name] == sig {
		return
	}
	if sig == "" {
		delete(z.conflicts, name)
		return
	}
	z.conflicts[name] = sig
	for _, key := range dropped {
		host, service, _ := strings.Cut(key, "\x00")
		z.skip("conflict", name, fmt.Sprintf("host %s's alias of %s: the name is a service, or another service's alias, already", host, service))
	}
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
//
// A name some service claims is that service's: aliases of other services
// on it are dropped; a name only aliases claim goes to the first service
// (by name) they stand for. merge returns the keys of the parts it dropped.
func merge(name string, parts map[string]*node) (*node, []string) {
	browse := strings.HasPrefix(name, dnssdServices)
	hosts := make([]string, 0, len(parts))
	var dropped []string
	service, aliasOnly := "", true // the service the name's alias parts may stand for
	for key := range parts {
		_, aliasOf, alias := strings.Cut(key, "\x00")
		switch {
		case !alias:
			aliasOnly = false
		case service == "" || aliasOf < service:
			service = aliasOf
		}
	}
	for key := range parts {
		if _, aliasOf, alias := strings.Cut(key, "\x00"); alias && (!aliasOnly || aliasOf != service) {
			dropped = append(dropped, key)
			continue
		}
		hosts = append(hosts, key)
	}
	slices.Sort(dropped)
	var size struct{ a, aaaa, srv, ptr, txt, glue int }
	for _, h := range hosts {
		p := parts[h]
		size.a += len(p.a)
		size.aaaa += len(p.aaaa)
		size.srv += len(p.srv)
		size.ptr += len(p.ptr)
		size.txt += len(p.txt)
		size.glue += len(p.glue)
	}
	sort.Strings(hosts)
	if count := size.srv + size.ptr + size.txt; !browse && size.a+size.aaaa == 0 && count >= lazyJoinMin {
		m := &node{parts: make([]*node, len(hosts)), count: count}
		for i, h := range hosts {
			m.parts[i] = parts[h]
		}
		return m, dropped
	}
	m := &node{
		a: make([]dns.RR, 0, size.a), aaaa: make([]dns.RR, 0, size.aaaa), srv: make([]dns.RR, 0, size.srv),
		ptr: make([]dns.RR, 0, size.ptr), txt: make([]dns.RR, 0, size.txt), glue: make([]dns.RR, 0, size.glue),
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
	return m, dropped
}
