package resolver

import (
	"container/list"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// maxCacheTTL caps how long any answer is kept, whatever its TTL says, so a
// misconfigured zone cannot pin a stale target for days.
const maxCacheTTL = time.Hour

// cache keeps DNS responses keyed by (qname, qtype) until their TTL runs
// out, evicting the least recently used entry when full.
type cache struct {
	mu      sync.Mutex
	max     int
	entries map[cacheKey]*list.Element
	lru     list.List // front: most recently used; values are *cacheEntry
}

type cacheKey struct {
	name  string // canonical: lower case, fully qualified
	qtype uint16
}

type cacheEntry struct {
	key     cacheKey
	msg     *dns.Msg
	expires time.Time
}

func newCache(max int) *cache {
	return &cache{max: max, entries: make(map[cacheKey]*list.Element)}
}

func keyOf(name string, qtype uint16) cacheKey {
	return cacheKey{name: strings.ToLower(dns.Fqdn(name)), qtype: qtype}
}

// get returns the cached response, or nil when absent or expired. Callers
// must not modify it.
func (c *cache) get(name string, qtype uint16, now time.Time) *dns.Msg {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[keyOf(name, qtype)]
	if !ok {
		return nil
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.expires) {
		c.lru.Remove(el)
		delete(c.entries, e.key)
		return nil
	}
	c.lru.MoveToFront(el)
	return e.msg
}

// put stores msg for as long as it may be cached; a response without a TTL
// to go by (a failure, a negative answer without SOA) is not stored.
func (c *cache) put(name string, qtype uint16, msg *dns.Msg, now time.Time) {
	if c == nil || c.max <= 0 {
		return
	}
	ttl, ok := cacheTTL(msg)
	if !ok || ttl <= 0 {
		return
	}
	k := keyOf(name, qtype)
	e := &cacheEntry{key: k, msg: msg, expires: now.Add(min(ttl, maxCacheTTL))}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[k]; ok {
		el.Value = e
		c.lru.MoveToFront(el)
		return
	}
	for c.lru.Len() >= c.max {
		oldest := c.lru.Back()
		c.lru.Remove(oldest)
		delete(c.entries, oldest.Value.(*cacheEntry).key)
	}
	c.entries[k] = c.lru.PushFront(e)
}

func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// cacheTTL is how long msg may be cached: the smallest TTL of its records
// for an answer, and for NXDOMAIN or NODATA the smaller of the SOA's TTL and
// its minimum field (RFC 2308 section 5).
func cacheTTL(msg *dns.Msg) (time.Duration, bool) {
	if msg.Rcode != dns.RcodeSuccess && msg.Rcode != dns.RcodeNameError {
		return 0, false
	}
	if msg.Rcode == dns.RcodeSuccess && len(msg.Answer) > 0 {
		ttl := ^uint32(0)
		for _, sec := range [][]dns.RR{msg.Answer, msg.Extra} {
			for _, rr := range sec {
				if rr.Header().Rrtype != dns.TypeOPT {
					ttl = min(ttl, rr.Header().Ttl)
				}
			}
		}
		return time.Duration(ttl) * time.Second, true
	}
	for _, rr := range msg.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second, true
		}
	}
	return 0, false
}
