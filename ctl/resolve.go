package ctl

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/berthdns/berth/record"
	"github.com/berthdns/berth/resolver"
)

// resolveTimeout bounds one DNS exchange of berth resolve.
const resolveTimeout = 3 * time.Second

// Resolution is `berth resolve -o json`.
type Resolution struct {
	Name    string `json:"name"` // fully qualified
	Port    int    `json:"port,omitempty"`
	Network string `json:"network"`
	// SRV is the SRV name whose answer gave the targets; "" when there is
	// none and a client dials the name as given.
	SRV string `json:"srv"`
	// Ordered says the targets are in the order a client tries them (with
	// a port: the resolver's RFC 2782 order, random within a priority);
	// without a port the targets are every port's, by priority and weight.
	Ordered bool     `json:"ordered"`
	Lookups []Lookup `json:"lookups"` // SRV names asked that gave nothing
	Targets []Target `json:"targets"`
	Error   string   `json:"error,omitempty"`
}

// Lookup is an SRV name asked that gave no target.
type Lookup struct {
	What  string `json:"what"`
	Error string `json:"error"`
}

// Target is one place a client would connect to.
type Target struct {
	Host     string   `json:"host"`
	Port     uint16   `json:"port"`
	Priority uint16   `json:"priority"`
	Weight   uint16   `json:"weight"`
	Addrs    []string `json:"addrs"` // from the answer's glue; empty: looked up when dialled
}

// qualify makes name fully qualified: a name without a trailing dot that is
// not under the zone is taken relative to it ("web.shop" is
// "web.shop.c.example.org.").
func qualify(name, zone string) string {
	name = strings.ToLower(name)
	if strings.HasSuffix(name, ".") {
		return name
	}
	if fq := name + "."; record.InZone(fq, zone+".") {
		return fq
	}
	return name + "." + zone + "."
}

// runResolve prints what a client would dial for NAME[:PORT].
func runResolve(ctx context.Context, o *options, stdout, stderr io.Writer) int {
	if len(o.args) != 1 {
		fmt.Fprintln(stderr, "berth resolve: give one NAME or NAME:PORT (the container port a client asks for)")
		return 2
	}
	arg := o.args[0]
	var res *Resolution
	var err error
	if host, port, splitErr := net.SplitHostPort(arg); splitErr == nil {
		res, err = resolvePort(ctx, o, qualify(host, o.zone), port)
	} else {
		res, err = resolveName(ctx, o, qualify(arg, o.zone))
	}
	if err != nil {
		fmt.Fprintf(stderr, "berth resolve: %s\n", clean(err.Error()))
		return 2
	}
	if o.output == "json" {
		writeJSON(stdout, res)
	} else {
		printResolution(stdout, res)
	}
	if res.Error != "" || len(res.Targets) == 0 {
		return 1
	}
	return 0
}

// resolvePort is the resolver's own plan for name:port (resolver.Resolve:
// the SRV names the resolver asks, its RFC 2782 order), without dialling.
func resolvePort(ctx context.Context, o *options, name, port string) (*Resolution, error) {
	r, err := resolver.New(resolver.Options{Server: o.dns, QueryTimeout: resolveTimeout, CacheSize: -1})
	if err != nil {
		return nil, err
	}
	res := &Resolution{Name: name, Network: o.network, Ordered: true, Lookups: []Lookup{}, Targets: []Target{}}
	p, err := net.LookupPort(o.network, port)
	if err != nil {
		return nil, fmt.Errorf("port %q: %w", port, err)
	}
	res.Port = p
	plan, err := r.Resolve(ctx, o.network, net.JoinHostPort(name, strconv.Itoa(p)))
	if err != nil {
		res.Error = err.Error()
		return res, nil
	}
	res.SRV = plan.SRV
	for _, l := range plan.Lookups {
		res.Lookups = append(res.Lookups, Lookup{What: l.What, Error: l.Err.Error()})
	}
	for _, t := range plan.Targets {
		tg := Target{Host: t.Host, Port: t.Port, Priority: t.Priority, Weight: t.Weight, Addrs: []string{}}
		for _, a := range t.Addrs {
			tg.Addrs = append(tg.Addrs, a.String())
		}
		res.Targets = append(res.Targets, tg)
	}
	return res, nil
}

