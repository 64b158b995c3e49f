package berth

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/berthdns/berth/record"
	"github.com/miekg/dns"
)

// dnssdServices is the RFC 6763 service type enumeration name.
const dnssdServices = "_services._dns-sd._udp."

// builder collects one host's contribution; every name it touches keeps a
// set of the records already added, so that a port bound on both 0.0.0.0
// and :: or two instances on one host give each record once.
type builder struct {
	z       *Zone
	c       *contribution
	seen    map[string]map[rrKey]bool
	skipped map[skipKey]string // names left out -> why
}

// skipKey is one name left out of a host's records, for one reason.
type skipKey struct{ reason, name string }

func (b *builder) node(name string, owned bool) (*node, map[rrKey]bool) {
	m := b.c.shared
	if owned {
		m = b.c.owned
	}
	n := m[name]
	if n == nil {
		n = &node{}
		m[name] = n
		if b.z.static[name] {
			// install keeps the Corefile's records; say why these go.
			b.skip("conflict", name, "the Corefile's ns line already defines this name")
		}
	}
	s := b.seen[name]
	if s == nil {
		s = map[rrKey]bool{}
		b.seen[name] = s
	}
	return n, s
}

// compile turns one host's documents into the records it contributes, as
// the README lays them out (README.md#names-and-answers). Names that do not fit DNS's limits
// are left out and returned in skipped, with the reason.
func (z *Zone) compile(data *hostDocs) (c *contribution, skipped map[skipKey]string) {
	b := &builder{z: z, c: &contribution{owned: map[string]*node{}, shared: map[string]*node{}, aliases: map[string]aliasPart{}},
		seen: map[string]map[rrKey]bool{}, skipped: map[skipKey]string{}}
	if data == nil {
		return b.c, nil
	}
	hostName := data.Host.Name + "." + record.HostsLabel + "." + z.origin
	if !b.fits("host", hostName) {
		return b.c, b.skipped
	}
	hostNode, seen := b.node(hostName, true)
	hostAddrs := map[netip.Addr]bool{}
	for _, a := range data.Host.Addrs {
		if b.publishable(hostName, a) {
			hostAddrs[a] = true
			hostNode.addOnce(z.addrRR(hostName, a), seen)
		}
	}
	for _, ctr := range data.Containers {
		ctrName := ctr.Name + "." + hostName
		if b.c.owned[ctrName] != nil {
			b.skip("duplicate", ctrName, "another container of this host has the same name")
			continue
		}
		if b.fits("container", ctrName) {
			b.container(data.Host.Name, hostName, hostAddrs, ctr)
		}
	}
	return b.c, b.skipped
}

