package berth

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/berthdns/berth/record"
	"github.com/miekg/dns"
)

// hostDocs is one host's documents as the watcher read them from Consul,
// already decoded and validated.
type hostDocs struct {
	Host       *record.Host
	Containers []*record.Container // sorted by ID
	// Created is each container document's CreateIndex in Consul, by
	// position in Containers: when its claims were first made (merge).
	// nil: all 0.
	Created []uint64
}

// created is the CreateIndex of the i-th container's document, or 0.
func (d *hostDocs) created(i int) uint64 {
	if i < len(d.Created) {
		return d.Created[i]
	}
	return 0
}

// compiled is what one host adds to the zone, as compile builds it: names
// that only it has, its parts of names that several hosts share (services,
// DNS-SD), and its parts of names that are aliases of its services.
type compiled struct {
	owned   map[string]*node
	shared  map[string]*node
	claims  map[string]*claim // the shared names that are a service's own: its claim
	aliases map[aliasName]aliasPart
}

// aliasPart is a host's records under an alias name, for its claim's
// service.
type aliasPart struct {
	n     *node
	claim *claim
}

// claim is one host's claim of a name, root, for a service: as the
// service's own name, or as an alias of it; since is the CreateIndex of
// the oldest container document making it (merge). The claim covers the
// names below root that the service's ports make (_<P>._<proto>.root,
// _<name>._<proto>.root): each goes to root's holder.
type claim struct {
	root    string
	service string
	alias   bool
	since   uint64
}

// contribution is what the zone keeps of a host's compiled records: only
// their names, to take them out at the host's next update. The nodes are
// in names (owned) and shared (parts); the names are the keys' strings.
type contribution struct {
	owned, shared []string
	aliases       []aliasName
}

// aliasName is a name a host has as an alias of service.
type aliasName struct{ name, service string }

func (c *compiled) empty() bool {
	return len(c.owned) == 0 && len(c.shared) == 0 && len(c.aliases) == 0
}

func (c *compiled) names() *contribution {
	k := &contribution{owned: make([]string, 0, len(c.owned)), shared: make([]string, 0, len(c.shared)),
		aliases: make([]aliasName, 0, len(c.aliases))}
	for name := range c.owned {
		k.owned = append(k.owned, name)
	}
	for name := range c.shared {
		k.shared = append(k.shared, name)
	}
	for a := range c.aliases {
		k.aliases = append(k.aliases, a)
	}
	return k
}

// part is one host's part of a shared name, under its partKey, and the
// claim it makes (nil for a DNS-SD list, which no service claims). A
// shared name's parts are kept sorted by key, in a slice that is never
// modified once made: a lazily joined node holds it.
type part struct {
	key   string
	n     *node
	claim *claim
}

// host is the host whose part p is.
func (p part) host() string {
	host, _, _ := strings.Cut(p.key, "\x00")
	return host
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
	// About three names per container change: its own, its DNS-SD
	// instance's, and its share of its service's; sized once, as a first
	// load makes them all.
	size := 0
	for host, data := range updates {
		if old := z.hosts[host]; old != nil {
			size += len(old.owned) + len(old.shared)
		}
		if data != nil {
			size += 1 + 3*len(data.Containers)
		}
	}
	changed := make(map[string]*node, size)
	// A service's names are shared by the hosts of its instances: about
	// one shared name per container is new to the batch.
	edits := make(map[string][]part, size/3) // shared name -> its parts that change (n nil: removed), in order
	z.interned = make(map[string]string, size/3)
	defer func() { z.interned = nil }()
	for host, data := range updates {
		old := z.hosts[host]
		if old == nil {
			old = &contribution{}
		}
		cur, skipped := z.compile(data)
		z.reportSkipped(host, skipped)
		if data == nil || cur.empty() {
			delete(z.hosts, host)
		} else {
			z.hosts[host] = cur.names()
		}
		// Owned names contain the host's own label: no other host has them.
		for _, name := range old.owned {
			changed[name] = nil
		}
		for name, n := range cur.owned {
			changed[name] = n
		}
		for _, name := range old.shared {
			if cur.shared[name] == nil {
				edits[name] = append(edits[name], part{host, nil, nil})
			}
		}
		for name, n := range cur.shared {
			edits[name] = append(edits[name], part{host, n, cur.claims[name]})
		}
		for _, a := range old.aliases {
			if _, ok := cur.aliases[a]; !ok {
				edits[a.name] = append(edits[a.name], part{partKey(host, a.service), nil, nil})
			}
		}
		for a, p := range cur.aliases {
			edits[a.name] = append(edits[a.name], part{partKey(host, a.service), p.n, p.claim})
		}
	}
	if len(edits) > len(z.shared) {
		// A first load: size the map once.
		shared := make(map[string][]part, len(z.shared)+len(edits))
		maps.Copy(shared, z.shared)
		z.shared = shared
	}
	for name, e := range edits {
		if parts := editParts(z.shared[name], e); len(parts) > 0 {
			z.shared[name] = parts
		} else {
			delete(z.shared, name)
		}
	}
	// A claimed name whose holder changed hands its names below it over
	// too, those the batch did not touch included.
	for _, root := range z.holderChanges(edits) {
		for _, name := range z.claimedBelow(root) {
			if _, ok := edits[name]; !ok {
				edits[name] = nil
			}
		}
	}
	for name := range edits {
		if parts := z.shared[name]; len(parts) > 0 {
			n, dropped, holder := merge(name, parts, z.holderFor(name, parts))
			changed[name] = n
			z.reportConflicts(name, dropped, holder)
		} else {
			z.reportConflicts(name, nil, "")
			changed[name] = nil
		}
	}
	return z.install(changed, index)
}

