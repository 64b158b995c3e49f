package ctl

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/hashicorp/consul/api"

	"github.com/berthdns/berth/record"
)

// Namespace is the prefix's documents as a read (ReadBounded) gave them,
// decoded by the rules the plugin applies (plugin/watch.go): what it would
// serve in Hosts, what it would not in Problems.
type Namespace struct {
	Prefix string
	Index  uint64 // Consul's index of the read
	// Policy is the ownership policy; nil when there is none (the plugin
	// then allows every claim, README.md's "Security"), record.ClosedPolicy
	// when it does not validate (the plugin then allows no claim and no
	// address).
	Policy      *record.Policy
	PolicyIndex uint64
	Hosts       []*Host   // valid host documents, by name
	Problems    []Problem // invalid documents, orphans, a bad policy; by key
}

// Host is a valid host document and its valid container documents. A host
// in both KV layouts (record.Layout) is one host, served from the document
// the plugin serves (plugin/watch.go's hostDoc): the one of the higher rev,
// layout 2 on a tie.
type Host struct {
	Key   string // the served document's key
	Doc   *record.Host
	Index uint64 // the document's ModifyIndex: its last change
	// Layout is where the host has a valid document: "1", "2" or "both"
	// (record.WriteMode's names), the progress of a migration.
	Layout record.WriteMode
	// Session is the ID of the session holding the key ("" for none), and
	// SessionLive whether Consul still knows it (set by Sessions).
	Session       string
	SessionLive   bool
	SessionDenied bool         // the token may not read sessions
	Containers    []*Container // by ID
}

// Container is a valid container document.
type Container struct {
	Key     string
	Host    string
	Doc     *record.Container
	Index   uint64
	Created uint64 // the key's CreateIndex: the age of its claims, as the plugin weighs them
}

// Problem is a document the plugin would not serve at all.
type Problem struct {
	Reason string // one of the Problem* reasons
	Host   string // the host the key names, when it names one
	Key    string
	Why    string
}

// Reasons of Problems, snake_case as the plugin's reasons are.
const (
	ProblemInvalid = "invalid_document" // does not decode or validate
	ProblemOrphan  = "orphan"           // a container document without its host's
	ProblemPolicy  = "invalid_policy"   // the ownership policy does not validate
)

