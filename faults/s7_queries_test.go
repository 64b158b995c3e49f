package faults

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthdns/berth/internal/testenv"
	"github.com/miekg/dns"
)

// rawExchange sends one wire message and returns the raw reply (nil, nil
// when none came within the timeout: the server may rightly drop garbage).
func rawExchange(network, addr string, msg []byte, timeout time.Duration) ([]byte, error) {
	conn, err := net.DialTimeout(network, addr, timeout)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if network == "tcp" {
		if len(msg) > 65535 {
			return nil, errors.New("message too long for TCP")
		}
		b := make([]byte, 2+len(msg))
		binary.BigEndian.PutUint16(b, uint16(len(msg)))
		copy(b[2:], msg)
		if _, err := conn.Write(b); err != nil {
			return nil, nil // the server closed on us: no reply
		}
		var l [2]byte
		if _, err := io.ReadFull(conn, l[:]); err != nil {
			return nil, nil
		}
		reply := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(conn, reply); err != nil {
			return nil, fmt.Errorf("reply shorter than its length prefix: %w", err)
		}
		return reply, nil
	}
	if _, err := conn.Write(msg); err != nil {
		return nil, err
	}
	buf := make([]byte, 65536)
	n, err := conn.Read(buf)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, nil
		}
		return nil, nil // ICMP refused and the like: no reply
	}
	return buf[:n], nil
}

// zoneSet is every record of the zone, TTL-less, for judging answers.
func zoneSet(rrs []dns.RR) map[string]bool {
	set := map[string]bool{}
	for _, rr := range rrs {
		set[rrKey(rr)] = true
	}
	return set
}

func rrKey(rr dns.RR) string {
	rr = dns.Copy(rr)
	rr.Header().Ttl = 0
	rr.Header().Name = strings.ToLower(rr.Header().Name)
	return strings.ToLower(rr.String())
}

// judge checks one reply to query q (nil when q was not well-formed):
// it parses, it answers that query, its answer records are the zone's, and
// a UDP reply fits the client's size.
func (s *dnsStats) judge(network string, req []byte, q *dns.Msg, reply []byte, zset map[string]bool, what string) {
	s.queries.Add(1)
	if reply == nil {
		s.noReply.Add(1)
		if q != nil && q.Opcode == dns.OpcodeQuery && len(q.Question) == 1 && !q.Response && wellFormed(q) {
			s.badf("%s %s: no reply to a well-formed query", network, what)
		}
		return
	}
	r := new(dns.Msg)
	if err := r.Unpack(reply); err != nil {
		s.badf("%s %s: reply does not parse: %v", network, what, err)
		return
	}
	s.rcode(r.Rcode)
	if len(req) >= 2 && r.Id != binary.BigEndian.Uint16(req) {
		s.badf("%s %s: reply ID %d, query ID %d", network, what, r.Id, binary.BigEndian.Uint16(req))
	}
	if !r.Response {
		s.badf("%s %s: reply without QR", network, what)
	}
	if network == "udp" {
		limit := dns.MinMsgSize
		if q != nil {
			if opt := q.IsEdns0(); opt != nil && int(opt.UDPSize()) > limit {
				limit = int(opt.UDPSize())
			}
		}
		if len(reply) > limit {
			s.badf("udp %s: %d-byte reply over the client's %d", what, len(reply), limit)
		}
	}
	if q == nil || len(q.Question) != 1 {
		if len(r.Answer) > 0 {
			s.badf("%s %s: answers %v to a malformed query", network, what, r.Answer)
		}
		return
	}
	qq := q.Question[0]
	if len(r.Question) == 1 && (!strings.EqualFold(r.Question[0].Name, qq.Name) || r.Question[0].Qtype != qq.Qtype) {
		s.badf("%s %s: reply for question %v", network, what, r.Question[0])
	}
	if r.Rcode == dns.RcodeNameError && len(r.Answer) > 0 {
		s.badf("%s %s: NXDOMAIN with answers", network, what)
	}
	if r.Rcode == dns.RcodeServerFailure && qq.Qclass == dns.ClassINET && dataType(qq.Qtype) && dns.IsSubDomain(zone, strings.ToLower(qq.Name)) && wellFormed(q) {
		s.badf("%s %s: SERVFAIL from a loaded zone", network, what)
	}
	for _, rr := range r.Answer {
		if qq.Qtype != dns.TypeANY && rr.Header().Rrtype != qq.Qtype && qq.Qtype != dns.TypeAXFR && qq.Qtype != dns.TypeIXFR {
			s.badf("%s %s: answer of type %s", network, what, dns.TypeToString[rr.Header().Rrtype])
		}
		if !zset[rrKey(rr)] {
			s.badf("%s %s: answer %s is not in the zone", network, what, rr)
		}
	}
}