// holderFor is the service that holds name, whose parts are parts: its
// claims' root's holder (holderOf), so that the names below a claimed name
// go with it; a root's own.
func (z *Zone) holderFor(name string, parts []part) string {
	for _, p := range parts {
		if p.claim != nil && p.claim.root != name {
			if rp := z.shared[p.claim.root]; len(rp) > 0 {
				return holderOf(rp)
			}
			break
		}
	}
	return holderOf(parts)
}

// holderChanges updates the holders of the claimed names in edits that
// several services claim (z.holders) and returns those whose holder
// changed: the names below them follow (holderFor).
func (z *Zone) holderChanges(edits map[string][]part) []string {
	var out []string
	for name := range edits {
		parts := z.shared[name]
		holder, contested := "", false
		for _, p := range parts {
			if p.claim == nil || p.claim.root != name {
				continue
			}
			if holder == "" {
				holder = p.claim.service
			} else if p.claim.service != holder {
				contested = true
			}
		}
		if contested {
			holder = holderOf(parts)
		} else {
			holder = ""
		}
		if z.holders[name] == holder {
			continue
		}
		if holder == "" {
			delete(z.holders, name)
		} else {
			z.holders[name] = holder
		}
		out = append(out, name)
	}
	return out
}

// claimedBelow are the claimed names under root (_<P>._<proto>.root and the
// like) that root's claimants have: found through their hosts'
// contributions, as only a change of root's holder asks for them.
func (z *Zone) claimedBelow(root string) []string {
	suffix := "." + root
	var out []string
	seen := map[string]bool{}
	add := func(name string) {
		if !seen[name] && strings.HasSuffix(name, suffix) {
			seen[name] = true
			out = append(out, name)
		}
	}
	for _, p := range z.shared[root] {
		c := z.hosts[p.host()]
		if c == nil {
			continue
		}
		for _, name := range c.shared {
			add(name)
		}
		for _, a := range c.aliases {
			add(a.name)
		}
	}
	return out
}

// editParts returns a new slice of parts, sorted by key, with edits made
// (a part of nil node removes its key; of one key, the last edit counts):
// linear in the parts, so a batch that touches a name many times (the first
// load, every host adding to a DNS-SD list) makes it once.
func editParts(parts, edits []part) []part {
	slices.SortStableFunc(edits, func(a, b part) int { return strings.Compare(a.key, b.key) })
	out := make([]part, 0, len(parts)+len(edits))
	i := 0
	for j, e := range edits {
		if j+1 < len(edits) && edits[j+1].key == e.key {
			continue
		}
		for i < len(parts) && parts[i].key < e.key {
			out = append(out, parts[i])
			i++
		}
		if i < len(parts) && parts[i].key == e.key {
			i++
		}
		if e.n != nil {
			out = append(out, e)
		}
	}
	return append(out, parts[i:]...)
}

