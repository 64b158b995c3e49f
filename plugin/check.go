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
	if policy == nil {
		policy = record.OpenPolicy
	}
	batch := make(map[string]*hostDocs, len(hosts))
	for _, h := range hosts {
		cs := slices.Clone(containers[h.Name])
		sort.Slice(cs, func(i, j int) bool { return cs[i].ID < cs[j].ID })
		batch[h.Name] = &hostDocs{Host: h, Containers: cs}
	}
	var out []Finding
	// What each host's own documents leave out.
	z := NewZone(origin, 5, nil, nil)
	z.policy, z.allowLoopback = policy, allowLoopback
	for name, docs := range batch {
		_, skipped := z.compile(docs)
		for k, why := range skipped {
			out = append(out, Finding{Host: name, Reason: k.reason, Name: k.name, Why: why})
		}
	}
	// Conflicts between hosts (one's service against another's alias, or
	// aliases of two services) are settled when the hosts' parts merge:
	// install them all in one zone and keep what the merge reports.
	all := NewZone(origin, 5, nil, func(reason, name, why string) {
		if host, ok := strings.CutPrefix(why, "host "); ok && reason == "conflict" {
			host, _, _ = strings.Cut(host, "'")
			out = append(out, Finding{Host: host, Reason: reason, Name: name, Why: why})
		}
	})
	all.policy, all.allowLoopback = policy, allowLoopback
	all.update(batch, 1)
	slices.SortFunc(out, func(a, b Finding) int {
		if c := strings.Compare(a.Host, b.Host); c != 0 {
			return c
		}
		return strings.Compare(a.Name+a.Reason, b.Name+b.Reason)
	})
	return out
}