// dataType: not a meta or question-only type.
func dataType(t uint16) bool {
	return t != dns.TypeOPT && (t < 128 || t > 255) && t != 0
}

// wellFormed: at most one OPT, version 0.
func wellFormed(q *dns.Msg) bool {
	n := 0
	for _, rr := range q.Extra {
		if opt, ok := rr.(*dns.OPT); ok {
			n++
			if opt.Version() != 0 || opt.Hdr.Name != "." {
				return false
			}
		}
	}
	return n <= 1 && len(q.Answer) == 0 && len(q.Ns) == 0
}

// send packs q (or sends raw when q is nil), exchanges and judges it.
func (s *dnsStats) send(network, addr string, q *dns.Msg, raw []byte, zset map[string]bool, what string) {
	timeout := testenv.QueryTimeout
	if q == nil {
		// Hand-built packets: the server may rightly drop them, so do not
		// wait long for the reply: a probe's timeout.
		timeout = testenv.ProbeTimeout
	}
	if q != nil {
		b, err := q.Pack()
		if err != nil {
			panic(fmt.Sprintf("%s: pack: %v", what, err))
		}
		raw = b
	} else if r := new(dns.Msg); r.Unpack(raw) == nil {
		q = r
	}
	reply, err := rawExchange(network, addr, raw, timeout)
	if err == nil && reply == nil && network == "udp" && q != nil && wellFormed(q) && len(q.Question) == 1 && !q.Response {
		reply, err = rawExchange(network, addr, raw, testenv.QueryTimeout) // one retry: UDP may drop
	}
	if err != nil {
		s.badf("%s %s: %v", network, what, err)
		return
	}
	s.judge(network, raw, q, reply, zset, what)
}

