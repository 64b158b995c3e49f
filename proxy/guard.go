package proxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/berthdns/berth/record"
)

// Why an address is not dialled, as a metric label (Rejected).
const (
	forbidLoopback    = "loopback"
	forbidLinkLocal   = "link_local"
	forbidUnspecified = "unspecified"
	forbidMulticast   = "multicast"
	forbidBroadcast   = "broadcast"
	forbidMetadata    = "metadata"    // record.MetadataPrefixes
	forbidDenied      = "denied"      // Config.Deny
	forbidOwnAddress  = "own_address" // an address of the proxy's own host
	forbidNotIP       = "not_ip"
)

// forbidByClass names record's address classes as the labels above.
var forbidByClass = map[string]string{
	record.ClassInvalid:     forbidNotIP,
	record.ClassLoopback:    forbidLoopback,
	record.ClassLinkLocal:   forbidLinkLocal,
	record.ClassUnspecified: forbidUnspecified,
	record.ClassMulticast:   forbidMulticast,
	record.ClassMetadata:    forbidMetadata,
	record.ClassDenied:      forbidDenied,
}

// ForbiddenAddressError is an address the proxy refuses to dial whatever DNS
// or the client says: the proxy's own host (loopback unless the operator
// allows it, its interfaces' other addresses unless the operator allows
// those), link-local networks and the other cloud metadata services
// (record.MetadataPrefixes), the operator's deny list, and addresses that
// are no single host.
type ForbiddenAddressError struct {
	Address string
	Reason  string // one of the forbid* labels
}

func (e *ForbiddenAddressError) Error() string {
	switch e.Reason {
	case forbidLoopback:
		return fmt.Sprintf("%s is a loopback address: berth-proxy does not dial it (berth-proxy --allow-loopback would)", e.Address)
	case forbidOwnAddress:
		return fmt.Sprintf("%s is an address of berth-proxy's own host: berth-proxy does not dial it (berth-proxy --allow-own-addresses would)", e.Address)
	case forbidDenied:
		return fmt.Sprintf("%s is in berth-proxy's --deny list: berth-proxy does not dial it", e.Address)
	}
	return fmt.Sprintf("%s is a %s address: berth-proxy does not dial it", e.Address, e.Reason)
}

// ownAddrRefresh is how long the proxy trusts its last reading of its own
// host's interface addresses: an address added since (DHCP, a new bridge)
// is refused from at most this long after it appears. Reading them is one
// netlink dump, cheap at this rate however many dials there are.
const ownAddrRefresh = 30 * time.Second

// addrGuard decides which addresses the proxy dials (forbiddenReason).
type addrGuard struct {
	allowLoopback  bool
	allowOwn       bool
	deny           record.DenyList
	interfaceAddrs func() ([]net.Addr, error) // net.InterfaceAddrs; tests replace it

	mu     sync.Mutex
	own    map[netip.Addr]bool // the host's non-loopback interface addresses
	readAt time.Time
}

// newAddrGuard reads the host's own addresses once, so that a proxy that
// cannot tell them fails at start rather than dial them.
func newAddrGuard(cfg Config, deny record.DenyList) (*addrGuard, error) {
	g := &addrGuard{allowLoopback: cfg.AllowLoopback, allowOwn: cfg.AllowOwnAddresses, deny: deny,
		interfaceAddrs: net.InterfaceAddrs}
	if !g.allowOwn {
		if err := g.readOwn(time.Now()); err != nil {
			return nil, fmt.Errorf("reading this host's addresses (to refuse them; --allow-own-addresses dials them): %w", err)
		}
	}
	return g, nil
}

// readOwn reads the interface addresses; mu held or not yet shared.
func (g *addrGuard) readOwn(now time.Time) error {
	addrs, err := g.interfaceAddrs()
	if err != nil {
		return err
	}
	own := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			own[p.Addr().Unmap().WithZone("")] = true
		}
	}
	g.own, g.readAt = own, now
	return nil
}

// isOwn reports whether addr is one of the host's interface addresses, read
// again when the last reading is over ownAddrRefresh old (a failed reading
// keeps the last one).
func (g *addrGuard) isOwn(addr netip.Addr, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if now.Sub(g.readAt) >= ownAddrRefresh {
		if err := g.readOwn(now); err != nil {
			g.readAt = now
		}
	}
	return g.own[addr.WithZone("")]
}

// forbiddenReason says why addr may not be dialled, or "": record's address
// classes under the deny list (loopback opened by allowLoopback alone),
// this network and the broadcast address, then the host's own addresses.
// A loopback address is judged by allowLoopback only, never as an own
// address: the one setting that opens the host to its single-machine
// setups is allowLoopback, and allowOwn opens its other addresses.
func (g *addrGuard) forbiddenReason(addr netip.Addr) string {
	addr = addr.Unmap()
	if c := g.deny.Class(addr, g.allowLoopback); c != "" {
		return forbidByClass[c]
	}
	switch {
	// 0.0.0.0/8 is "this network": Linux connects 0.0.0.0 to the local host.
	case addr.Is4() && addr.As4()[0] == 0:
		return forbidUnspecified
	case addr == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return forbidBroadcast
	case !g.allowOwn && !addr.IsLoopback() && g.isOwn(addr, time.Now()):
		return forbidOwnAddress
	}
	return ""
}

// dial wraps next so that it refuses forbidden addresses before any packet
// leaves. Every connection to a target goes through it: the resolver dials
// each address it found with it, always as an IP literal and port.
func (g *addrGuard) dial(next func(ctx context.Context, network, address string) (net.Conn, error)) func(ctx context.Context, network, address string) (net.Conn, error) {
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return nil, &ForbiddenAddressError{Address: address, Reason: forbidNotIP}
		}
		if reason := g.forbiddenReason(ap.Addr()); reason != "" {
			return nil, &ForbiddenAddressError{Address: address, Reason: reason}
		}
		return next(ctx, network, address)
	}
}
