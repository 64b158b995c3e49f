package proxy

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/miekg/dns"

	"github.com/berthdns/berth/record"
)

// Policy decides which destinations the proxy may connect to: names in the
// served zones (resolved through SRV), names under an allowed suffix, and
// literal IP addresses inside an allowed CIDR. Everything else is refused.
type Policy struct {
	zones    []string // lower case, fully qualified
	suffixes []string // lower case, fully qualified
	prefixes []netip.Prefix
}

// NotAllowedError is a destination the policy refuses.
type NotAllowedError struct{ Host string }

func (e *NotAllowedError) Error() string {
	return fmt.Sprintf("%s is not allowed: outside the served zones and the --allow list", e.Host)
}

// NewPolicy builds a policy from the served zones and the allow list, whose
// entries are domain suffixes ("example.com" also admits "www.example.com"),
// CIDRs ("10.0.0.0/8") or single addresses. A policy that admits nothing is
// an error: a proxy that refuses everything is a misconfiguration.
func NewPolicy(zones, allow []string) (*Policy, error) {
	p := &Policy{}
	for _, z := range zones {
		name, err := domain(z)
		if err != nil {
			return nil, fmt.Errorf("zone %q: %w", z, err)
		}
		if name != "" {
			p.zones = append(p.zones, name)
		}
	}
	for _, a := range allow {
		a = strings.TrimSpace(a)
		switch {
		case a == "":
		case strings.Contains(a, "/"):
			prefix, err := netip.ParsePrefix(a)
			if err != nil {
				return nil, fmt.Errorf("allow %q: %w", a, err)
			}
			p.prefixes = append(p.prefixes, prefix.Masked())
		default:
			if ip, err := netip.ParseAddr(a); err == nil {
				p.prefixes = append(p.prefixes, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
				continue
			}
			name, err := domain(strings.TrimPrefix(a, "."))
			if err != nil {
				return nil, fmt.Errorf("allow %q: %w", a, err)
			}
			p.suffixes = append(p.suffixes, name)
		}
	}
	if len(p.zones)+len(p.suffixes)+len(p.prefixes) == 0 {
		return nil, errors.New("nothing is reachable: give the zones to serve (--zones) or what to allow (--allow)")
	}
	return p, nil
}

// domain returns s lower case and fully qualified, the form record.InZone
// compares; "" for an empty s or the root.
func domain(s string) (string, error) {
	s = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(s), "."))
	if s == "" {
		return "", nil
	}
	if _, ok := dns.IsDomainName(s); !ok || strings.ContainsAny(s, " /\\") {
		return "", errors.New("not a domain name")
	}
	return s + ".", nil
}

// Check returns nil if host (a name or an IP literal, without port) may be
// reached, else a *NotAllowedError.
func (p *Policy) Check(host string) error {
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		ip = ip.Unmap()
		for _, prefix := range p.prefixes {
			if ip.Zone() == "" && prefix.Contains(ip) {
				return nil
			}
		}
		return &NotAllowedError{Host: host}
	}
	name, err := domain(host)
	if err != nil || name == "" {
		return &NotAllowedError{Host: host}
	}
	if p.InZones(name) || under(name, p.suffixes) {
		return nil
	}
	return &NotAllowedError{Host: host}
}

// InZones reports whether host is at or under a served zone.
func (p *Policy) InZones(host string) bool {
	return under(dns.CanonicalName(host), p.zones)
}

// Zones are the served zones, lower case and fully qualified.
func (p *Policy) Zones() []string { return p.zones }

// under reports whether name (lower case, fully qualified) is at or below
// one of origins, by the one in-zone test the plugin and resolver use too.
func under(name string, origins []string) bool {
	for _, o := range origins {
		if record.InZone(name, o) {
			return true
		}
	}
	return false
}
