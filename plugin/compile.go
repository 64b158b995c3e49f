package berth

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/berthdns/berth/record"
	"github.com/miekg/dns"
)

// dnssdServices is the RFC 6763 service type enumeration name.
const dnssdServices = "_services._dns-sd._udp."

// builder collects one host's contribution, each record once (addOnce).
type builder struct {
	z       *Zone
	c       *compiled
	seen    map[*node]map[rrKey]bool // the records of a large node, to add each once (see addOnce)
	buf     []byte                   // a shared name being made (sharedName)
	skipped map[skipKey]string       // names left out -> why
	alloc   *hostAlloc               // the host's nodes and records
	ranges  record.HostRanges        // the addresses the ownership policy lets the host publish
	claims  map[aliasName]*claim     // the host's claims: (the name claimed, service)
	// claiming is the claim being decided, that skip attributes its
	// findings to (Finding.Service); nil outside one.
	claiming *claim
}

// skipKey is one name left out of a host's records, for one reason, and
// the claim it was part of (service "" for none).
type skipKey struct {
	reason, name, service string
	alias                 bool
}

// claimOf is the host's claim of name (fully qualified) for service, as
// its own name or an alias, made older by a container document created at
// since: a claim is as old as its oldest container (merge).
func (b *builder) claimOf(name, service string, alias bool, since uint64) *claim {
	k := aliasName{name, service}
	cl := b.claims[k]
	if cl == nil {
		cl = &claim{root: name, service: service, alias: alias, since: since}
		b.claims[k] = cl
	}
	cl.since = min(cl.since, since)
	return cl
}

// node returns the node of name, made with room for size records if new.
func (b *builder) node(name string, owned bool, size int) *node {
	return b.nodeOr(name, owned, func() *node { return b.alloc.node(size) })
}

// listNode returns the node of a zone-wide DNS-SD list, made apart from the
// host's arrays (hostAlloc): it grows with the host's instances.
func (b *builder) listNode(name string) *node {
	return b.nodeOr(name, false, func() *node { return &node{} })
}

// nodeOr returns the node of name, made by made if new.
func (b *builder) nodeOr(name string, owned bool, made func() *node) *node {
	m := b.c.shared
	if owned {
		m = b.c.owned
	}
	n := m[name]
	if n == nil {
		n = made()
		m[name] = n
		if b.z.static[name] {
			// install keeps the Corefile's records; say why these go.
			b.skip("conflict", name, "the Corefile's ns line already defines this name")
		}
	}
	return n
}

// compile turns one host's documents into the records it contributes, as
// the README lays them out (README.md#names-and-answers). Names that do not fit DNS's limits
// are left out and returned in skipped, with the reason.
func (z *Zone) compile(data *hostDocs) (c *compiled, skipped map[skipKey]string) {
	if data == nil {
		return &compiled{}, nil
	}
	// Sized for a container's own name and its DNS-SD instance, and its
	// service's three names (address, port, port name) and DNS-SD type.
	n := len(data.Containers)
	b := &builder{z: z, c: &compiled{owned: make(map[string]*node, 1+2*n), shared: make(map[string]*node, 3*n),
		claims: make(map[string]*claim, 3*n), aliases: map[aliasName]aliasPart{}}, seen: map[*node]map[rrKey]bool{},
		skipped: map[skipKey]string{}, alloc: newHostAlloc(data), claims: map[aliasName]*claim{},
		ranges: z.policy.HostRanges(data.Host.Name)}
	hostName := data.Host.Name + "." + record.HostsLabel + "." + z.origin
	if !b.fits("host", hostName) {
		return b.c, b.skipped
	}
	hostNode := b.node(hostName, true, len(data.Host.Addrs))
	hostAddrs := map[netip.Addr]bool{}
	for _, a := range data.Host.Addrs {
		if b.publishable(hostName, a) {
			hostAddrs[a] = true
			b.addOnce(hostNode, b.addr(hostName, a))
		}
	}
	for i, ctr := range data.Containers {
		ctrName := ctr.Name + "." + hostName
		if b.c.owned[ctrName] != nil {
			b.skip("duplicate", ctrName, "another container of this host has the same name")
			continue
		}
		if b.fits("container", ctrName) {
			b.container(data.Host.Name, hostName, ctrName, hostAddrs, ctr, data.created(i))
		}
	}
	return b.c, b.skipped
}

