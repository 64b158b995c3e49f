package record

import (
	"fmt"
	"net/netip"
	"strings"
)

// Address classes that are never published as an address to dial. Each is
// also the snake_case reason the exporter and the plugin count it under.
const (
	ClassInvalid     = "invalid_address"
	ClassUnspecified = "unspecified_address" // 0.0.0.0, ::
	ClassLoopback    = "loopback_address"    // 127.0.0.0/8, ::1
	ClassLinkLocal   = "link_local_address"  // 169.254.0.0/16, fe80::/10
	ClassMulticast   = "multicast_address"   // 224.0.0.0/4, ff00::/8
	ClassMetadata    = "metadata_address"    // MetadataPrefixes
	ClassDenied      = "denied_address"      // the operator's DenyList
)

// MetadataPrefixes are the cloud metadata and platform services that sit
// outside link-local, where a request from a machine of that cloud reads
// its credentials or configuration: a published endpoint there would let
// a host turn any client (berth-proxy above all) into a reader of them.
// The link-local ones (169.254.169.254 of AWS, Azure, GCP's
// metadata.google.internal, DigitalOcean, OpenStack, Oracle; 169.254.170.2
// of AWS ECS tasks) are refused as link-local already. Sources, the
// providers' own documentation:
//   - 100.100.100.200: Alibaba Cloud ECS instance metadata ("Instance
//     metadata", Alibaba Cloud ECS documentation).
//   - fd00:ec2::254: the AWS instance metadata service over IPv6 (EC2 user
//     guide, "Configure the instance metadata service options").
//   - fd00:ec2::253: the Amazon-provided DNS server over IPv6 (Amazon VPC
//     user guide, "Amazon DNS server"): it resolves the VPC's private names.
//   - 168.63.129.16: Azure's WireServer (Azure virtual network
//     documentation, "What is IP address 168.63.129.16?"), which hands VM
//     extensions their configuration.
//   - fd20:ce::254: Google Compute Engine's metadata server for IPv6-only
//     instances (Compute Engine documentation, "About VM metadata").
var MetadataPrefixes = []netip.Prefix{
	netip.MustParsePrefix("100.100.100.200/32"),
	netip.MustParsePrefix("fd00:ec2::254/128"),
	netip.MustParsePrefix("fd00:ec2::253/128"),
	netip.MustParsePrefix("168.63.129.16/32"),
	netip.MustParsePrefix("fd20:ce::254/128"),
}

// AddrClassError says why an address may not be published.
type AddrClassError struct {
	Addr  netip.Addr
	Class string // one of the Class constants
}

func (e *AddrClassError) Error() string {
	switch e.Class {
	case ClassInvalid:
		return "not a valid IP address: not published"
	case ClassLoopback:
		return fmt.Sprintf("%s is a loopback address: not published (only this machine can reach it) "+
			"unless loopback is explicitly allowed", e.Addr)
	case ClassLinkLocal:
		return fmt.Sprintf("%s is a link-local address: not published (it is only reachable on one link)", e.Addr)
	case ClassUnspecified:
		return fmt.Sprintf("%s is the unspecified address: not published (it names no host)", e.Addr)
	case ClassMetadata:
		return fmt.Sprintf("%s is a cloud metadata service's address: not published (it would hand clients a machine's credentials)", e.Addr)
	case ClassDenied:
		return fmt.Sprintf("%s is in the operator's deny list: not published", e.Addr)
	default:
		return fmt.Sprintf("%s is a multicast address: not published (it names no one host)", e.Addr)
	}
}

// AddrClass is the class that keeps a from being published, or "" when a
// is publishable; loopback counts as publishable only with allowLoopback.
// An IPv4-mapped IPv6 address is judged as the IPv4 address it holds.
func AddrClass(a netip.Addr, allowLoopback bool) string {
	a = a.Unmap()
	switch {
	case !a.IsValid():
		return ClassInvalid
	case a.IsUnspecified():
		return ClassUnspecified
	case a.IsLoopback():
		if allowLoopback {
			return ""
		}
		return ClassLoopback
	case a.IsLinkLocalUnicast():
		return ClassLinkLocal
	case a.IsMulticast():
		return ClassMulticast
	case inPrefixes(a, MetadataPrefixes):
		return ClassMetadata
	}
	return ""
}

// inPrefixes reports whether a, without its zone (a zone names the link,
// not another address), is in one of prefixes.
func inPrefixes(a netip.Addr, prefixes []netip.Prefix) bool {
	a = a.WithZone("")
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// DenyList is an operator's list of address ranges never published by the
// plugin (the Corefile's deny_addresses) nor dialled by berth-proxy
// (--deny): the addresses of machines no container endpoint may lead to,
// such as a management network or a metadata service this package does
// not know.
type DenyList []netip.Prefix

// ParseDenyList reads CIDRs and single addresses ("10.0.0.0/8",
// "192.0.2.7", "2001:db8::/32"), refusing anything else with an error
// that names the item.
func ParseDenyList(items []string) (DenyList, error) {
	var d DenyList
	for _, item := range items {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if a, err := netip.ParseAddr(item); err == nil && a.Zone() == "" {
			a = a.Unmap()
			d = append(d, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(item)
		if err != nil {
			return nil, fmt.Errorf("deny list: %q is neither a CIDR nor an IP address", item)
		}
		if p.Addr().Is4In6() {
			// ::ffff:a.b.c.d/n is judged as the IPv4 range it holds, as
			// AddrClass judges a mapped address.
			if p.Bits() < 96 {
				return nil, fmt.Errorf("deny list: %q spans more than the IPv4-mapped range; write the IPv4 CIDR", item)
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		d = append(d, p.Masked())
	}
	return d, nil
}

// Contains reports whether a (an IPv4-mapped address as the IPv4 address
// it holds) is in the list.
func (d DenyList) Contains(a netip.Addr) bool { return inPrefixes(a.Unmap(), d) }

// Class is AddrClass under the operator's deny list too: ClassDenied for a
// publishable address inside it.
func (d DenyList) Class(a netip.Addr, allowLoopback bool) string {
	if c := AddrClass(a, allowLoopback); c != "" {
		return c
	}
	if d.Contains(a) {
		return ClassDenied
	}
	return ""
}

// Publishable is the package's Publishable under the deny list too.
func (d DenyList) Publishable(a netip.Addr, allowLoopback bool) error {
	if c := d.Class(a, allowLoopback); c != "" {
		return &AddrClassError{Addr: a.Unmap(), Class: c}
	}
	return nil
}

// Publishable is the one rule, for the exporter and the plugin alike, of
// which addresses may be published for clients to dial: never the
// unspecified address, a link-local, multicast or cloud metadata one
// (MetadataPrefixes); a loopback address
// only when the operator opted in (allowLoopback), as for a single-machine
// setup or a test. It returns an *AddrClassError naming the class.
func Publishable(a netip.Addr, allowLoopback bool) error {
	if c := AddrClass(a, allowLoopback); c != "" {
		return &AddrClassError{Addr: a.Unmap(), Class: c}
	}
	return nil
}
