package ctl

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	berth "github.com/berthdns/berth/plugin"
)

// Finding is one thing the zone would leave out: a whole document (a
// Problem) or one name of a valid document (the plugin's berth.Finding).
type Finding struct {
	Reason string `json:"reason"`
	Host   string `json:"host,omitempty"`
	Key    string `json:"key,omitempty"`  // the document, for a Problem
	Name   string `json:"name,omitempty"` // the DNS name, for the plugin's findings
	Why    string `json:"why"`
}

// Findings is everything the zone for origin would leave out of ns: the
// documents that do not decode, orphans and a bad policy, then what
// berth.Check says of the valid documents under ns's policy.
func Findings(ns *Namespace, z zoneOptions) []Finding {
	var out []Finding
	for _, p := range ns.Problems {
		out = append(out, Finding{Reason: p.Reason, Host: p.Host, Key: p.Key, Why: p.Why})
	}
	for _, f := range zoneFindings(ns, z) {
		out = append(out, Finding{Reason: f.Reason, Host: f.Host, Name: f.Name, Why: f.Why})
	}
	return out
}

// zoneFindings is berth.Check over ns's valid documents: the plugin's own
// code decides what it leaves out, conflicts between claims included.
func zoneFindings(ns *Namespace, z zoneOptions) []berth.Finding {
	hosts := make([]berth.CheckHost, 0, len(ns.Hosts))
	for _, h := range ns.Hosts {
		ch := berth.CheckHost{Host: h.Doc, Created: make(map[string]uint64, len(h.Containers))}
		for _, c := range h.Containers {
			ch.Containers = append(ch.Containers, c.Doc)
			ch.Created[c.Doc.ID] = c.Created
		}
		hosts = append(hosts, ch)
	}
	return berth.Check(berth.CheckZone{Origin: z.origin, Nameservers: z.nameservers, Policy: ns.Policy,
		AllowLoopback: z.allowLoopback}, hosts)
}

// zoneOptions are the Corefile's settings that decide what the zone
// serves, as the command line gives them.
type zoneOptions struct {
	origin        string
	nameservers   []string
	allowLoopback bool
}

// checkReport is `berth check -o json`.
type checkReport struct {
	OK         bool `json:"ok"`
	Hosts      int  `json:"hosts"`
	Containers int  `json:"containers"`
	Policy     bool `json:"policy"` // an ownership policy applies
	// PolicyInvalid: the policy document does not validate, and the plugin
	// serves no claim and no address (record.ClosedPolicy).
	PolicyInvalid bool      `json:"policy_invalid,omitempty"`
	Findings      []Finding `json:"findings"`
}

// runCheck prints what the zone would leave out; 1 when anything.
func runCheck(ns *Namespace, o *options, stdout io.Writer) int {
	findings := Findings(ns, o.zoneOptions())
	rep := checkReport{OK: len(findings) == 0, Hosts: len(ns.Hosts), Containers: ns.Containers(),
		Policy: ns.Policy != nil, PolicyInvalid: ns.Policy.Closed(), Findings: findings}
	if rep.Findings == nil {
		rep.Findings = []Finding{}
	}
	if o.output == "json" {
		writeJSON(stdout, rep)
	} else {
		if len(findings) > 0 {
			t := newTable(stdout, "REASON", "HOST", "KEY OR NAME", "WHY")
			for _, f := range findings {
				t.row(f.Reason, f.Host, f.Key+f.Name, f.Why)
			}
			t.flush()
		}
		fmt.Fprintln(stdout, summary(rep))
	}
	if !rep.OK {
		return 1
	}
	return 0
}

// summary is the last line of `berth check`.
func summary(r checkReport) string {
	s := fmt.Sprintf("%s, %s", plural(r.Hosts, "host"), plural(r.Containers, "container"))
	switch {
	case r.PolicyInvalid:
		s += ", an ownership policy that does not validate (no claim or address is served)"
	case r.Policy:
		s += ", an ownership policy"
	default:
		s += ", no ownership policy (every host may publish every name)"
	}
	if r.OK {
		return s + ": everything would be served"
	}
	counts := map[string]int{}
	for _, f := range r.Findings {
		counts[f.Reason]++
	}
	var parts []string
	for _, reason := range slices.Sorted(maps.Keys(counts)) {
		parts = append(parts, fmt.Sprintf("%d %s", counts[reason], reason))
	}
	return fmt.Sprintf("%s: %d left out of the zone (%s)", s, len(r.Findings), strings.Join(parts, ", "))
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