func (b *builder) container(host, hostName, ctrName string, hostAddrs map[netip.Addr]bool, ctr *record.Container, created uint64) {
	z := b.z
	ctrNode := b.node(ctrName, true, containerRoom(len(ctr.Ports)))
	ports := make([]record.Port, 0, len(ctr.Ports))
	for _, p := range ctr.Ports {
		if b.publishable(ctrName, p.Addr) {
			ports = append(ports, p)
			b.addOnce(ctrNode, b.addr(ctrName, p.Addr))
		}
	}
	// A service name too long for the zone, or that the ownership policy
	// does not give this host, is not published (and noted), but the
	// container still is, under its host: that name is the host's own.
	svcName := b.sharedName(append(append(b.buf[:0], ctr.Service...), '.'), z.origin)
	cl := b.claimOf(svcName, ctr.Service, false, created)
	b.claiming = cl
	svcOK := b.fits("service", svcName) && b.claimable(svcName)
	prio, weight, err := z.policy.Claim(ctr.Service, host, ctr.Priority, ctr.Weight)
	if err == nil {
		err = aliasRule(z.policy, ctr.Service, ctr.Service, false)
	}
	if err != nil {
		b.skip("refused", svcName, err.Error())
		svcOK = false
		prio, weight = ctr.Priority, ctr.Weight
	}
	b.claiming = nil
	// The TXT strings are parts of one string, in a slice of the host's;
	// free text is escaped (record.EscapeTXT) so that the wire carries the
	// document's bytes.
	text := append(append(b.buf[:0], "service="...), ctr.Service...)
	svcEnd := len(text)
	text = append(append(text, "id="...), ctr.ShortID()...)
	idEnd := len(text)
	text = append(append(text, "image="...), record.EscapeTXT(ctr.Image)...)
	b.buf = text
	all := string(text)
	txt := b.alloc.txtStrings()
	if svcEnd <= maxTXTString {
		// Only a service name that could never be published is too long
		// for one TXT character-string; leave it out rather than cut it.
		txt = append(txt, all[:svcEnd])
	}
	txt = append(txt, all[svcEnd:idEnd], all[idEnd:], healthTXT(ctr.Health))
	if len(ctr.Tags) > 0 {
		txt = append(txt, record.EscapeTXT(record.TagsTXT(ctr.Tags)))
	}
	ctrNode.add(b.alloc.txtRR(z.hdr(ctrName, dns.TypeTXT), txt))

	// A port bound on one of the host's addresses is reached through the
	// host's name; one bound on another specific address through the
	// container's own name, which resolves to the addresses its ports use.
	hostNode := b.c.owned[hostName]
	srv := func(n *node, owner string, prio, weight int, p record.Port) {
		target, tnode := hostName, hostNode
		if !hostAddrs[p.Addr] {
			target, tnode = ctrName, ctrNode
		}
		b.addOnce(n, b.alloc.srvRR(dns.SRV{Hdr: z.hdr(owner, dns.TypeSRV), Priority: uint16(prio),
			Weight: uint16(weight), Port: uint16(p.HostPort), Target: target}))
		for _, rr := range tnode.records(kindA) {
			b.glueOnce(n, rr)
		}
		for _, rr := range tnode.records(kindAAAA) {
			b.glueOnce(n, rr)
		}
	}
	addSRV := func(owner string, owned bool, p record.Port) {
		srv(b.node(owner, owned, srvRoom), owner, prio, weight, p)
	}
	for _, p := range ports {
		addSRV(ctrName, true, p)
	}

	if !ctr.Healthy() || !svcOK {
		return
	}
	for _, alias := range ctr.Aliases {
		b.alias(host, ctr, alias, ports, srv, created)
	}
	for _, p := range ports {
		b.addOnce(b.node(svcName, false, serviceRoom), b.addr(svcName, p.Addr))
		addSRV(svcName, false, p)
		b.c.claims[svcName] = cl

		buf := strconv.AppendInt(append(b.buf[:0], '_'), int64(p.Port), 10)
		if byPort := b.sharedName(append(append(append(buf, "._"...), p.Proto...), '.'), svcName); b.fits("service", byPort) {
			addSRV(byPort, false, p)
			b.c.claims[byPort] = cl
		}
		if p.Name == "" {
			continue
		}
		protoName := append(append(append(append(b.buf[:0], '_'), p.Name...), "._"...), p.Proto...)
		if byName := b.sharedName(append(protoName, '.'), svcName); b.fits("service", byName) {
			addSRV(byName, false, p)
			b.c.claims[byName] = cl
		}
		// DNS-SD (RFC 6763): the service type, and one instance per
		// container, named "<container>.<host>" in one label.
		protoName = append(append(append(append(b.buf[:0], '_'), p.Name...), "._"...), p.Proto...)
		svcType := b.sharedName(append(protoName, '.'), z.origin)
		instance := ctr.Name + `\.` + host + "." + svcType
		if len(ctr.Name)+1+len(host) > record.MaxLabelLen {
			b.skip("too_long", instance, "the DNS-SD instance label <container>.<host> is over 63 octets")
			continue
		}
		if !b.fits("dns-sd", instance) {
			continue
		}
		browse := b.sharedName(append(b.buf[:0], dnssdServices...), z.origin)
		b.addOnce(b.listNode(browse), b.alloc.ptrRR(z.hdr(browse, dns.TypePTR), svcType))
		b.addOnce(b.listNode(svcType), b.alloc.ptrRR(z.hdr(svcType, dns.TypePTR), instance))
		inst := b.node(instance, true, instanceRoom)
		b.addOnce(inst, b.alloc.txtRR(z.hdr(instance, dns.TypeTXT), txt))
		addSRV(instance, true, p)
	}
}

