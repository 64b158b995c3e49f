package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/berthdns/berth/record"
	"github.com/berthdns/berth/resolver"
)

// Defaults for the zero values in Config.
const (
	DefaultDialTimeout      = 5 * time.Second
	DefaultConnectTimeout   = 30 * time.Second
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultIdleTimeout      = 5 * time.Minute
	DefaultKeepAliveTimeout = 30 * time.Second
	DefaultMaxConns         = 1024
)

// Config configures a Server.
type Config struct {
	// Zones are the domains whose names are resolved through SRV records.
	Zones []string
	// Allow lists what else may be reached: domain suffixes and CIDRs.
	Allow []string
	// DNSServer is the DNS server to ask ("host[:port]"); empty means the
	// system's.
	DNSServer string
	// AllowLoopback lets the proxy dial loopback addresses (its own host)
	// when DNS sends it there; off, they are refused like link-local,
	// unspecified and multicast addresses, which stay refused regardless.
	// For a proxy that serves services on its own host (tests, a demo).
	AllowLoopback bool
	// AllowOwnAddresses lets the proxy dial the other addresses of its own
	// host's interfaces (read at New and every ownAddrRefresh): off, a
	// record naming one is refused, as it would reach the host's own
	// services (ssh, an agent on 0.0.0.0). For a proxy that runs on a
	// container host and must reach the containers published there.
	// Loopback addresses stay under AllowLoopback alone.
	AllowOwnAddresses bool
	// Deny lists CIDRs and addresses never dialled, whatever DNS says
	// (record.ParseDenyList), beside record's address classes.
	Deny []string
	// Users maps user names to passwords. When set, SOCKS clients must
	// authenticate (RFC 1929) and HTTP clients send Proxy-Authorization.
	Users map[string]string

	DialTimeout      time.Duration // one connection attempt to one address
	ConnectTimeout   time.Duration // the whole dial: DNS and every attempt
	HandshakeTimeout time.Duration // a client's SOCKS handshake or HTTP request header
	IdleTimeout      time.Duration // a tunnel with no traffic either way is closed
	// KeepAliveTimeout closes a plain HTTP proxy connection idle between
	// requests. It is short, unlike IdleTimeout: an idle keep-alive
	// connection holds a MaxConns slot while it waits.
	KeepAliveTimeout time.Duration
	MaxConns         int // client connections open at once, both listeners

	// Registerer receives the metrics; nil keeps them unregistered.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// DialContext opens connections to targets; net.Dialer's by default.
	// Forbidden addresses (see AllowLoopback) never reach it.
	DialContext func(ctx context.Context, network, address string) (net.Conn, error)
}

// Server serves SOCKS5 and HTTP proxy clients. Create it with New, give it
// listeners with ServeSOCKS and ServeHTTPProxy, and stop it with Close.
type Server struct {
	cfg       Config
	policy    *Policy
	resolver  *resolver.Resolver
	metrics   *Metrics
	log       *slog.Logger
	logGate   *gate // rate-limits the logging of hostile input
	logins    *loginGuard
	transport *http.Transport
	ctx       context.Context // ends at Close, aborting dials in flight
	cancel    context.CancelFunc
	wg        sync.WaitGroup // one per admitted client connection, done at release

	mu          sync.Mutex
	closed      bool
	conns       map[net.Conn]struct{}
	listeners   map[net.Listener]struct{}
	socksAddrs  []net.Addr // the SOCKS listeners' addresses, for the PAC file
	httpServers []*http.Server
}