// Decode sorts the pairs under prefix into a Namespace. Keys that are no
// document of the contract (deeper than <prefix>/containers/<host>/<id>,
// or outside hosts/, shards/, containers/ and policy) are ignored, as the
// plugin ignores them; a key under shards/ that is not a host's rev key
// (record.ParseHostRevKey) is invalid, as the plugin refuses it.
func Decode(prefix string, pairs api.KVPairs) *Namespace {
	ns := &Namespace{Prefix: prefix}
	hosts := map[string]*Host{}   // layout 1
	hostsV2 := map[string]*Host{} // layout 2
	revs := map[string]uint64{}   // host -> its highest rev in layout 2
	revPairs := map[string]*api.KVPair{}
	badHosts := map[string]string{} // host -> the key of its invalid document
	var containers []*Container
	// decodeHost decodes name's host document in either layout; an invalid
	// one is a problem, and its key explains the host's orphans.
	decodeHost := func(name string, p *api.KVPair) *Host {
		h, err := record.DecodeHostOf(name, p.Key, p.Value)
		if err != nil {
			ns.Problems = append(ns.Problems, Problem{Reason: ProblemInvalid, Host: name, Key: p.Key, Why: err.Error()})
			badHosts[name] = p.Key
			return nil
		}
		return &Host{Key: p.Key, Doc: h, Index: p.ModifyIndex, Session: p.Session}
	}
	for _, p := range pairs {
		switch {
		case strings.HasPrefix(p.Key, record.ShardsPrefix(prefix)):
			name, rev, err := record.ParseHostRevKey(prefix, p.Key)
			if err != nil {
				ns.Problems = append(ns.Problems, Problem{Reason: ProblemInvalid, Key: p.Key, Why: err.Error()})
				continue
			}
			// Only the highest rev of a host counts, as the plugin reads
			// it; a lower one is a leftover its exporter deletes.
			if cur, ok := revs[name]; !ok || rev > cur {
				revs[name], revPairs[name] = rev, p
			}
		case p.Key == record.PolicyKey(prefix):
			pol, err := record.DecodePolicy(p.Key, p.Value)
			if err != nil {
				ns.Problems = append(ns.Problems, Problem{Reason: ProblemPolicy, Key: p.Key, Why: err.Error()})
				pol = record.ClosedPolicy
			}
			ns.Policy, ns.PolicyIndex = pol, p.ModifyIndex
		case strings.HasPrefix(p.Key, record.HostsPrefix(prefix)):
			name := strings.TrimPrefix(p.Key, record.HostsPrefix(prefix))
			if h := decodeHost(name, p); h != nil {
				hosts[name] = h
			}
		default:
			host, id, ok := record.HostFromContainerKey(prefix, p.Key)
			if !ok {
				continue
			}
			c, err := record.DecodeContainerOf(id, p.Key, p.Value)
			if err != nil {
				ns.Problems = append(ns.Problems, Problem{Reason: ProblemInvalid, Host: host, Key: p.Key, Why: err.Error()})
				continue
			}
			containers = append(containers, &Container{Key: p.Key, Host: host, Doc: c, Index: p.ModifyIndex, Created: p.CreateIndex})
		}
	}
	for name, p := range revPairs {
		if h := decodeHost(name, p); h != nil {
			hostsV2[name] = h
		}
	}
	for name, h2 := range hostsV2 {
		switch h1 := hosts[name]; {
		case h1 == nil:
			h2.Layout = record.WriteV2
			hosts[name] = h2
		case h2.Doc.Rev >= h1.Doc.Rev:
			h2.Layout = record.WriteBoth
			hosts[name] = h2
		default:
			h1.Layout = record.WriteBoth
		}
	}
	for _, h := range hosts {
		if h.Layout == "" {
			h.Layout = record.WriteV1
		}
	}
	for _, c := range containers {
		h := hosts[c.Host]
		if h == nil {
			why := "no host document " + record.HostKey(prefix, c.Host) + " nor under " + record.HostRevPrefix(prefix, c.Host) +
				": the plugin serves a host's containers only with its host document"
			if bad, ok := badHosts[c.Host]; ok {
				why = "the host document " + bad + " is invalid: the plugin serves a host's containers only with a valid one"
			}
			ns.Problems = append(ns.Problems, Problem{Reason: ProblemOrphan, Host: c.Host, Key: c.Key, Why: why})
			continue
		}
		h.Containers = append(h.Containers, c)
	}
	for _, h := range hosts {
		slices.SortFunc(h.Containers, func(a, b *Container) int { return strings.Compare(a.Doc.ID, b.Doc.ID) })
		ns.Hosts = append(ns.Hosts, h)
	}
	slices.SortFunc(ns.Hosts, func(a, b *Host) int { return strings.Compare(a.Doc.Name, b.Doc.Name) })
	slices.SortFunc(ns.Problems, func(a, b Problem) int { return strings.Compare(a.Key, b.Key) })
	return ns
}

// Sessions asks Consul whether each host's session still exists. A token
// that may not read a session (the plugin's policy, record.PluginACL, has
// no session rule) gets an empty answer filtered by the ACLs, or a 403:
// that leaves the state unknown rather than calling the session gone.
func (ns *Namespace) Sessions(ctx context.Context, s *api.Session) error {
	for _, h := range ns.Hosts {
		if h.Session == "" {
			continue
		}
		entry, meta, err := s.Info(h.Session, (&api.QueryOptions{}).WithContext(ctx))
		var status api.StatusError
		if errors.As(err, &status) && status.Code == http.StatusForbidden || err == nil && entry == nil && meta.ResultsFilteredByACLs {
			h.SessionDenied = true
			continue
		}
		if err != nil {
			return fmt.Errorf("consul: session %s: %w", h.Session, err)
		}
		h.SessionLive = entry != nil
	}
	return nil
}

// Containers counts the valid container documents of served hosts.
func (ns *Namespace) Containers() int {
	n := 0
	for _, h := range ns.Hosts {
		n += len(h.Containers)
	}
	return n
}
