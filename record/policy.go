package record

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// PolicyKey is the ownership policy's key: outside hosts/ and containers/,
// so no exporter's ACL can write it (see the README's "Security").
func PolicyKey(prefix string) string { return prefix + "/policy" }

// Policy is the service ownership policy at <prefix>/policy: which hosts
// may publish which service names, and the SRV priority and weight their
// labels may claim. A name no rule covers gets Default.
type Policy struct {
	V       int          `json:"v"`
	Default string       `json:"default"` // PolicyAllow or PolicyDeny
	Rules   []PolicyRule `json:"rules"`
	// Addresses binds hosts to the address ranges they may publish (their
	// advertise addresses and their ports' addresses); a host no rule
	// covers may publish any address. Optional, added within v1: a reader
	// of an earlier release ignores the field (decode ignores unknown
	// fields) and publishes as if there were no binding.
	Addresses []AddressRule `json:"addresses,omitempty"`

	// closed marks ClosedPolicy, for the reasons its refusals give.
	closed bool
}

// AddressRule gives some hosts the address ranges they may publish.
type AddressRule struct {
	// Hosts are host names, or prefixes ending in "*", or "*", as in
	// PolicyRule; a host gets the most specific rule that names it: its
	// own name, else the longest prefix, else "*".
	Hosts []string `json:"hosts"`
	// CIDRs are the ranges ("192.0.2.0/28", "2001:db8:1::/64"); none means
	// the hosts may publish no address at all.
	CIDRs []netip.Prefix `json:"cidrs"`
}

// PolicyRule gives one service name, or every name under a domain, to some
// hosts.
type PolicyRule struct {
	// Service is a service name ("web.shop"), "*.<name>" for every name
	// below <name> ("*.shop": "web.shop", "a.b.shop", not "shop"), or "*".
	Service string `json:"service"`
	// Hosts are host names, or prefixes of host names ending in "*"
	// ("shop-*"); "*" is every host.
	Hosts []string `json:"hosts"`
	// MinPriority is the lowest (most preferred) SRV priority a claim may
	// use: a label asking for less gets this. MaxWeight is the highest
	// weight. Absent: no bound.
	MinPriority *int `json:"min_priority,omitempty"`
	MaxWeight   *int `json:"max_weight,omitempty"`
	// AliasOf gives the names this rule covers to one service as its
	// aliases: an alias of them for another service is refused, and so is
	// a service of that name (AliasHolder). Absent: any service's, the
	// oldest claim holding a name several claim (README.md#names-and-answers).
	AliasOf string `json:"alias_of,omitempty"`
}

// The values of Policy.Default.
const (
	PolicyAllow = "allow"
	PolicyDeny  = "deny"
)

// OpenPolicy is what a zone without a policy document gets: every host may
// publish every name, as namespace v1 always allowed; the plugin says so at
// start. It is shared: never modify it.
var OpenPolicy = &Policy{V: Version, Default: PolicyAllow}

// ClosedPolicy is what a zone gets while its policy document does not
// validate: the narrowest policy a valid document can state (no rule, the
// default deny, every host bound to no address), so that a broken document
// never allows more than the one it replaced, whatever that was, and every
// server of the zone, started before or after it was written, serves the
// same. It is shared: never modify it.
var ClosedPolicy = &Policy{V: Version, Default: PolicyDeny,
	Addresses: []AddressRule{{Hosts: []string{"*"}}}, closed: true}

// Closed reports whether p is ClosedPolicy (false for nil: no policy).
func (p *Policy) Closed() bool { return p != nil && p.closed }

// DecodePolicy parses and validates the policy document read from key.
func DecodePolicy(key string, value []byte) (*Policy, error) {
	p := &Policy{}
	if err := decode(value, p, &p.V); err != nil {
		return nil, fmt.Errorf("policy %s: %w", key, err)
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("policy %s: %w", key, err)
	}
	return p, nil
}