// reportConflicts reports the claims merge left out of name, once while
// the same ones are left out; holder is the service that holds it.
func (z *Zone) reportConflicts(name string, dropped []part, holder string) {
	var sig strings.Builder
	for _, p := range dropped {
		sig.WriteString(p.key + " ")
	}
	if z.conflicts[name] == sig.String() {
		return
	}
	if sig.Len() == 0 {
		delete(z.conflicts, name)
		return
	}
	z.conflicts[name] = sig.String()
	for _, p := range dropped {
		z.skip("conflict", name, droppedWhy(name, p, holder))
		if z.dropped != nil {
			z.dropped(name, p, holder)
		}
	}
}

// droppedWhy says why merge left p's claim out of name.
func droppedWhy(name string, p part, holder string) string {
	what := "service " + p.claim.service
	if p.claim.alias {
		what = "alias of " + p.claim.service
	}
	return fmt.Sprintf("host %s's %s: %s is held by %s, whose claim is older (or, as old, a service's own name, or first by name)",
		p.host(), what, name, holder)
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

// install applies final (name -> node, nil to remove; install changes the
// map: the first load's is the size of the zone), keeps empty
// non-terminals in step, moves the serial to index's, and journals the
// difference; it reports whether the serial changed.
func (z *Zone) install(final map[string]*node, index uint64) bool {
	var ancestors []string
	for name, n := range final {
		if z.static[name] {
			delete(final, name) // compile reported any host's claim on it
			continue
		}
		was, is := !z.names[name].empty(), !n.empty()
		if was != is {
			d := 1
			if !is {
				d = -1
			}
			// An ancestor added here may come up later in this loop: as
			// its node is the installed one, it changes nothing.
			ancestors = z.countAncestors(name, d, ancestors[:0])
			for _, a := range ancestors {
				if _, ok := final[a]; !ok {
					final[a] = z.names[a]
				}
			}
		}
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
	// Recompiling a host builds new nodes. A name whose records are the
	// same is no change (the serial rises only on real changes), but gets
	// its new node all the same: the installed one's records are in the
	// host's old arrays, which it would keep alive (hostAlloc). A lazily
	// joined node so replaced joins again at its next query.
	var same map[string]*node
	for name, n := range final {
		if cur, ok := z.names[name]; ok == (n != nil) && (cur == n || sameRecords(cur, n)) {
			if cur != n {
				if same == nil {
					same = map[string]*node{}
				}
				same[name] = n
			}
			delete(final, name)
		}
	}
	serial := z.nextSerial(index, len(final) > 0)
	if serial == z.serial && z.hasSerial && len(final) == 0 {
		if same != nil {
			z.mu.Lock()
			setNames(z.names, same)
			z.mu.Unlock()
		}
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
	// A change much larger than the zone (the first load) fills a new map,
	// sized once and without the lock; a smaller one changes it in place.
	var names map[string]*node
	if len(final) > len(z.names) {
		names = make(map[string]*node, len(z.names)+len(final))
		maps.Copy(names, z.names)
		setNames(names, final)
	}
	z.mu.Lock()
	if names != nil {
		z.names = names
	} else {
		setNames(z.names, final)
	}
	setNames(z.names, same)
	z.soa = []dns.RR{soa}
	if journals {
		z.journal.add(diff, int(z.records.Load()+delta))
	}
	z.mu.Unlock()
	z.serial, z.hasSerial = serial, true
	z.records.Add(delta)
	return true
}

func setNames(names, final map[string]*node) {
	for name, n := range final {
		if n == nil {
			delete(names, name)
		} else {
			names[name] = n
		}
	}
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
// inside the zone (the apex excluded) and appends those ancestors to buf.
func (z *Zone) countAncestors(name string, d int, buf []string) []string {
	for off, end := dns.NextLabel(name, 0); !end; off, end = dns.NextLabel(name, off) {
		a := name[off:]
		if a == z.origin || len(a) < len(z.origin) {
			break
		}
		z.below[a] += d
		if z.below[a] == 0 {
			delete(z.below, a)
		}
		buf = append(buf, a)
	}
	return buf
}

// sameRecords reports whether two nodes hold the same records and glue. A
// merged node mostly reuses its parts' records, so pointers usually decide.
func sameRecords(a, b *node) bool {
	if a.size() != b.size() {
		return false
	}
	if a.lazy != nil && b.lazy != nil {
		// Every record of a part names its host, so parts of different
		// hosts never hold the same records: compare them in place.
		return slices.EqualFunc(a.lazy.parts, b.lazy.parts, func(p, q part) bool { return p.n == q.n || sameRecords(p.n, q.n) })
	}
	a, b = a.join(), b.join()
	// Records are grouped by kind, so equal ends and equal records in
	// order are equal records of each type, and equal glue.
	return a.end == b.end && slices.EqualFunc(a.rrs, b.rrs, func(p, q dns.RR) bool {
		return p == q || (dns.IsDuplicate(p, q) && p.Header().Ttl == q.Header().Ttl)
	})
}

// lazyJoinMin is the size from which a shared name without addresses is
// joined on first use (see node.lazy) rather than when it changes.
const lazyJoinMin = 256

// merge joins several hosts' parts of one shared name, in key (host) order
// so the result does not depend on map order. Records of different hosts
// can only coincide as addresses (two hosts binding one address) and as
// DNS-SD service types in the browsing list; SRV and PTR records and glue
// name their host, so they are taken without a check: merging stays linear
// in the records of the name. A large name with neither (the zone-wide
// DNS-SD instance lists, a service's SRV names) is left to join on first
// use; a name of one part is that part.
//
// A name several services claim (as their own name or as an alias) is the
// holder's (holderFor); the other services' parts are dropped. merge
// returns the parts it dropped and the holder ("" for a name no service
// claims).
func merge(name string, parts []part, holder string) (*node, []part, string) {
	browse := strings.HasPrefix(name, dnssdServices)
	var dropped []part
	kept := parts
	for i, p := range parts {
		if p.claim != nil && p.claim.service != holder {
			if dropped == nil {
				kept = parts[:i:i]
			}
			dropped = append(dropped, p)
			continue
		}
		if dropped != nil {
			kept = append(kept, p)
		}
	}
	if len(kept) == 0 {
		return nil, dropped, holder
	}
	if len(kept) == 1 {
		// Within one host's part, compile left out duplicates already.
		return kept[0].n, dropped, holder
	}
	var addrs, count int
	for _, p := range kept {
		addrs += len(p.n.records(kindA)) + len(p.n.records(kindAAAA))
		count += p.n.size()
	}
	if !browse && addrs == 0 && count >= lazyJoinMin {
		return &node{lazy: &lazyJoin{parts: kept, count: count}}, dropped, holder
	}
	var seenAddr map[netip.Addr]bool
	var seenPTR map[string]bool
	m := &node{}
	m.gather(kept, func(kind int, rr dns.RR) bool {
		var a netip.Addr
		switch {
		case kind == kindA:
			a, _ = netip.AddrFromSlice(rr.(*dns.A).A)
		case kind == kindAAAA:
			a, _ = netip.AddrFromSlice(rr.(*dns.AAAA).AAAA)
		case kind == kindPTR && browse:
			if seenPTR == nil {
				seenPTR = map[string]bool{}
			}
			t := rr.(*dns.PTR).Ptr
			if seenPTR[t] {
				return false
			}
			seenPTR[t] = true
			return true
		default:
			return true
		}
		if seenAddr == nil {
			seenAddr = map[netip.Addr]bool{}
		}
		if seenAddr[a] {
			return false
		}
		seenAddr[a] = true
		return true
	})
	return m, dropped, holder
}

// holderOf is the service that holds a name its parts claim: the one of
// the oldest claim, the smallest since (the CreateIndex of the container
// document that first made it). Consul's indexes only grow, so a newcomer's
// claim is younger than every standing one whatever its name, and as the
// index is the data's, every server of the zone decides alike, before and
// after a restart. As old (documents of one transaction, or without an
// index): a service's own name before an alias, then the first service by
// name.
func holderOf(parts []part) string {
	var best *claim
	for _, p := range parts {
		c := p.claim
		if c == nil {
			continue
		}
		if best == nil || c.since < best.since || c.since == best.since &&
			(!c.alias && best.alias || c.alias == best.alias && c.service < best.service) {
			best = c
		}
	}
	if best == nil {
		return ""
	}
	return best.service
}