// parallel runs f(i) for i in [0,n) on workers goroutines.
func parallel(n, workers int, f func(i int)) {
	var wg sync.WaitGroup
	next := make(chan int, 1024)
	for range workers {
		wg.Go(func() {
			for i := range next {
				f(i)
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

func question(name string, qtype, qclass uint16) *dns.Msg {
	m := new(dns.Msg)
	m.Id = dns.Id()
	m.RecursionDesired = true
	m.Question = []dns.Question{{Name: name, Qtype: qtype, Qclass: qclass}}
	return m
}

// wire builds a query by hand: header fields, then body bytes.
func wire(id uint16, flags uint16, qd, an, ns, ar uint16, body ...[]byte) []byte {
	b := make([]byte, 12)
	binary.BigEndian.PutUint16(b[0:], id)
	binary.BigEndian.PutUint16(b[2:], flags)
	binary.BigEndian.PutUint16(b[4:], qd)
	binary.BigEndian.PutUint16(b[6:], an)
	binary.BigEndian.PutUint16(b[8:], ns)
	binary.BigEndian.PutUint16(b[10:], ar)
	for _, x := range body {
		b = append(b, x...)
	}
	return b
}

// labels encodes raw labels as a name (no validation at all).
func labels(ls ...string) []byte {
	var b []byte
	for _, l := range ls {
		b = append(b, byte(len(l)))
		b = append(b, l...)
	}
	return append(b, 0)
}

func zoneLabels(ls ...string) []byte {
	return labels(append(ls, dns.SplitDomainName(zone)...)...)
}

func u16(vs ...uint16) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.BigEndian.AppendUint16(b, v)
	}
	return b
}

// optRR is an OPT record with the given owner (raw), size, ttl field and
// rdata.
func optRR(owner []byte, size uint16, ttl uint32, rdata []byte) []byte {
	b := append([]byte{}, owner...)
	b = append(b, u16(dns.TypeOPT, size)...)
	b = binary.BigEndian.AppendUint32(b, ttl)
	b = append(b, u16(uint16(len(rdata)))...)
	return append(b, rdata...)
}

func ednsOption(code uint16, data []byte) []byte {
	return append(u16(code, uint16(len(data))), data...)
}

// hostileQueries sends every query type and class, EDNS0 edge cases and
// malformed packets over UDP and TCP, checking every reply and that the
// server keeps answering.
func hostileQueries(t *testing.T, w *world) *dnsStats {
	st := &dnsStats{}
	addr := w.dns.Addr
	zset := zoneSet(settledZone(t, addr)) // every answer is judged against it
	names := []string{zone, "web-1.good.hosts." + zone, "web.shop." + zone, "nope." + zone, "shop." + zone,
		"_http._tcp.web.shop." + zone, "WEB-1.Good.HOSTS.f.BERTH.test.", "outside.example."}
	alive := func(what string) {
		t.Helper()
		r, err := testenv.Exchange("udp", addr, "web-1.good.hosts."+zone, dns.TypeSRV, 0)
		if err != nil || wantSRV(32768)(r) != nil {
			t.Fatalf("after %s the server no longer answers correctly: %v %v\n%s", what, r, err, w.dns.Output())
		}
	}
	start := time.Now()

	// Every type, over UDP; the first 300 on every name over UDP and TCP.
	parallel(65536, 8, func(i int) {
		qt := uint16(i)
		st.send("udp", addr, question(names[i%len(names)], qt, dns.ClassINET), nil, zset, fmt.Sprintf("type %d", qt))
	})
	alive("the type sweep")
	parallel(300*len(names), 8, func(i int) {
		qt, name := uint16(i/len(names)), names[i%len(names)]
		st.send("udp", addr, question(name, qt, dns.ClassINET), nil, zset, fmt.Sprintf("%s type %d", name, qt))
		st.send("tcp", addr, question(name, qt, dns.ClassINET), nil, zset, fmt.Sprintf("%s type %d", name, qt))
	})
	for range 500 {
		qt := uint16(rand.IntN(65536))
		st.send("tcp", addr, question(names[1], qt, dns.ClassINET), nil, zset, fmt.Sprintf("tcp type %d", qt))
	}
	alive("the TCP type sweep")
	// Every class, over UDP; a sample over TCP.
	parallel(65536, 8, func(i int) {
		st.send("udp", addr, question(names[1], dns.TypeSRV, uint16(i)), nil, zset, fmt.Sprintf("class %d", i))
	})
	for _, c := range []uint16{0, 1, 2, 3, 4, 254, 255, 256, 65535} {
		st.send("tcp", addr, question(names[1], dns.TypeSRV, c), nil, zset, fmt.Sprintf("tcp class %d", c))
	}
	alive("the class sweep")
	t.Logf("type and class sweeps: %d queries in %s", st.queries.Load(), time.Since(start).Round(time.Millisecond))

	// EDNS0 sizes on an answer of 60 SRV records (about 3 KB).
	big := "big." + zone
	for _, size := range []uint16{0, 1, 255, 511, 512, 513, 1232, 1400, 4096, 65535} {
		for _, network := range []string{"udp", "tcp"} {
			q := question(big, dns.TypeSRV, dns.ClassINET)
			q.SetEdns0(size, size%2 == 1)
			st.send(network, addr, q, nil, zset, fmt.Sprintf("EDNS0 size %d", size))
			b, _ := q.Pack()
			reply, _ := rawExchange(network, addr, b, testenv.QueryTimeout)
			r := new(dns.Msg)
			if reply == nil || r.Unpack(reply) != nil {
				continue
			}
			whole := len(r.Answer) == 60
			if network == "tcp" && (!whole || r.Truncated) {
				st.badf("tcp EDNS0 size %d: %d answers, TC=%v; over TCP the answer must be whole", size, len(r.Answer), r.Truncated)
			}
			if network == "udp" && !whole && !r.Truncated {
				st.badf("udp EDNS0 size %d: %d of 60 answers without TC", size, len(r.Answer))
			}
		}
	}
	alive("the EDNS0 sizes")

	// Malformed and hostile packets, by hand.
	id := uint16(0x4242)
	qd := func(name []byte, qtype uint16) []byte {
		return append(append([]byte{}, name...), u16(qtype, dns.ClassINET)...)
	}
	web := zoneLabels("web-1", "good", "hosts")
	root := []byte{0}
	long := strings.Repeat("x", 63)
	raw := []struct {
		what string
		b    []byte
	}{
		{"empty packet", nil},
		{"one byte", []byte{1}},
		{"short header", make([]byte, 11)},
		{"header only, qdcount 1", wire(id, 0x0100, 1, 0, 0, 0)},
		{"header only, qdcount 0", wire(id, 0x0100, 0, 0, 0, 0)},
		{"two questions", wire(id, 0x0100, 2, 0, 0, 0, qd(web, dns.TypeA), qd(web, dns.TypeSRV))},
		{"qdcount 65535, one question", wire(id, 0x0100, 65535, 0, 0, 0, qd(web, dns.TypeA))},
		{"arcount 65535", wire(id, 0x0100, 1, 0, 0, 65535, qd(web, dns.TypeA))},
		{"an answer in a query", wire(id, 0x0100, 1, 1, 0, 0, qd(web, dns.TypeA), qd(web, dns.TypeA), []byte{0, 0, 0, 1, 0, 4, 1, 2, 3, 4})},
		{"QR set (a response)", wire(id, 0x8100, 1, 0, 0, 0, qd(web, dns.TypeA))},
		{"opcode IQUERY", wire(id, 0x0800, 1, 0, 0, 0, qd(web, dns.TypeA))},
		{"opcode STATUS", wire(id, 0x1000, 1, 0, 0, 0, qd(web, dns.TypeA))},
		{"opcode NOTIFY", wire(id, 0x2000, 1, 0, 0, 0, qd(zoneLabels(), dns.TypeSOA))},
		{"opcode UPDATE", wire(id, 0x2800, 1, 0, 0, 0, qd(zoneLabels(), dns.TypeSOA))},
		{"opcode 15", wire(id, 0x7800, 1, 0, 0, 0, qd(web, dns.TypeA))},
		{"rcode bits in a query", wire(id, 0x010f, 1, 0, 0, 0, qd(web, dns.TypeA))},
		{"Z bit", wire(id, 0x0140, 1, 0, 0, 0, qd(web, dns.TypeA))},
		{"label of 64 octets", wire(id, 0x0100, 1, 0, 0, 0, qd(zoneLabels(long+"x"), dns.TypeA))},
		{"extended label type 0x40", wire(id, 0x0100, 1, 0, 0, 0, []byte{0x41, 'a', 0}, u16(dns.TypeA, 1))},
		{"reserved label type 0x80", wire(id, 0x0100, 1, 0, 0, 0, []byte{0x81, 'a', 0}, u16(dns.TypeA, 1))},
		{"pointer to itself", wire(id, 0x0100, 1, 0, 0, 0, []byte{0xc0, 12}, u16(dns.TypeA, 1))},
		{"pointer past the end", wire(id, 0x0100, 1, 0, 0, 0, []byte{0xc0, 0xff}, u16(dns.TypeA, 1))},
		{"pointer loop", wire(id, 0x0100, 1, 0, 0, 0, []byte{1, 'a', 0xc0, 14, 0xc0, 12}, u16(dns.TypeA, 1))},
		{"name over 255 octets", wire(id, 0x0100, 1, 0, 0, 0, qd(zoneLabels(long, long, long, long), dns.TypeA))},
		{"name not terminated", wire(id, 0x0100, 1, 0, 0, 0, []byte{5, 'a', 'b'})},
		{"no qtype", wire(id, 0x0100, 1, 0, 0, 0, web)},
		{"half a qclass", wire(id, 0x0100, 1, 0, 0, 0, web, []byte{0, 1, 0})},
		{"trailing garbage", wire(id, 0x0100, 1, 0, 0, 0, qd(web, dns.TypeA), []byte("garbage"))},
		{"NUL in a label", wire(id, 0x0100, 1, 0, 0, 0, qd(zoneLabels("web\x001"), dns.TypeA))},
		{"dot in a label", wire(id, 0x0100, 1, 0, 0, 0, qd(zoneLabels("web-1.good", "hosts"), dns.TypeA))},
		{"non-ASCII label", wire(id, 0x0100, 1, 0, 0, 0, qd(zoneLabels("w\xc3\xa9b"), dns.TypeA))},
		{"binary label", wire(id, 0x0100, 1, 0, 0, 0, qd(zoneLabels("\xff\xfe\x80\x01"), dns.TypeA))},
		{"upper case (valid)", wire(id, 0x0100, 1, 0, 0, 0, qd(zoneLabels("WEB-1", "GOOD", "HOSTS"), dns.TypeSRV))},
		{"empty label inside", wire(id, 0x0100, 1, 0, 0, 0, []byte{3, 'w', 'e', 'b', 0, 1, 'x', 0}, u16(dns.TypeA, 1))},
		{"wildcard name", wire(id, 0x0100, 1, 0, 0, 0, qd(zoneLabels("*"), dns.TypeA))},
		{"root name", wire(id, 0x0100, 1, 0, 0, 0, qd(root, dns.TypeNS))},
		{"EDNS0 size 0", wire(id, 0x0100, 1, 0, 0, 1, qd(web, dns.TypeSRV), optRR(root, 0, 0, nil))},
		{"EDNS0 version 1", wire(id, 0x0100, 1, 0, 0, 1, qd(web, dns.TypeSRV), optRR(root, 4096, 1<<16, nil))},
		{"EDNS0 version 255", wire(id, 0x0100, 1, 0, 0, 1, qd(web, dns.TypeSRV), optRR(root, 4096, 255<<16, nil))},
		{"two OPT records", wire(id, 0x0100, 1, 0, 0, 2, qd(web, dns.TypeSRV), optRR(root, 4096, 0, nil), optRR(root, 512, 0, nil))},
		{"OPT with an owner name", wire(id, 0x0100, 1, 0, 0, 1, qd(web, dns.TypeSRV), optRR(labels("x"), 4096, 0, nil))},
		{"OPT in the answer section", wire(id, 0x0100, 1, 1, 0, 0, qd(web, dns.TypeSRV), optRR(root, 4096, 0, nil))},
		{"OPT rdata longer than the packet", wire(id, 0x0100, 1, 0, 0, 1, qd(web, dns.TypeSRV), root, u16(dns.TypeOPT, 4096, 0, 0, 500))},
		{"EDNS option overflows its OPT", wire(id, 0x0100, 1, 0, 0, 1, qd(web, dns.TypeSRV), optRR(root, 4096, 0, u16(10, 200, 1)))},
		{"cookie of 1 octet", wire(id, 0x0100, 1, 0, 0, 1, qd(web, dns.TypeSRV), optRR(root, 4096, 0, ednsOption(dns.EDNS0COOKIE, []byte{1})))},
		{"cookie of 41 octets", wire(id, 0x0100, 1, 0, 0, 1, qd(web, dns.TypeSRV), optRR(root, 4096, 0, ednsOption(dns.EDNS0COOKIE, make([]byte, 41))))},
		{"ECS family 9", wire(id, 0x0100, 1, 0, 0, 1, qd(web, dns.TypeSRV), optRR(root, 4096, 0, ednsOption(dns.EDNS0SUBNET, []byte{0, 9, 99, 0, 1})))},
		{"ECS prefix 200", wire(id, 0x0100, 1, 0, 0, 1, qd(web, dns.TypeSRV), optRR(root, 4096, 0, ednsOption(dns.EDNS0SUBNET, []byte{0, 1, 200, 0, 1, 2, 3, 4})))},
		{"NSID", wire(id, 0x0100, 1, 0, 0, 1, qd(web, dns.TypeSRV), optRR(root, 4096, 0, ednsOption(dns.EDNS0NSID, nil)))},
		{"unknown option 65001 and DO", wire(id, 0x0100, 1, 0, 0, 1, qd(web, dns.TypeSRV), optRR(root, 1232, 1<<15, ednsOption(65001, []byte("x"))))},
		{"TSIG without a key", wire(id, 0x0100, 1, 0, 0, 1, qd(web, dns.TypeSRV), labels("key"), u16(dns.TypeTSIG, dns.ClassANY, 0, 0, 0))},
		{"AXFR over UDP", wire(id, 0x0000, 1, 0, 0, 0, qd(zoneLabels(), dns.TypeAXFR))},
		{"IXFR without SOA", wire(id, 0x0000, 1, 0, 0, 0, qd(zoneLabels(), dns.TypeIXFR))},
	}
	for i := range 50 {
		b := make([]byte, rand.IntN(600))
		for j := range b {
			b[j] = byte(rand.IntN(256))
		}
		raw = append(raw, struct {
			what string
			b    []byte
		}{fmt.Sprintf("random bytes %d", i), b})
	}
	for _, p := range raw {
		for _, network := range []string{"udp", "tcp"} {
			if network == "udp" && len(p.b) == 0 {
				continue // an empty datagram is nothing to send
			}
			st.send(network, addr, nil, p.b, zset, p.what)
			alive(network + " " + p.what)
		}
	}
	// TCP framing: a zero length, a length longer than the data, a huge
	// garbage message, two queries pipelined on one connection.
	for _, frame := range [][]byte{{0, 0}, {0xff, 0xff, 1, 2, 3}, append([]byte{0xff, 0xff}, make([]byte, 65535)...)} {
		conn, err := net.DialTimeout("tcp", addr, testenv.QueryTimeout)
		if err == nil {
			_ = conn.SetDeadline(time.Now().Add(testenv.QueryTimeout))
			_, _ = conn.Write(frame)
			_, _ = io.Copy(io.Discard, conn)
			conn.Close()
		}
		st.queries.Add(1)
		alive(fmt.Sprintf("a TCP frame of %d bytes", len(frame)))
	}
	if conn, err := net.DialTimeout("tcp", addr, testenv.QueryTimeout); err == nil {
		// Two queries pipelined: two queries' time.
		_ = conn.SetDeadline(time.Now().Add(2 * testenv.QueryTimeout))
		c := &dns.Conn{Conn: conn}
		q1, q2 := question(names[1], dns.TypeSRV, dns.ClassINET), question(names[2], dns.TypeA, dns.ClassINET)
		_ = c.WriteMsg(q1)
		_ = c.WriteMsg(q2)
		for range 2 {
			st.queries.Add(1)
			r, err := c.ReadMsg()
			if err != nil || (r.Id != q1.Id && r.Id != q2.Id) {
				st.badf("pipelined TCP queries: %v %v", r, err)
			}
		}
		conn.Close()
	}
	alive("the TCP framing cases")
	if st.bad.Load() > 0 {
		t.Errorf("%d bad answers of %d queries; first: %s", st.bad.Load(), st.queries.Load(), strings.Join(st.samples, "\n  "))
	}
	t.Logf("%d hostile queries: %d bad, %d without reply; rcodes %s", st.queries.Load(), st.bad.Load(),
		st.noReply.Load(), st.rcodeSummary())
	return st
}
