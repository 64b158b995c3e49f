package resolver

import (
	"testing"
	"time"

	"github.com/miekg/dns"
)

func answer(t *testing.T, ttl uint32) *dns.Msg {
	t.Helper()
	rr, err := dns.NewRR("x.z. 60 IN A 127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	rr.Header().Ttl = ttl
	m := new(dns.Msg)
	m.SetQuestion("x.z.", dns.TypeA)
	m.Answer = []dns.RR{rr}
	return m
}

// The cache holds at most its size, dropping the least recently used.
func TestCacheIsBoundedLRU(t *testing.T) {
	c := newCache(2)
	now := time.Now()
	c.put("a.z.", dns.TypeA, answer(t, 60), now)
	c.put("b.z.", dns.TypeA, answer(t, 60), now)
	if c.get("a.z.", dns.TypeA, now) == nil { // a is now the most recent
		t.Fatal("a.z. missing right after put")
	}
	c.put("c.z.", dns.TypeA, answer(t, 60), now)
	if c.len() != 2 {
		t.Fatalf("cache holds %d entries, want its bound 2", c.len())
	}
	if c.get("b.z.", dns.TypeA, now) != nil {
		t.Error("b.z. (least recently used) was kept")
	}
	if c.get("a.z.", dns.TypeA, now) == nil || c.get("c.z.", dns.TypeA, now) == nil {
		t.Error("a.z. or c.z. was evicted instead of b.z.")
	}
}

// Keys are case-insensitive and per type; TTL 0 and SERVFAIL are not kept.
func TestCacheKeysAndUncacheable(t *testing.T) {
	c := newCache(10)
	now := time.Now()
	c.put("Web.Z", dns.TypeA, answer(t, 60), now)
	if c.get("web.z.", dns.TypeA, now) == nil {
		t.Error("lookup differing only in case and trailing dot missed")
	}
	if c.get("web.z.", dns.TypeAAAA, now) != nil {
		t.Error("an A answer was returned for AAAA")
	}
	c.put("zero.z.", dns.TypeA, answer(t, 0), now)
	fail := new(dns.Msg)
	fail.SetQuestion("fail.z.", dns.TypeA)
	fail.Rcode = dns.RcodeServerFailure
	c.put("fail.z.", dns.TypeA, fail, now)
	if c.get("zero.z.", dns.TypeA, now) != nil || c.get("fail.z.", dns.TypeA, now) != nil {
		t.Error("a TTL-0 answer or a SERVFAIL was cached")
	}
}
