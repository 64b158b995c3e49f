package testenv

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// DNSServer is a real authoritative DNS server (miekg/dns, UDP and TCP on one
// loopback port) serving the records a test gives it. It answers like the
// Berth plugin does: NXDOMAIN or NODATA with the SOA for negative answers,
// target addresses as glue in the additional section of SRV answers (when
// Glue is set), and answers too large for UDP truncated with TC set.
type DNSServer struct {
	Addr string // 127.0.0.1:port

	udp, tcpServer *dns.Server

	mu       sync.Mutex
	rrs      []dns.RR
	glue     bool
	servfail map[string]bool
	queries  map[string]int
	tcp      int
}

// StartDNSServer serves records (zone-file lines, e.g.
// "_80._tcp.web.z. 60 IN SRV 10 10 8080 h1.z.") until the test ends.
func StartDNSServer(t T, records ...string) *DNSServer {
	t.Helper()
	s, err := NewDNSServer(records...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// NewDNSServer is StartDNSServer for code without a T, such as
// examples; the caller must Close it.
func NewDNSServer(records ...string) (*DNSServer, error) {
	s := &DNSServer{servfail: map[string]bool{}, queries: map[string]int{}}
	if err := s.Set(records...); err != nil {
		return nil, err
	}
	// Both transports on the same port: retry if UDP's port is taken.
	var pc net.PacketConn
	var ln net.Listener
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		p, err := net.ListenPacket("udp", l.Addr().String())
		if err != nil {
			l.Close()
			continue
		}
		ln, pc = l, p
		break
	}
	if ln == nil {
		return nil, errors.New("no loopback port free for both UDP and TCP")
	}
	s.Addr = ln.Addr().String()
	s.udp = &dns.Server{PacketConn: pc, Handler: s}
	s.tcpServer = &dns.Server{Listener: ln, Handler: s}
	var started sync.WaitGroup
	started.Add(2)
	s.udp.NotifyStartedFunc = started.Done
	s.tcpServer.NotifyStartedFunc = started.Done
	go func() { _ = s.udp.ActivateAndServe() }()
	go func() { _ = s.tcpServer.ActivateAndServe() }()
	started.Wait()
	return s, nil
}

// Close stops the server.
func (s *DNSServer) Close() {
	_ = s.udp.Shutdown()
	_ = s.tcpServer.Shutdown()
}

// Set replaces the served records.
func (s *DNSServer) Set(records ...string) error {
	rrs := make([]dns.RR, 0, len(records))
	for _, line := range records {
		rr, err := dns.NewRR(line)
		if err != nil {
			return fmt.Errorf("test DNS record %q: %w", line, err)
		}
		rrs = append(rrs, rr)
	}
	s.mu.Lock()
	s.rrs = rrs
	s.mu.Unlock()
	return nil
}

// SetGlue makes SRV answers carry their targets' A/AAAA records.
func (s *DNSServer) SetGlue(on bool) {
	s.mu.Lock()
	s.glue = on
	s.mu.Unlock()
}

// ServFail makes every query for name fail with SERVFAIL.
func (s *DNSServer) ServFail(name string) {
	s.mu.Lock()
	s.servfail[dns.CanonicalName(name)] = true
	s.mu.Unlock()
}

// Queries is how many queries for (name, qtype) the server has answered.
func (s *DNSServer) Queries(name string, qtype uint16) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[queryKey(dns.CanonicalName(name), qtype)]
}

// TCPQueries is how many queries arrived over TCP.
func (s *DNSServer) TCPQueries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tcp
}

func queryKey(name string, qtype uint16) string { return name + "/" + dns.TypeToString[qtype] }

// ServeDNS implements dns.Handler.
func (s *DNSServer) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		_ = w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := dns.CanonicalName(q.Name)

	s.mu.Lock()
	s.queries[queryKey(name, q.Qtype)]++
	_, isTCP := w.RemoteAddr().(*net.TCPAddr)
	if isTCP {
		s.tcp++
	}
	if s.servfail[name] {
		s.mu.Unlock()
		m.Rcode = dns.RcodeServerFailure
		_ = w.WriteMsg(m)
		return
	}
	exists := false
	for _, rr := range s.rrs {
		owner := dns.CanonicalName(rr.Header().Name)
		// An owner below name makes name an empty non-terminal: it exists.
		if owner == name || strings.HasSuffix(owner, "."+name) {
			exists = true
		}
		if owner == name && rr.Header().Rrtype == q.Qtype {
			m.Answer = append(m.Answer, dns.Copy(rr))
		}
	}
	if s.glue {
		for _, rr := range m.Answer {
			if srv, ok := rr.(*dns.SRV); ok {
				m.Extra = append(m.Extra, s.addressesLocked(srv.Target)...)
			}
		}
	}
	if len(m.Answer) == 0 {
		if !exists {
			m.Rcode = dns.RcodeNameError
		}
		m.Ns = append(m.Ns, s.soaLocked(name))
	}
	s.mu.Unlock()

	size := dns.MinMsgSize
	if isTCP {
		size = dns.MaxMsgSize
	} else if opt := req.IsEdns0(); opt != nil {
		size = int(opt.UDPSize())
	}
	m.Truncate(size)
	_ = w.WriteMsg(m)
}

func (s *DNSServer) addressesLocked(target string) []dns.RR {
	var out []dns.RR
	for _, rr := range s.rrs {
		t := rr.Header().Rrtype
		if (t == dns.TypeA || t == dns.TypeAAAA) && dns.CanonicalName(rr.Header().Name) == dns.CanonicalName(target) {
			out = append(out, dns.Copy(rr))
		}
	}
	return out
}

// soaLocked is the served SOA closest above name, or a default with a
// 60-second negative TTL.
func (s *DNSServer) soaLocked(name string) dns.RR {
	var best *dns.SOA
	for _, rr := range s.rrs {
		soa, ok := rr.(*dns.SOA)
		if !ok || !dns.IsSubDomain(soa.Hdr.Name, name) {
			continue
		}
		if best == nil || dns.CountLabel(soa.Hdr.Name) > dns.CountLabel(best.Hdr.Name) {
			best = soa
		}
	}
	if best != nil {
		return dns.Copy(best)
	}
	return &dns.SOA{
		Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 60},
		Ns:  "ns.invalid.", Mbox: "hostmaster.invalid.", Serial: uint32(time.Now().Unix()),
		Refresh: 60, Retry: 60, Expire: 60, Minttl: 60,
	}
}
