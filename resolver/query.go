package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/miekg/dns"
)

// udpBufferSize is the EDNS0 buffer size we advertise: the DNS flag day 2020
// value, which avoids IP fragmentation. Larger answers come back truncated
// and are asked again over TCP.
const udpBufferSize = 1232

// systemServers reads the name servers from /etc/resolv.conf.
func systemServers(path string) ([]string, error) {
	conf, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil, err
	}
	if len(conf.Servers) == 0 {
		return nil, fmt.Errorf("%s lists no nameserver", path)
	}
	servers := make([]string, len(conf.Servers))
	for i, s := range conf.Servers {
		servers[i] = net.JoinHostPort(s, conf.Port)
	}
	return servers, nil
}

// serverAddr accepts "host", "host:port" or "[v6]:port" and adds port 53.
func serverAddr(s string) string {
	if _, _, err := net.SplitHostPort(s); err == nil {
		return s
	}
	return net.JoinHostPort(strings.Trim(s, "[]"), "53")
}

// query returns the response for (name, qtype) from the cache or the
// servers. It returns a response only for NOERROR and NXDOMAIN; anything else
// is a *QueryError.
func (r *Resolver) query(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	name = dns.Fqdn(name)
	if msg := r.cache.get(name, qtype, r.now()); msg != nil {
		return msg, nil
	}
	req := new(dns.Msg)
	req.SetQuestion(name, qtype)
	req.RecursionDesired = true
	req.SetEdns0(udpBufferSize, false)

	var lastErr error
	server := ""
	for _, server = range r.servers {
		msg, err := r.exchange(ctx, req, server)
		if err != nil {
			lastErr = err
			if ctx.Err() != nil {
				break
			}
			continue
		}
		switch msg.Rcode {
		case dns.RcodeSuccess, dns.RcodeNameError:
			r.cache.put(name, qtype, msg, r.now())
			return msg, nil
		}
		// SERVFAIL, REFUSED...: another server may know better.
		lastErr = errors.New(dns.RcodeToString[msg.Rcode])
	}
	return nil, &QueryError{Name: name, Type: dns.TypeToString[qtype], Server: server, Err: lastErr}
}

// exchange asks one server over UDP, and again over TCP when the answer was
// truncated.
func (r *Resolver) exchange(ctx context.Context, req *dns.Msg, server string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, r.queryTimeout)
	defer cancel()
	udp := &dns.Client{Net: "udp", UDPSize: udpBufferSize, Timeout: r.queryTimeout}
	msg, _, err := udp.ExchangeContext(ctx, req, server)
	if err == nil && !msg.Truncated {
		return msg, nil
	}
	if err != nil {
		return nil, err
	}
	tcp := &dns.Client{Net: "tcp", Timeout: r.queryTimeout}
	msg, _, err = tcp.ExchangeContext(ctx, req, server)
	return msg, err
}

// records returns the answer's records of type T, or why there are none:
// ErrNoSuchHost for NXDOMAIN, ErrNoRecords for NODATA.
func records[T dns.RR](msg *dns.Msg) ([]T, error) {
	if msg.Rcode == dns.RcodeNameError {
		return nil, ErrNoSuchHost
	}
	var out []T
	for _, rr := range msg.Answer {
		if t, ok := rr.(T); ok {
			out = append(out, t)
		}
	}
	if len(out) == 0 {
		return nil, ErrNoRecords
	}
	return out, nil
}