func (b *builder) container(host, hostName string, hostAddrs map[netip.Addr]bool, ctr *record.Container) {
	z := b.z
	ctrName := ctr.Name + "." + hostName
	ctrNode, seen := b.node(ctrName, true)
	ports := make([]record.Port, 0, len(ctr.Ports))
	for _, p := range ctr.Ports {
		if b.publishable(ctrName, p.Addr) {
			ports = append(ports, p)
			ctrNode.addOnce(z.addrRR(ctrName, p.Addr), seen)
		}
	}
	// A service name too long for the zone, or that the ownership policy
	// does not give this host, is not published (and noted), but the
	// container still is, under its host: that name is the host's own.
	svcName := ctr.Service + "." + z.origin
	svcOK := b.fits("service", svcName)
	prio, weight, err := z.policy.Claim(ctr.Service, host, ctr.Priority, ctr.Weight)
	if err != nil {
		b.skip("refused", svcName, err.Error())
		svcOK = false
		prio, weight = ctr.Priority, ctr.Weight
	}
	txt := []string{"id=" + ctr.ShortID(), "image=" + ctr.Image, "health=" + ctr.Health}
	if len(ctr.Tags) > 0 {
		txt = append(txt, record.TagsTXT(ctr.Tags))
	}
	if svc := "service=" + ctr.Service; len(svc) <= maxTXTString {
		// Only a service name that could never be published is too long
		// for one TXT character-string; leave it out rather than cut it.
		txt = append([]string{svc}, txt...)
	}
	ctrNode.add(&dns.TXT{Hdr: z.hdr(ctrName, dns.TypeTXT), Txt: txt})

	// A port bound on one of the host's addresses is reached through the
	// host's name; one bound on another specific address through the
	// container's own name, which resolves to the addresses its ports use.
	hostNode := b.c.owned[hostName]
	srv := func(n *node, seen map[rrKey]bool, owner string, prio, weight int, p record.Port) {
		target, tnode := hostName, hostNode
		if !hostAddrs[p.Addr] {
			target, tnode = ctrName, ctrNode
		}
		n.addOnce(&dns.SRV{Hdr: z.hdr(owner, dns.TypeSRV), Priority: uint16(prio),
			Weight: uint16(weight), Port: uint16(p.HostPort), Target: target}, seen)
		for _, rr := range tnode.a {
			n.glueOnce(rr, seen)
		}
		for _, rr := range tnode.aaaa {
			n.glueOnce(rr, seen)
		}
	}
	addSRV := func(owner string, owned bool, p record.Port) {
		n, seen := b.node(owner, owned)
		srv(n, seen, owner, prio, weight, p)
	}
	for _, p := range ports {
		addSRV(ctrName, true, p)
	}

	if !ctr.Healthy() || !svcOK {
		return
	}
	for _, alias := range ctr.Aliases {
		b.alias(host, ctr, alias, ports, srv)
	}
	for _, p := range ports {
		svc, seen := b.node(svcName, false)
		svc.addOnce(z.addrRR(svcName, p.Addr), seen)
		addSRV(svcName, false, p)

		proto := "._" + p.Proto + "."
		if byPort := "_" + strconv.Itoa(p.Port) + proto + svcName; b.fits("service", byPort) {
			addSRV(byPort, false, p)
		}
		if p.Name == "" {
			continue
		}
		if byName := "_" + p.Name + proto + svcName; b.fits("service", byName) {
			addSRV(byName, false, p)
		}
		// DNS-SD (RFC 6763): the service type, and one instance per
		// container, named "<container>.<host>" in one label.
		svcType := "_" + p.Name + proto + z.origin
		instance := ctr.Name + `\.` + host + "." + svcType
		if len(ctr.Name)+1+len(host) > record.MaxLabelLen {
			b.skip("too_long", instance, "the DNS-SD instance label <container>.<host> is over 63 octets")
			continue
		}
		if !b.fits("dns-sd", instance) {
			continue
		}
		browse := dnssdServices + z.origin
		n, seen := b.node(browse, false)
		n.addOnce(&dns.PTR{Hdr: z.hdr(browse, dns.TypePTR), Ptr: svcType}, seen)
		n, seen = b.node(svcType, false)
		n.addOnce(&dns.PTR{Hdr: z.hdr(svcType, dns.TypePTR), Ptr: instance}, seen)
		inst, seen := b.node(instance, true)
		inst.addOnce(&dns.TXT{Hdr: z.hdr(instance, dns.TypeTXT), Txt: txt}, seen)
		addSRV(instance, true, p)
	}
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
type srvFunc func(n *node, seen map[rrKey]bool, owner string, prio, weight int, p record.Port)

// alias gives the container's service the extra name alias: the service's
// own addresses and SRV records, by port number and name too (no DNS-SD:
// one instance list per service). An alias is a claim as a service name
// is: the ownership policy decides, and bounds its priority and weight. A
// name both a service and an alias claim, or aliases of two services, is
// settled by merge across hosts; two containers of this host claiming one
// alias for different services keep the first.
func (b *builder) alias(host string, ctr *record.Container, alias string, ports []record.Port, srv srvFunc) {
	z := b.z
	name := alias + "." + z.origin
	if !b.fits("alias", name) {
		return
	}
	prio, weight, err := z.policy.Claim(alias, host, ctr.Priority, ctr.Weight)
	if err != nil {
		b.skip("refused", name, err.Error())
		return
	}
	add := func(owner string) (*node, map[rrKey]bool) {
		if z.static[owner] {
			b.skip("conflict", owner, "the Corefile's ns line already defines this name")
			return nil, nil
		}
		part, ok := b.c.aliases[owner]
		if ok && part.service != ctr.Service {
			b.skip("conflict", owner, "alias of "+ctr.Service+": another container of this host has it for "+part.service)
			return nil, nil
		}
		if !ok {
			part = aliasPart{service: ctr.Service, n: &node{}}
			b.c.aliases[owner] = part
		}
		s := b.seen[owner+"\x00alias"]
		if s == nil {
			s = map[rrKey]bool{}
			b.seen[owner+"\x00alias"] = s
		}
		return part.n, s
	}
	for _, p := range ports {
		n, seen := add(name)
		if n == nil {
			return
		}
		n.addOnce(z.addrRR(name, p.Addr), seen)
		srv(n, seen, name, prio, weight, p)
		proto := "._" + p.Proto + "."
		owners := []string{"_" + strconv.Itoa(p.Port) + proto + name}
		if p.Name != "" {
			owners = append(owners, "_"+p.Name+proto+name)
		}
		for _, owner := range owners {
			if !b.fits("alias", owner) {
				continue
			}
			if n, seen := add(owner); n != nil {
				srv(n, seen, owner, prio, weight, p)
			}
		}
	}
}

// publishable reports whether a, an address of name, may be published
// (record.Publishable: never loopback without the Corefile's
// allow_loopback, link-local, multicast or unspecified), and notes it as
// skipped if not.
func (b *builder) publishable(name string, a netip.Addr) bool {
	if class := record.AddrClass(a, b.z.allowLoopback); class != "" {
		b.skip(class, name, record.Publishable(a, b.z.allowLoopback).Error())
		return false
	}
	return true
}

// skip notes a name left out of the host's records, and why.
func (b *builder) skip(reason, name, why string) {
	b.skipped[skipKey{reason, name}] = why
}

// maxTXTString is the most one TXT character-string holds.
const maxTXTString = 255
