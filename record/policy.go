package record

import (
	"errors"
	"fmt"
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
// bounds within SRV's 16 bits, and no service given twice.
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
		for _, h := range r.Hosts {
			if h == "*" {
				continue
			}
			// A prefix is valid when some host name can start with it.
			name := h
			if prefix, ok := strings.CutSuffix(h, "*"); ok {
				name = prefix + "0"
			}
			if err := ValidLabel(name); err != nil {
				return fmt.Errorf("rule %d (%s): host %q: %w", i, r.Service, h, err)
			}
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