// resolveName lists the SRV records of a bare service name, every port of
// every instance. The resolver dials name:port only and has no exported
// way to ask for a bare name, so this asks with miekg/dns and sorts by
// priority (lowest first) then weight (highest first): clients pick at
// random within a priority, weighted.
func resolveName(ctx context.Context, o *options, name string) (*Resolution, error) {
	server := o.dns
	if server == "" {
		conf, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil || len(conf.Servers) == 0 {
			return nil, fmt.Errorf("no --dns and no name server in /etc/resolv.conf: %v", err)
		}
		server = net.JoinHostPort(conf.Servers[0], conf.Port)
	} else if _, _, err := net.SplitHostPort(server); err != nil {
		server = net.JoinHostPort(strings.Trim(server, "[]"), "53")
	}
	res := &Resolution{Name: name, Network: o.network, Lookups: []Lookup{}, Targets: []Target{}}
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeSRV)
	q.SetEdns0(1232, false)
	c := &dns.Client{Timeout: resolveTimeout}
	in, _, err := c.ExchangeContext(ctx, q, server)
	if err == nil && in.Truncated {
		c.Net = "tcp"
		in, _, err = c.ExchangeContext(ctx, q, server)
	}
	if err != nil {
		res.Error = fmt.Sprintf("%s SRV: %s: %v", name, server, err)
		return res, nil
	}
	if in.Rcode != dns.RcodeSuccess {
		res.Lookups = append(res.Lookups, Lookup{What: name + " SRV", Error: dns.RcodeToString[in.Rcode]})
		return res, nil
	}
	var srvs []*dns.SRV
	for _, rr := range in.Answer {
		if srv, ok := rr.(*dns.SRV); ok {
			srvs = append(srvs, srv)
		}
	}
	if len(srvs) == 0 {
		res.Lookups = append(res.Lookups, Lookup{What: name + " SRV", Error: "no records"})
		return res, nil
	}
	res.SRV = name
	slices.SortStableFunc(srvs, func(a, b *dns.SRV) int {
		return cmp.Or(cmp.Compare(a.Priority, b.Priority), cmp.Compare(b.Weight, a.Weight),
			strings.Compare(a.Target, b.Target), cmp.Compare(a.Port, b.Port))
	})
	for _, srv := range srvs {
		t := Target{Host: srv.Target, Port: srv.Port, Priority: srv.Priority, Weight: srv.Weight, Addrs: []string{}}
		for _, a := range glue(in, srv.Target) {
			t.Addrs = append(t.Addrs, a.String())
		}
		res.Targets = append(res.Targets, t)
	}
	return res, nil
}

// glue is target's addresses in the answer's additional section.
func glue(msg *dns.Msg, target string) []netip.Addr {
	var out []netip.Addr
	for _, rr := range msg.Extra {
		if !strings.EqualFold(rr.Header().Name, target) {
			continue
		}
		switch rr := rr.(type) {
		case *dns.A:
			if a, ok := netip.AddrFromSlice(rr.A); ok {
				out = append(out, a.Unmap())
			}
		case *dns.AAAA:
			if a, ok := netip.AddrFromSlice(rr.AAAA); ok {
				out = append(out, a)
			}
		}
	}
	return out
}

func printResolution(w io.Writer, r *Resolution) {
	for _, l := range r.Lookups {
		fmt.Fprintf(w, "asked %s: %s\n", l.What, clean(l.Error))
	}
	switch {
	case r.Error != "":
		fmt.Fprintf(w, "error: %s\n", clean(r.Error))
		return
	case r.SRV == "" && len(r.Targets) > 0:
		fmt.Fprintf(w, "no SRV records: a client dials %s as given\n", clean(r.Targets[0].Host+":"+strconv.Itoa(int(r.Targets[0].Port))))
		return
	case r.SRV == "":
		fmt.Fprintf(w, "nothing to dial for %s\n", clean(r.Name))
		return
	case r.Ordered:
		fmt.Fprintf(w, "%s: %s, in the order a client tries them (random within a priority: another run may differ)\n",
			clean(r.SRV), plural(len(r.Targets), "target"))
	default:
		fmt.Fprintf(w, "%s: %s, every port's, by priority then weight (a client asks for one port: berth resolve NAME:PORT)\n",
			clean(r.SRV), plural(len(r.Targets), "target"))
	}
	t := newTable(w, "ORDER", "TARGET", "PORT", "PRIORITY", "WEIGHT", "ADDRS")
	for i, tg := range r.Targets {
		t.row(strconv.Itoa(i+1), tg.Host, strconv.Itoa(int(tg.Port)), strconv.Itoa(int(tg.Priority)),
			strconv.Itoa(int(tg.Weight)), strings.Join(tg.Addrs, ","))
	}
	t.flush()
}
