package proxy

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Failed logins are answered after a delay that doubles with each failure
// from the same client address, from loginBaseDelay up to loginMaxDelay,
// and forgotten loginForget after the last one: guessing passwords gets
// slow, while a user who mistyped waits a quarter of a second.
const (
	loginBaseDelay = 250 * time.Millisecond
	loginMaxDelay  = 5 * time.Second
	loginForget    = 10 * time.Minute
	loginClients   = 10000 // client addresses remembered at most
)

// loginGuard remembers failed logins per client address.
type loginGuard struct {
	mu      sync.Mutex
	clients map[netip.Addr]*loginRecord
	pruned  time.Time // the last sweep of forgotten records
	// wait sleeps d or until ctx ends; tests replace it to see the delays.
	wait func(ctx context.Context, d time.Duration)
}

type loginRecord struct {
	failures int
	last     time.Time
}

func newLoginGuard() *loginGuard {
	return &loginGuard{clients: make(map[netip.Addr]*loginRecord), wait: sleepCtx}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// failed records a failed login from addr at now; it returns how long to
// wait before answering and how many failures addr has had in a row.
func (g *loginGuard) failed(addr netip.Addr, now time.Time) (time.Duration, int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	rec := g.clients[addr]
	if rec != nil && now.Sub(rec.last) >= loginForget {
		rec = nil
	}
	if rec == nil {
		// Sweep at most once a second: a flood of new addresses must not
		// cost a walk of the whole table per attempt.
		if len(g.clients) >= loginClients && now.Sub(g.pruned) >= time.Second {
			g.pruned = now
			for a, r := range g.clients {
				if now.Sub(r.last) >= loginForget {
					delete(g.clients, a)
				}
			}
		}
		if len(g.clients) >= loginClients {
			// Failures from more addresses than we remember: everyone
			// new waits the longest rather than the table growing.
			return loginMaxDelay, 1
		}
		rec = &loginRecord{}
		g.clients[addr] = rec
	}
	rec.failures++
	rec.last = now
	delay := loginMaxDelay
	if rec.failures <= 16 { // beyond, the shift is far past the cap
		delay = min(loginBaseDelay<<(rec.failures-1), loginMaxDelay)
	}
	return delay, rec.failures
}

// succeeded forgets addr's failures.
func (g *loginGuard) succeeded(addr netip.Addr) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.clients, addr)
}

// clientAddr is the IP address of a client connection's remote end.
func clientAddr(a net.Addr) netip.Addr {
	if tcp, ok := a.(*net.TCPAddr); ok {
		return tcp.AddrPort().Addr().Unmap()
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// loginFailed counts and logs a failed login (the log once a minute per
// client address) and waits the client's delay, or until ctx or the server
// ends.
func (s *Server) loginFailed(ctx context.Context, listener string, client net.Addr, user string) {
	addr := clientAddr(client)
	delay, failures := s.logins.failed(addr, time.Now())
	s.metrics.LoginFailures.WithLabelValues(listener).Inc()
	if s.logGate.allow("login "+addr.String(), time.Now()) {
		s.log.Warn("failed login (logged once a minute per client address)", "listener", listener,
			"client", addr.String(), "user", user, "failures_in_a_row", failures, "delay", delay)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()
	s.logins.wait(ctx, delay)
}
