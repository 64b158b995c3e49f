package berth

import (
	"context"

	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/pkg/fall"
	clog "github.com/coredns/coredns/plugin/pkg/log"
	"github.com/coredns/coredns/request"

	"github.com/berthdns/berth/record"
	"github.com/miekg/dns"
)

var log = clog.NewWithPlugin("berth")

// Berth is the plugin handler for one server block.
type Berth struct {
	Next  plugin.Handler
	Fall  fall.F
	zones map[string]*Zone
	names []string // the zones' origins: lower-case FQDNs
}

// Name implements plugin.Handler.
func (b *Berth) Name() string { return "berth" }

// Ready implements ready.Readiness: ready once every zone had its first full
// load from Consul.
func (b *Berth) Ready() bool {
	for _, z := range b.zones {
		if !z.Loaded() {
			return false
		}
	}
	return true
}

// ServeDNS implements plugin.Handler.
func (b *Berth) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	state := request.Request{W: w, Req: r}
	qname := state.Name()
	origin := b.match(qname)
	if origin == "" || state.QClass() != dns.ClassINET {
		return plugin.NextOrFailure(b.Name(), b.Next, ctx, w, r)
	}
	if r.Opcode != dns.OpcodeQuery {
		// The zone's data comes from Consul alone: a NOTIFY has nothing to
		// make us fetch and an UPDATE nothing we could apply. REFUSED tells
		// a misdirected NOTIFY's sender at once, where silence (the file
		// plugin's answer for a zone it is primary for) costs it retries.
		rcode := dns.RcodeRefused
		if r.Opcode != dns.OpcodeNotify {
			rcode = dns.RcodeNotImplemented
		}
		nonQueries.WithLabelValues(origin, dns.OpcodeToString[r.Opcode]).Inc()
		return rcode, nil
	}
	if qt := state.QType(); qt == dns.TypeAXFR || qt == dns.TypeIXFR {
		// Transfers are the transfer plugin's, which sits before us when
		// it is configured; one that reaches us is not allowed.
		return dns.RcodeRefused, nil
	}
	answer, ns, extra, res := b.zones[origin].Lookup(qname, state.QType())
	switch {
	case res == NotLoaded:
		// Before the first load from Consul we know nothing: say so rather
		// than deny names that may well exist.
		return dns.RcodeServerFailure, nil
	case res == NameError && b.Fall.Through(qname):
		return plugin.NextOrFailure(b.Name(), b.Next, ctx, w, r)
	}

	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	m.Answer, m.Ns, m.Extra = answer, ns, extra
	if res == NameError {
		m.Rcode = dns.RcodeNameError
	}
	// The server's ScrubWriter truncates an answer too large for the
	// client's UDP size and sets TC.
	w.WriteMsg(m)
	return dns.RcodeSuccess, nil
}

// match returns the longest origin that qname (lower case, fully qualified)
// is in, or "". It does what plugin.Zones.Matches does without allocating:
// this runs for every query.
func (b *Berth) match(qname string) string {
	best := ""
	for _, o := range b.names {
		if len(o) > len(best) && record.InZone(qname, o) {
			best = o
		}
	}
	return best
}
