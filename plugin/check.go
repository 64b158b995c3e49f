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
	// Service is the service whose claim on Name was left out, when the
	// finding is about a claim (a service's name, or an alias standing for
	// it: Alias): a tool tells from it which instances lose the name.
	Service string
	Alias   bool
	Why     string
}

// CheckZone is what a tool knows of a server's zone: the Corefile's parts
// that decide what is served.
type CheckZone struct {
	Origin string
	// Nameservers are the names of the Corefile's ns lines; none: the
	// plugin's default (ns.dns.<origin>).
	Nameservers   []string
	Policy        *record.Policy // nil: none, every claim allowed
	AllowLoopback bool
}

// CheckHost is one host's valid documents as a tool read them.
type CheckHost struct {
	Host       *record.Host
	Containers []*record.Container
	// Created is each container document's CreateIndex in Consul, by
	// container ID: the age of its claims (see merge). Missing: 0.
	Created map[string]uint64
}

// Check compiles hosts' decoded documents for the zone as the plugin
// would, and returns every name it would leave out, sorted by host and
// name. Decoding the documents, and reporting those that do not decode, is
// the caller's (record.DecodeHost, record.DecodeContainer).
func Check(cz CheckZone, hosts []CheckHost) []Finding {
	policy := cz.Policy
	if policy == nil {
		policy = record.OpenPolicy
	}
	var ns []NSRecord
	for _, n := range cz.Nameservers {
		ns = append(ns, NSRecord{Name: n})
	}
	batch := make(map[string]*hostDocs, len(hosts))
	for _, h := range hosts {
		cs := slices.Clone(h.Containers)
		sort.Slice(cs, func(i, j int) bool { return cs[i].ID < cs[j].ID })
		created := make([]uint64, len(cs))
		for i, c := range cs {
			created[i] = h.Created[c.ID]
		}
		batch[h.Host.Name] = &hostDocs{Host: h.Host, Containers: cs, Created: created}
	}
	var out []Finding
	// What each host's own documents leave out.
	z := NewZone(cz.Origin, 5, ns, nil)
	z.policy, z.allowLoopback = policy, cz.AllowLoopback
	for name, docs := range batch {
		_, skipped := z.compile(docs)
		for k, why := range skipped {
			out = append(out, Finding{Host: name, Reason: k.reason, Name: k.name, Service: k.service, Alias: k.alias, Why: why})
		}
	}
	// Conflicts between hosts (claims of two services on one name) are
	// settled when the hosts' parts merge: install them all in one zone
	// and keep what the merge drops.
	all := NewZone(cz.Origin, 5, ns, nil)
	all.policy, all.allowLoopback = policy, cz.AllowLoopback
	all.dropped = func(name string, p part, holder string) {
		out = append(out, Finding{Host: p.host(), Reason: "conflict", Name: name, Service: p.claim.service, Alias: p.claim.alias,
			Why: droppedWhy(name, p, holder)})
	}
	all.update(batch, 1)
	slices.SortFunc(out, func(a, b Finding) int {
		if c := strings.Compare(a.Host, b.Host); c != 0 {
			return c
		}
		return strings.Compare(a.Name+a.Reason+a.Service, b.Name+b.Reason+b.Service)
	})
	return out
}
