package proxy

import (
	"sync"
	"time"
)

// gate lets one event per key through per interval, so that hostile input
// (a refused address, failed logins from one client) is logged once rather
// than at the rate an attacker chooses. It remembers at most max keys.
type gate struct {
	mu       sync.Mutex
	interval time.Duration
	max      int
	last     map[string]time.Time
}

func newGate(interval time.Duration, max int) *gate {
	return &gate{interval: interval, max: max, last: make(map[string]time.Time)}
}

// allow reports whether an event for key may pass at now, and counts it as
// passed if so.
func (g *gate) allow(key string, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if t, ok := g.last[key]; ok && now.Sub(t) < g.interval {
		return false
	}
	if len(g.last) >= g.max {
		for k, t := range g.last {
			if now.Sub(t) >= g.interval {
				delete(g.last, k)
			}
		}
		if len(g.last) >= g.max {
			// Flooded with distinct keys within one interval: stay quiet
			// rather than grow, and rather than log at the flood's rate.
			return false
		}
	}
	g.last[key] = now
	return true
}
