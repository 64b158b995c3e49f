package berth

import (
	"errors"
	"sync"
	"time"

	"github.com/berthdns/berth/record"
	"github.com/hashicorp/consul/api"
	"golang.org/x/time/rate"
)

// limitedLog writes warnings about what the data holds (hostile or broken
// input) at a bounded rate: 100,000 bad keys must not write 100,000 lines.
// What it holds back is counted and said in the next line it writes.
type limitedLog struct {
	mu      sync.Mutex
	limit   *rate.Limiter
	dropped int
}

// dataLog is shared by every zone and watcher of the process: the bound is
// on the log, whichever server block writes to it.
var dataLog = &limitedLog{limit: rate.NewLimiter(rate.Every(time.Second), 20)}

func (l *limitedLog) warningf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.limit.Allow() {
		l.dropped++
		return
	}
	if l.dropped > 0 {
		log.Warningf("(%d more reports of bad data not logged; coredns_berth_invalid_records_total counts them all)", l.dropped)
		l.dropped = 0
	}
	log.Warningf(format, args...)
}

// reporter counts and logs each bad KV document once per version of it, and
// forgets a key once it is gone or valid, so that what it remembers is
// bounded by the bad documents in KV now, not by all there ever were.
type reporter struct {
	seen map[string]map[string]uint64 // host ("" for keys of no host) -> key -> ModifyIndex reported
}

func newReporter() *reporter { return &reporter{seen: map[string]map[string]uint64{}} }

// invalid reports p, a document of host that did not validate.
func (r *reporter) invalid(host string, p *api.KVPair, err error) {
	keys := r.seen[host]
	if keys == nil {
		keys = map[string]uint64{}
		r.seen[host] = keys
	}
	if i, ok := keys[p.Key]; ok && i == p.ModifyIndex {
		return
	}
	keys[p.Key] = p.ModifyIndex
	reason := "invalid"
	if errors.Is(err, record.ErrUnsupportedVersion) {
		reason = "version"
	}
	invalidRecords.WithLabelValues(reason).Inc()
	dataLog.warningf("skipping %v", err)
}

// keep forgets host's reported keys that are not in pairs (gone, or a valid
// document now: it is reported again if it breaks again).
func (r *reporter) keep(host string, bad map[string]bool) {
	keys := r.seen[host]
	for k := range keys {
		if !bad[k] {
			delete(keys, k)
		}
	}
	if len(keys) == 0 {
		delete(r.seen, host)
	}
}

// size is the number of keys remembered, for tests.
func (r *reporter) size() int {
	n := 0
	for _, keys := range r.seen {
		n += len(keys)
	}
	return n
}
