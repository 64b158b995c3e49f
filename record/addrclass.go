package record

import (
	"fmt"
	"net/netip"
)

// Address classes that are never published as an address to dial. Each is
// also the snake_case reason the exporter and the plugin count it under.
const (
	ClassInvalid     = "invalid_address"
	ClassUnspecified = "unspecified_address" // 0.0.0.0, ::
	ClassLoopback    = "loopback_address"    // 127.0.0.0/8, ::1
	ClassLinkLocal   = "link_local_address"  // 169.254.0.0/16, fe80::/10
	ClassMulticast   = "multicast_address"   // 224.0.0.0/4, ff00::/8
)

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
	}
	return ""
}

// Publishable is the one rule, for the exporter and the plugin alike, of
// which addresses may be published for clients to dial: never the
// unspecified address, a link-local or a multicast one; a loopback address
// only when the operator opted in (allowLoopback), as for a single-machine
// setup or a test. It returns an *AddrClassError naming the class.
func Publishable(a netip.Addr, allowLoopback bool) error {
	if c := AddrClass(a, allowLoopback); c != "" {
		return &AddrClassError{Addr: a.Unmap(), Class: c}
	}
	return nil
}