// Validate checks the policy: a known default, each rule's service a
// sanitized name or pattern, each host a sanitized label or prefix, the
// bounds within SRV's 16 bits, no service given twice, and the address
// rules (validAddresses).
func (p *Policy) Validate() error {
	if p.Default != PolicyAllow && p.Default != PolicyDeny {
		return fmt.Errorf(`default is %q, want %q or %q`, p.Default, PolicyAllow, PolicyDeny)
	}
	seen := map[string]bool{}
	for i, r := range p.Rules {
		if seen[r.Service] {
			return fmt.Errorf("rule %d: service %q has a rule already", i, r.Service)
		}
		seen[r.Service] = true
		if name, ok := strings.CutPrefix(r.Service, "*."); ok {
			if err := ValidService(name); err != nil {
				return fmt.Errorf("rule %d: %w", i, err)
			}
		} else if r.Service != "*" {
			if err := ValidService(r.Service); err != nil {
				return fmt.Errorf("rule %d: %w", i, err)
			}
		}
		if len(r.Hosts) == 0 {
			return fmt.Errorf("rule %d (%s): no hosts; leave the service out of the policy or use the default", i, r.Service)
		}
		if r.AliasOf != "" {
			if err := ValidService(r.AliasOf); err != nil {
				return fmt.Errorf("rule %d (%s): alias_of: %w", i, r.Service, err)
			}
			if r.AliasOf == r.Service {
				return fmt.Errorf("rule %d (%s): alias_of names the rule's own service", i, r.Service)
			}
		}
		for _, b := range []*int{r.MinPriority, r.MaxWeight} {
			if b != nil && (*b < 0 || *b > 65535) {
				return fmt.Errorf("rule %d (%s): bound %d outside 0-65535", i, r.Service, *b)
			}
		}
		if err := validHostPatterns(r.Hosts); err != nil {
			return fmt.Errorf("rule %d (%s): %w", i, r.Service, err)
		}
	}
	return p.validAddresses()
}

// validHostPatterns checks each host pattern is "*", a sanitized label, or
// a prefix of one ending in "*".
func validHostPatterns(hosts []string) error {
	for _, h := range hosts {
		if h == "*" {
			continue
		}
		// A prefix is valid when some host name can start with it.
		name := h
		if prefix, ok := strings.CutSuffix(h, "*"); ok {
			name = prefix + "0"
		}
		if err := ValidLabel(name); err != nil {
			return fmt.Errorf("host %q: %w", h, err)
		}
	}
	return nil
}

// validAddresses checks the address rules: valid host patterns, each
// pattern in one rule only (so that the most specific rule is one rule),
// and each range written as its network address without a zone or an
// IPv4-mapped form, so that what the document says is what is compared.
func (p *Policy) validAddresses() error {
	seen := map[string]bool{}
	for i, r := range p.Addresses {
		if len(r.Hosts) == 0 {
			return fmt.Errorf("addresses[%d]: no hosts", i)
		}
		if err := validHostPatterns(r.Hosts); err != nil {
			return fmt.Errorf("addresses[%d]: %w", i, err)
		}
		for _, h := range r.Hosts {
			if seen[h] {
				return fmt.Errorf("addresses[%d]: host %q has an address rule already", i, h)
			}
			seen[h] = true
		}
		for _, c := range r.CIDRs {
			switch {
			case !c.IsValid():
				return fmt.Errorf("addresses[%d]: a range that is not a CIDR", i)
			case c.Addr().Is4In6():
				return fmt.Errorf("addresses[%d]: %s is IPv4-mapped; write the IPv4 range", i, c)
			case c != c.Masked():
				return fmt.Errorf("addresses[%d]: %s has host bits set; write %s", i, c, c.Masked())
			}
		}
	}
	return nil
}

// ErrClaimRefused is wrapped by Claim's error for a name the policy does
// not give to the host.
var ErrClaimRefused = errors.New("claim refused by the ownership policy")

