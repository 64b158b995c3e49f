package proxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
)

// Why an address is not dialled, as a metric label (Rejected).
const (
	forbidLoopback    = "loopback"
	forbidLinkLocal   = "link_local"
	forbidUnspecified = "unspecified"
	forbidMulticast   = "multicast"
	forbidBroadcast   = "broadcast"
	forbidNotIP       = "not_ip"
)

// ForbiddenAddressError is an address the proxy refuses to dial whatever DNS
// or the client says: the proxy's own host (loopback, unless the operator
// allows it), link-local networks such as cloud metadata services
// (169.254.169.254), and addresses that are no single host.
type ForbiddenAddressError struct {
	Address string
	Reason  string // one of the forbid* labels
}

func (e *ForbiddenAddressError) Error() string {
	msg := fmt.Sprintf("%s is a %s address: berth-proxy does not dial it", e.Address, e.Reason)
	if e.Reason == forbidLoopback {
		msg += " (berth-proxy --allow-loopback would)"
	}
	return msg
}

// forbiddenReason says why addr may not be dialled, or "".
func forbiddenReason(addr netip.Addr, allowLoopback bool) string {
	addr = addr.Unmap()
	switch {
	case addr.IsLoopback():
		if allowLoopback {
			return ""
		}
		return forbidLoopback
	case addr.IsLinkLocalUnicast():
		return forbidLinkLocal
	// 0.0.0.0/8 is "this network": Linux connects 0.0.0.0 to the local host.
	case addr.IsUnspecified(), addr.Is4() && addr.As4()[0] == 0:
		return forbidUnspecified
	case addr.IsMulticast():
		return forbidMulticast
	case addr == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return forbidBroadcast
	}
	return ""
}

// guardDial wraps dial so that it refuses forbidden addresses before any
// packet leaves. Every connection to a target goes through it: the resolver
// dials each address it found with it, always as an IP literal and port.
func guardDial(dial func(ctx context.Context, network, address string) (net.Conn, error), allowLoopback bool) func(ctx context.Context, network, address string) (net.Conn, error) {
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return nil, &ForbiddenAddressError{Address: address, Reason: forbidNotIP}
		}
		if reason := forbiddenReason(ap.Addr(), allowLoopback); reason != "" {
			return nil, &ForbiddenAddressError{Address: address, Reason: reason}
		}
		return dial(ctx, network, address)
	}
}