// sharedName returns the shared name prefix+suffix (prefix is b.buf, or
// made in it), as the zone or the batch being compiled already has it if
// it does: every host's records of a shared name (a service has one part
// per host of its instances) share one owner string, and only a name new
// to the zone costs a string.
func (b *builder) sharedName(prefix []byte, suffix string) string {
	b.buf = append(prefix, suffix...)
	if parts := b.z.shared[string(b.buf)]; len(parts) > 0 && len(parts[0].n.rrs) > 0 {
		return parts[0].n.rrs[0].Header().Name
	}
	if s, ok := b.z.interned[string(b.buf)]; ok {
		return s
	}
	s := string(b.buf)
	if b.z.interned != nil { // nil outside update (Check)
		b.z.interned[s] = s
	}
	return s
}

// healthTXT is the TXT string of a health state; the states the record
// package knows are constants, not a string per container.
func healthTXT(h string) string {
	switch h {
	case record.HealthHealthy:
		return "health=" + record.HealthHealthy
	case record.HealthUnhealthy:
		return "health=" + record.HealthUnhealthy
	case record.HealthStarting:
		return "health=" + record.HealthStarting
	case record.HealthNone:
		return "health=" + record.HealthNone
	}
	return "health=" + h
}

// fits reports whether name is a valid domain name of at most 253 octets
// without the root (the namespace's limit, and DNS's 255 on the wire), and
// notes it as skipped if not. The only escapes in our names are the DNS-SD
// instance's "\.", one octet each.
func (b *builder) fits(kind, name string) bool {
	octets := len(name) - 1 - strings.Count(name, `\.`)
	if _, ok := dns.IsDomainName(name); ok && octets <= record.MaxNameLen {
		return true
	}
	b.skip("too_long", name, kind+" name is not a valid domain name of at most 253 octets")
	return false
}

// srvFunc adds to n (under owner) the SRV record of port p at the given
// priority and weight, with its target's addresses as glue.
type srvFunc func(n *node, owner string, prio, weight int, p record.Port)

// alias gives the container's service the extra name alias: the service's
// own addresses and SRV records, by port number and name too (no DNS-SD:
// one instance list per service). An alias is a claim as a service name
// is: the ownership policy decides, and bounds its priority and weight. A
// name claimed for several services, by this host or others, is settled by
// merge: the oldest claim holds it.
func (b *builder) alias(host string, ctr *record.Container, alias string, ports []record.Port, srv srvFunc, created uint64) {
	z := b.z
	name := alias + "." + z.origin
	cl := b.claimOf(name, ctr.Service, true, created)
	b.claiming = cl
	defer func() { b.claiming = nil }()
	if !b.fits("alias", name) || !b.claimable(name) {
		return
	}
	prio, weight, err := z.policy.Claim(alias, host, ctr.Priority, ctr.Weight)
	if err == nil {
		err = aliasRule(z.policy, alias, ctr.Service, true)
	}
	if err != nil {
		b.skip("refused", name, err.Error())
		return
	}
	add := func(owner string) *node {
		if z.static[owner] {
			b.skip("conflict", owner, "the Corefile's ns line already defines this name")
			return nil
		}
		k := aliasName{owner, ctr.Service}
		part, ok := b.c.aliases[k]
		if !ok {
			part = aliasPart{n: &node{}, claim: cl}
			b.c.aliases[k] = part
		}
		return part.n
	}
	for _, p := range ports {
		n := add(name)
		if n == nil {
			return
		}
		b.addOnce(n, b.addr(name, p.Addr))
		srv(n, name, prio, weight, p)
		proto := "._" + p.Proto + "."
		owners := []string{"_" + strconv.Itoa(p.Port) + proto + name}
		if p.Name != "" {
			owners = append(owners, "_"+p.Name+proto+name)
		}
		for _, owner := range owners {
			if !b.fits("alias", owner) {
				continue
			}
			if n := add(owner); n != nil {
				srv(n, owner, prio, weight, p)
			}
		}
	}
}