// Claim decides whether host may publish service, by the most specific rule
// for it (the exact name, then the longest "*." domain, then "*"), else
// the default. Allowed, it returns the priority and weight to publish:
// the claimed ones within the rule's bounds.
func (p *Policy) Claim(service, host string, priority, weight int) (int, int, error) {
	if p.closed {
		return 0, 0, fmt.Errorf("%w: the policy document does not validate, and until a valid one is written no host may claim %s", ErrClaimRefused, service)
	}
	r := p.rule(service)
	if r == nil {
		if p.Default == PolicyDeny {
			return 0, 0, fmt.Errorf("%w: no rule gives %s to any host, and the default is deny", ErrClaimRefused, service)
		}
		return priority, weight, nil
	}
	if !slices.ContainsFunc(r.Hosts, func(pat string) bool { return hostMatches(pat, host) }) {
		return 0, 0, fmt.Errorf("%w: rule %q gives %s to %v, not to %s", ErrClaimRefused, r.Service, service, r.Hosts, host)
	}
	if r.MinPriority != nil {
		priority = max(priority, *r.MinPriority)
	}
	if r.MaxWeight != nil {
		weight = min(weight, *r.MaxWeight)
	}
	return priority, weight, nil
}

// rule is the most specific rule for service, or nil.
func (p *Policy) rule(service string) *PolicyRule {
	var best *PolicyRule
	bestLen := -1
	for i := range p.Rules {
		r := &p.Rules[i]
		switch {
		case r.Service == service:
			return r
		case r.Service == "*":
			if bestLen < 0 {
				best, bestLen = r, 0
			}
		case strings.HasPrefix(r.Service, "*."):
			if d := r.Service[1:]; strings.HasSuffix(service, d) && len(d) > bestLen {
				best, bestLen = r, len(d)
			}
		}
	}
	return best
}

// ReasonForeignAddress is the reason the plugin counts an address under
// when the ownership policy does not give it to its host (see Address).
const ReasonForeignAddress = "foreign_address"

// ErrForeignAddress is wrapped by Address's error.
var ErrForeignAddress = errors.New("address outside the ranges the ownership policy gives its host")

// Address decides whether host may publish a (an advertise address or a
// port's): yes when no address rule covers the host, else when a lies in
// a range of the most specific rule for it.
func (p *Policy) Address(host string, a netip.Addr) error { return p.HostRanges(host).Check(a) }

// HostRanges is what the ownership policy lets one host publish: the most
// specific address rule for it, found once for all of its addresses
// (compiling a host checks every one of them).
type HostRanges struct {
	host   string
	rule   *AddressRule // nil: unbound
	closed bool
}

// HostRanges finds the address rule for host.
func (p *Policy) HostRanges(host string) HostRanges {
	return HostRanges{host: host, rule: p.addressRule(host), closed: p.closed}
}

// Check is Address for the host of r.
func (r HostRanges) Check(a netip.Addr) error {
	switch {
	case r.closed:
		return fmt.Errorf("%w: the policy document does not validate, and until a valid one is written %s may publish no address (%s)", ErrForeignAddress, r.host, a)
	case r.rule == nil:
		return nil
	}
	a = a.Unmap()
	if slices.ContainsFunc(r.rule.CIDRs, func(c netip.Prefix) bool { return c.Contains(a) }) {
		return nil
	}
	return fmt.Errorf("%w: %s is not in %v, the ranges of %s (address rule %v)", ErrForeignAddress, a, r.rule.CIDRs, r.host, r.rule.Hosts)
}

// addressRule is the most specific address rule for host: the one that
// names it, else the one with its longest prefix, else the one with "*";
// nil when none covers it.
func (p *Policy) addressRule(host string) *AddressRule {
	var best *AddressRule
	bestLen := -1
	for i := range p.Addresses {
		r := &p.Addresses[i]
		for _, pat := range r.Hosts {
			switch {
			case pat == host:
				return r
			case hostMatches(pat, host) && len(pat) > bestLen:
				best, bestLen = r, len(pat)
			}
		}
	}
	return best
}

func hostMatches(pattern, host string) bool {
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(host, prefix)
	}
	return pattern == host
}

// AliasHolder is the service the policy gives name to as an alias (the
// most specific rule's alias_of), or "" when it gives it to none.
func (p *Policy) AliasHolder(name string) string {
	if r := p.rule(name); r != nil {
		return r.AliasOf
	}
	return ""
}
