package berth

import (
	"slices"
	"sort"
	"strings"

	"github.com/berthdns/berth/record"
)

// Finding is one name the plugin would leave out of a zone, and why: the
// operator's `berth check` reports these without running a server.
type Finding struct {
	Host   string // the host whose documents hold it
	Reason string // as coredns_berth_invalid_records_total counts it
	Name   string // the name left out
	Why    string
}

// Check compiles hosts' decoded documents for the zone origin as the plugin
// would, under policy (nil: none, every claim allowed) and with loopback
// addresses allowed or not, and returns every name it would leave out,
// sorted by host and name. Decoding the documents, and reporting those that
// do not decode, is the caller's (record.DecodeHost, record.DecodeContainer).
func Check(origin string, policy *record.Policy, allowLoopback bool, hosts []*record.Host, containers map[string][]*record.Container) []Finding {
	z := NewZone(origin, 5, nil, nil)
	if policy != nil {
		z.policy = policy
	}
	z.allowLoopback = allowLoopback
	var out []Finding
	for _, h := range hosts {
		cs := slices.Clone(containers[h.Name])
		sort.Slice(cs, func(i, j int) bool { return cs[i].ID < cs[j].ID })
		_, skipped := z.compile(&hostDocs{Host: h, Containers: cs})
		for k, why := range skipped {
			out = append(out, Finding{Host: h.Name, Reason: k.reason, Name: k.name, Why: why})
		}
	}
	slices.SortFunc(out, func(a, b Finding) int {
		if c := strings.Compare(a.Host, b.Host); c != 0 {
			return c
		}
		return strings.Compare(a.Name+a.Reason, b.Name+b.Reason)
	})
	return out
}
