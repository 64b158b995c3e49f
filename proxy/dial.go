package proxy

import (
	"context"
	"errors"
	"net"
	"syscall"

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
)

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
		s.metrics.DialFailures.WithLabelValues(listener, reason).Inc()
		s.log.Info("dial failed", "listener", listener, "destination", hostport, "reason", reason, "err", err)
		return nil, err
	}
	return &countingConn{Conn: conn,
		up:   s.metrics.Bytes.WithLabelValues(listener, "upstream"),
		down: s.metrics.Bytes.WithLabelValues(listener, "downstream"),
	}, nil
}

// dialFailure names why a dial failed. When attempts failed in different
// ways, the most telling one wins: a refusal proves the target host was
// reached, so it outranks unreachability and timeouts.
func dialFailure(err error) string {
	var netErr net.Error
	var queryErr *resolver.QueryError
	switch {
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
	case errors.As(err, &queryErr):
		return failDNS
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
