package proxy

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// ServeHTTPProxy accepts HTTP proxy clients on ln until Close; it then
// returns nil. It serves CONNECT tunnels and forwards absolute-URI requests
// (what clients send when http_proxy is set).
func (s *Server) ServeHTTPProxy(ln net.Listener) error {
	hs := &http.Server{
		Handler:           &httpProxy{s: s, forward: s.newForwarder()},
		ReadHeaderTimeout: s.cfg.HandshakeTimeout,
		// Between requests; CONNECT tunnels are hijacked and relayed under
		// IdleTimeout instead.
		IdleTimeout: s.cfg.KeepAliveTimeout,
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errors.New("proxy: server closed")
	}
	s.httpServers = append(s.httpServers, hs)
	s.mu.Unlock()
	err := hs.Serve(&admittingListener{Listener: ln, s: s})
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

type httpProxy struct {
	s       *Server
	forward *httputil.ReverseProxy
}

func (h *httpProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The PAC file is asked of the proxy itself, before a browser has any
	// reason to present proxy credentials; it holds no secret (the zones and
	// this address).
	if !r.URL.IsAbs() && r.URL.Path == pacPath && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		h.servePAC(w, r)
		return
	}
	if ok, user, presented := h.s.authorizedHTTP(r); !ok {
		h.s.metrics.Rejected.WithLabelValues("http", rejectAuth).Inc()
		if presented { // a first request without credentials is the usual challenge, not a failure
			h.s.loginFailed(r.Context(), "http", remoteAddr(r), user)
		}
		w.Header().Set("Proxy-Authenticate", `Basic realm="berth-proxy"`)
		http.Error(w, "proxy authentication required", http.StatusProxyAuthRequired)
		return
	}
	if r.Method == http.MethodConnect {
		h.tunnel(w, r)
		return
	}
	if !r.URL.IsAbs() || r.URL.Scheme != "http" || r.URL.Host == "" {
		h.s.metrics.Rejected.WithLabelValues("http", rejectBadRequest).Inc()
		http.Error(w, "berth-proxy forwards absolute http:// URIs and CONNECT; use it as a proxy", http.StatusBadRequest)
		return
	}
	h.forward.ServeHTTP(w, r)
}

// tunnel answers CONNECT host:port: dial, then 200 and relay bytes.
func (h *httpProxy) tunnel(w http.ResponseWriter, r *http.Request) {
	if _, port, err := net.SplitHostPort(r.Host); err != nil || port == "" {
		h.s.metrics.Rejected.WithLabelValues("http", rejectBadRequest).Inc()
		http.Error(w, "CONNECT needs host:port", http.StatusBadRequest)
		return
	}
	target, err := h.s.connect(r.Context(), "http", r.Host)
	if err != nil {
		status, msg := httpFailure(err)
		http.Error(w, msg, status)
		return
	}
	hijacker, ok := w.(http.Hijacker)
	if !ok {
		target.Close()
		http.Error(w, "CONNECT is not supported on this connection (HTTP/2?)", http.StatusHTTPVersionNotSupported)
		return
	}
	client, buffered, err := hijacker.Hijack()
	if err != nil {
		target.Close()
		return
	}
	_ = client.SetDeadline(time.Time{}) // the server's header timeout no longer applies
	if _, err := client.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		client.Close()
		target.Close()
		return
	}
	// Bytes the client sent right after its request (a TLS ClientHello,
	// say) sit in the server's buffer; pass them on first.
	if n := buffered.Reader.Buffered(); n > 0 {
		early, _ := buffered.Reader.Peek(n)
		if _, err := target.Write(early); err != nil {
			client.Close()
			target.Close()
			return
		}
	}
	relay(client, target, h.s.cfg.IdleTimeout)
}

// newForwarder forwards absolute-URI requests through the transport, whose
// dials go through the policy and the resolver.
func (s *Server) newForwarder() *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		// The outgoing request is already the absolute URI the client asked
		// for; ReverseProxy has removed hop-by-hop headers (including
		// Proxy-Authorization). No X-Forwarded-For: a forward proxy does not
		// announce its clients.
		Rewrite:   func(*httputil.ProxyRequest) {},
		Transport: s.transport,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			status, msg := httpFailure(err)
			http.Error(w, msg, status)
		},
	}
}

func (s *Server) newTransport() *http.Transport {
	return &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return s.connect(ctx, "http", addr)
		},
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: s.cfg.IdleTimeout,
	}
}

// httpFailure maps a failed dial or forward to a status and a message.
func httpFailure(err error) (int, string) {
	var notAllowed *NotAllowedError
	if errors.As(err, &notAllowed) {
		return http.StatusForbidden, notAllowed.Error()
	}
	switch dialFailure(err) {
	case failNotPublished, failForbidden:
		return http.StatusForbidden, err.Error()
	case failTimeout:
		return http.StatusGatewayTimeout, err.Error()
	}
	return http.StatusBadGateway, err.Error()
}

// authorizedHTTP checks Proxy-Authorization: Basic when users are set. It
// says whether the request may pass, and which user presented credentials
// (presented is false when there were none to judge).
func (s *Server) authorizedHTTP(r *http.Request) (ok bool, user string, presented bool) {
	if len(s.cfg.Users) == 0 {
		return true, "", false
	}
	header := r.Header.Get("Proxy-Authorization")
	if header == "" {
		return false, "", false
	}
	scheme, encoded, found := strings.Cut(header, " ")
	if !found || !strings.EqualFold(scheme, "Basic") {
		return false, "", true
	}
	decoded, err := base64.StdEncoding.DecodeString(strings.TrimSpace(encoded))
	if err != nil {
		return false, "", true
	}
	user, pass, found := strings.Cut(string(decoded), ":")
	if !found || !s.validUser(user, pass) {
		return false, user, true
	}
	s.logins.succeeded(clientAddr(remoteAddr(r)))
	return true, user, true
}

// remoteAddr is the client's address of an HTTP request.
func remoteAddr(r *http.Request) net.Addr {
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		return net.TCPAddrFromAddrPort(ap)
	}
	return &net.TCPAddr{}
}

// admittingListener puts HTTP clients under the same connection limit and
// tracking as SOCKS clients.
type admittingListener struct {
	net.Listener
	s *Server
}

func (l *admittingListener) Accept() (net.Conn, error) {
	for {
		conn, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		rc := &releasingConn{Conn: conn, s: l.s}
		if l.s.admit(rc, "http") {
			return rc, nil
		}
	}
}

// releasingConn frees its slot when closed, by http.Server or after a
// CONNECT tunnel ends.
type releasingConn struct {
	net.Conn
	s    *Server
	once sync.Once
}

func (c *releasingConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.s.release(c, "http") })
	return err
}

// CloseWrite half-closes the client side of a tunnel.
func (c *releasingConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("no half-close on %T", c.Conn)
}
