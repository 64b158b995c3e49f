package proxy

import (
	"context"
	"errors"
	"net"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/berthdns/berth/resolver"
)

// Why a dial failed, as a metric label; each maps to one SOCKS reply code
// and one HTTP status.
const (
	failRefused            = "refused"
	failTimeout            = "timeout"
	failNoSuchHost         = "no_such_host"
	failNetworkUnreachable = "network_unreachable"
	failHostUnreachable    = "host_unreachable"
	failDNS                = "dns"
	failOther              = "other"
	// Not failures but refusals: the zone does not publish the port, or
	// every address was one the proxy does not dial. They are counted as
	// Rejected (with the ForbiddenAddressError's reason for the latter).
	failNotPublished = "not_published"
	failForbidden    = "forbidden"
)

// failureRank orders the reasons from the most telling: a refusal proves
// the target host was reached, so it outranks unreachability and timeouts;
// any answer from a target outranks what DNS said; a forbidden address
// outranks "not published", which outranks a name that does not exist.
var failureRank = map[string]int{
	failRefused: 9, failNetworkUnreachable: 8, failHostUnreachable: 7, failTimeout: 6,
	failForbidden: 5, failNotPublished: 4, failNoSuchHost: 3, failDNS: 2, failOther: 1,
}

// connect checks hostport against the policy and dials it through the
// resolver, counting the bytes that then pass through the returned
// connection. A refusal by the policy is a *NotAllowedError.
func (s *Server) connect(ctx context.Context, listener, hostport string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, err
	}
	if err := s.policy.Check(host); err != nil {
		s.metrics.Rejected.WithLabelValues(listener, rejectNotAllowed).Inc()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
	defer cancel()
	conn, err := s.resolver.Dial(ctx, "tcp", hostport)
	if err != nil {
		reason := dialFailure(err)
		var forbidden *ForbiddenAddressError
		switch {
		case reason == failForbidden && errors.As(err, &forbidden):
			s.metrics.Rejected.WithLabelValues(listener, forbidden.Reason).Inc()
			if s.logGate.allow("forbidden "+forbidden.Reason, time.Now()) {
				s.log.Warn("refused to dial a forbidden address (logged once a minute per kind)", "listener", listener,
					"destination", hostport, "reason", forbidden.Reason, "err", err)
			}
		case reason == failNotPublished:
			s.metrics.Rejected.WithLabelValues(listener, rejectNotPublished).Inc()
			s.log.Info("destination not published", "listener", listener, "destination", hostport, "err", err)
		default:
			s.metrics.DialFailures.WithLabelValues(listener, reason).Inc()
			s.log.Info("dial failed", "listener", listener, "destination", hostport, "reason", reason, "err", err)
		}
		return nil, err
	}
	return &countingConn{Conn: conn,
		up:   s.metrics.Bytes.WithLabelValues(listener, "upstream"),
		down: s.metrics.Bytes.WithLabelValues(listener, "downstream"),
	}, nil
}

// dialFailure names why a dial failed: of a resolver.DialError's lookups and
// attempts, the most telling by failureRank.
func dialFailure(err error) string {
	var dialErr *resolver.DialError
	if !errors.As(err, &dialErr) {
		return leafFailure(err)
	}
	best := ""
	consider := func(err error) {
		if r := leafFailure(err); failureRank[r] > failureRank[best] {
			best = r
		}
	}
	for _, a := range dialErr.Lookups {
		consider(a.Err)
	}
	for _, a := range dialErr.Dials {
		consider(a.Err)
	}
	if dialErr.Err != nil {
		consider(dialErr.Err)
	}
	if best == "" {
		return failOther
	}
	return best
}

// leafFailure names why one lookup or attempt failed. A DNS query's failure
// is "dns" whatever its cause: a DNS server that refuses UDP (ECONNREFUSED)
// says nothing about the target.
func leafFailure(err error) string {
	var netErr net.Error
	var queryErr *resolver.QueryError
	var forbidden *ForbiddenAddressError
	switch {
	case errors.As(err, &forbidden):
		return failForbidden
	case errors.Is(err, resolver.ErrNotPublished):
		return failNotPublished
	case errors.As(err, &queryErr):
		return failDNS
	case errors.Is(err, syscall.ECONNREFUSED):
		return failRefused
	case errors.Is(err, syscall.ENETUNREACH):
		return failNetworkUnreachable
	case errors.Is(err, syscall.EHOSTUNREACH):
		return failHostUnreachable
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return failTimeout
	case errors.Is(err, resolver.ErrNoSuchHost), errors.Is(err, resolver.ErrNoRecords),
		errors.Is(err, resolver.ErrServiceUnavailable):
		return failNoSuchHost
	}
	return failOther
}

// countingConn counts the bytes written to (upstream) and read from
// (downstream) a target, so that relayed tunnels and forwarded HTTP requests
// are measured in one place.
type countingConn struct {
	net.Conn
	up, down prometheus.Counter
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.down.Add(float64(n))
	return n, err
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.up.Add(float64(n))
	return n, err
}

// CloseWrite half-closes the target, passing a client's EOF on.
func (c *countingConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