// New checks cfg and returns a Server that serves nothing yet.
func New(cfg Config) (*Server, error) {
	policy, err := NewPolicy(cfg.Zones, cfg.Allow)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	setDefault(&cfg.DialTimeout, DefaultDialTimeout)
	setDefault(&cfg.ConnectTimeout, DefaultConnectTimeout)
	setDefault(&cfg.HandshakeTimeout, DefaultHandshakeTimeout)
	setDefault(&cfg.IdleTimeout, DefaultIdleTimeout)
	setDefault(&cfg.KeepAliveTimeout, DefaultKeepAliveTimeout)
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	dial := cfg.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	deny, err := record.ParseDenyList(cfg.Deny)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	guard, err := newAddrGuard(cfg, deny)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	res, err := resolver.New(resolver.Options{
		Server: cfg.DNSServer,
		Zones:  policy.Zones(),
		// The zone's names are reached only where their SRV records point:
		// a host's A record at any port the client names would make the
		// proxy a port scanner of every published host.
		SRVOnly:     true,
		DialTimeout: cfg.DialTimeout,
		DialContext: guard.dial(dial),
	})
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	s := &Server{
		cfg:       cfg,
		policy:    policy,
		resolver:  res,
		metrics:   NewMetrics(cfg.Registerer),
		log:       cfg.Logger,
		logGate:   newGate(time.Minute, 10000),
		logins:    newLoginGuard(),
		conns:     make(map[net.Conn]struct{}),
		listeners: make(map[net.Listener]struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.transport = s.newTransport()
	return s, nil
}

func setDefault(d *time.Duration, def time.Duration) {
	if *d <= 0 {
		*d = def
	}
}

// Metrics are the server's metrics.
func (s *Server) Metrics() *Metrics { return s.metrics }

// ServeSOCKS accepts SOCKS5 clients on ln until Close; it then returns nil.
func (s *Server) ServeSOCKS(ln net.Listener) error {
	if !s.addListener(ln) {
		return errors.New("proxy: server closed")
	}
	s.mu.Lock()
	s.socksAddrs = append(s.socksAddrs, ln.Addr())
	s.mu.Unlock()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return nil
			}
			var netErr net.Error
			if errors.As(err, &netErr) && netErr.Timeout() {
				continue
			}
			return err
		}
		if !s.admit(conn, "socks") {
			continue
		}
		go func() {
			defer s.release(conn, "socks")
			defer conn.Close()
			s.serveSOCKS(conn)
		}()
	}
}

// admit takes a slot for a new client connection, or closes it when the
// server is full or closed. A full server closes rather than queues: queued
// connections would look alive to clients while going nowhere.
func (s *Server) admit(conn net.Conn, listener string) bool {
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		conn.Close()
		return false
	case len(s.conns) >= s.cfg.MaxConns:
		s.mu.Unlock()
		conn.Close()
		s.metrics.Rejected.WithLabelValues(listener, rejectLimit).Inc()
		s.log.Warn("connection limit reached; closing new connection", "listener", listener,
			"limit", s.cfg.MaxConns, "client", conn.RemoteAddr())
		return false
	}
	s.conns[conn] = struct{}{}
	s.wg.Add(1) // under mu: Close's Wait cannot have started
	s.mu.Unlock()
	s.metrics.Connections.WithLabelValues(listener).Inc()
	s.metrics.Active.WithLabelValues(listener).Inc()
	return true
}

// release frees the slot of a closed connection.
func (s *Server) release(conn net.Conn, listener string) {
	s.mu.Lock()
	_, ok := s.conns[conn]
	delete(s.conns, conn)
	s.mu.Unlock()
	if ok {
		s.metrics.Active.WithLabelValues(listener).Dec()
		s.wg.Done()
	}
}

func (s *Server) addListener(ln net.Listener) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.listeners[ln] = struct{}{}
	return true
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Close stops the listeners, ends every client connection and tunnel, and
// waits until all are released.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.cancel()
	for ln := range s.listeners {
		ln.Close()
	}
	servers := s.httpServers
	conns := make([]net.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	for _, hs := range servers {
		hs.Close()
	}
	for _, c := range conns {
		c.Close() // also the hijacked CONNECT tunnels that http.Server forgets
	}
	s.wg.Wait()
	s.transport.CloseIdleConnections()
	return nil
}