// claimable reports whether a service or alias may claim name, one the
// zone does not own (zoneOwns), and notes it as skipped ("conflict", as
// every claim on a name that is not the claimant's) if
// not: the claim is refused whole, with the names below it.
func (b *builder) claimable(name string) bool {
	if b.z.zoneOwns(name) {
		b.skip("conflict", name, "the zone owns this name (its apex, a nameserver's name or the hosts' subtree): no service or alias may claim it")
		return false
	}
	return true
}

// aliasRule refuses a claim of name for service that the policy's alias_of
// (record.PolicyRule.AliasOf) forbids: a name the policy gives to a
// service as its alias is no service's own name, nor another's alias.
func aliasRule(p *record.Policy, name, service string, alias bool) error {
	holder := p.AliasHolder(name)
	switch {
	case holder == "", alias && holder == service:
		return nil
	case alias:
		return fmt.Errorf("%w: the policy gives %s as an alias to %s, not to %s", record.ErrClaimRefused, name, holder, service)
	}
	return fmt.Errorf("%w: the policy gives %s as an alias to %s: it is no service's own name", record.ErrClaimRefused, name, holder)
}

// publishable reports whether a, an address of name, may be published
// (record.Publishable: never loopback without the Corefile's
// allow_loopback, link-local, multicast, unspecified or a cloud metadata
// service; nothing in the Corefile's deny_addresses; and within the ranges
// the ownership policy gives the host), and notes it as skipped if not.
func (b *builder) publishable(name string, a netip.Addr) bool {
	if err := b.z.denied.Publishable(a, b.z.allowLoopback); err != nil {
		b.skip(err.(*record.AddrClassError).Class, name, err.Error())
		return false
	}
	if err := b.ranges.Check(a); err != nil {
		b.skip(record.ReasonForeignAddress, name, err.Error())
		return false
	}
	return true
}

// addOnce adds rr to n unless an identical record is already there: a port
// bound on both 0.0.0.0 and :: gives the same SRV twice, and instances on
// one host share its addresses. A node has one TXT record, so TXT needs no
// key beyond its type. Most nodes hold a few records and are searched; a
// large one (a DNS-SD list of a host of many containers) gets a set.
func (b *builder) addOnce(n *node, rr dns.RR) {
	if b.first(n, keyOf(rr, false)) {
		n.add(rr)
	} else {
		b.alloc.give(rr)
	}
}

func (b *builder) glueOnce(n *node, rr dns.RR) {
	if b.first(n, keyOf(rr, true)) {
		n.addGlue(rr)
	}
}

// searchMax is the most records a node is searched through for a
// duplicate; a larger one gets a set.
const searchMax = 32

// first reports whether n has no record (glue if k.glue) of key k, and
// notes it.
func (b *builder) first(n *node, k rrKey) bool {
	set := b.seen[n]
	if set == nil {
		in := n.records(kindOf(k.rrtype))
		if k.glue {
			in = n.glue()
		}
		if len(in) < searchMax {
			for _, rr := range in {
				if keyOf(rr, k.glue) == k {
					return false
				}
			}
			return true
		}
		set = make(map[rrKey]bool, 2*len(n.rrs))
		for _, rr := range n.all() {
			set[keyOf(rr, false)] = true
		}
		for _, rr := range n.glue() {
			set[keyOf(rr, true)] = true
		}
		b.seen[n] = set
	}
	if set[k] {
		return false
	}
	set[k] = true
	return true
}

// skip notes a name left out of the host's records, and why.
func (b *builder) skip(reason, name, why string) {
	k := skipKey{reason: reason, name: name}
	if b.claiming != nil {
		k.service, k.alias = b.claiming.service, b.claiming.alias
	}
	b.skipped[k] = why
}

// maxTXTString is the most one TXT character-string holds.
const maxTXTString = 255

// addr makes the A or AAAA record of name for a.
func (b *builder) addr(name string, a netip.Addr) dns.RR {
	return b.alloc.addr(b.z.hdr(name, 0), a)
}
