package proxy

import (
	"context"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"time"
)

// SOCKS5 protocol constants (RFC 1928, RFC 1929).
const (
	socksVersion = 0x05

	methodNoAuth       = 0x00
	methodUserPass     = 0x02
	methodNoAcceptable = 0xff

	userPassVersion = 0x01
	userPassOK      = 0x00
	userPassFailed  = 0x01

	cmdConnect = 0x01

	atypIPv4   = 0x01
	atypDomain = 0x03
	atypIPv6   = 0x04
)

// SOCKS5 reply codes (RFC 1928, section 6).
const (
	replySucceeded           = 0x00
	replyGeneralFailure      = 0x01
	replyNotAllowed          = 0x02
	replyNetworkUnreachable  = 0x03
	replyHostUnreachable     = 0x04
	replyConnectionRefused   = 0x05
	replyCommandNotSupported = 0x07
	replyAddrTypeUnsupported = 0x08
)

// socksReplyFor maps a dial failure to the reply that says it best.
var socksReplyFor = map[string]byte{
	failRefused:            replyConnectionRefused,
	failNetworkUnreachable: replyNetworkUnreachable,
	failHostUnreachable:    replyHostUnreachable,
	failTimeout:            replyHostUnreachable,
	failNoSuchHost:         replyHostUnreachable,
	failDNS:                replyHostUnreachable,
	failOther:              replyGeneralFailure,
	failNotPublished:       replyNotAllowed,
	failForbidden:          replyNotAllowed,
}

// errBadRequest marks malformed client input: the connection is closed,
// since a client that breaks the framing cannot be told anything reliably.
var errBadRequest = errors.New("malformed SOCKS5 input")

// serveSOCKS runs one SOCKS5 client: handshake, CONNECT, relay.
func (s *Server) serveSOCKS(client net.Conn) {
	// One deadline for the whole handshake: a client that stalls or
	// trickles bytes cannot hold a slot for longer.
	_ = client.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	dest, reject, err := s.socksHandshake(client)
	if err != nil {
		if reject != "" {
			s.metrics.Rejected.WithLabelValues("socks", reject).Inc()
		}
		s.log.Debug("socks handshake failed", "client", client.RemoteAddr(), "err", err)
		return
	}
	// The dial has its own bounds (--dial-timeout, --connect-timeout); the
	// handshake's deadline must not cut it short nor leave the reply no
	// time. The reply gets a deadline of its own, counted from the dial's end.
	_ = client.SetDeadline(time.Time{})
	target, err := s.connect(s.ctx, "socks", dest)
	_ = client.SetWriteDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	if err != nil {
		var code byte
		var notAllowed *NotAllowedError
		if errors.As(err, &notAllowed) {
			code = replyNotAllowed
			s.log.Info("socks destination not allowed", "client", client.RemoteAddr(), "destination", dest)
		} else {
			code = socksReplyFor[dialFailure(err)]
		}
		_ = writeSOCKSReply(client, code, nil)
		return
	}
	if err := writeSOCKSReply(client, replySucceeded, target.LocalAddr()); err != nil {
		target.Close()
		return
	}
	_ = client.SetDeadline(time.Time{})
	s.log.Debug("socks tunnel", "client", client.RemoteAddr(), "destination", dest, "target", target.RemoteAddr())
	relay(client, target, s.cfg.IdleTimeout)
}

// socksHandshake negotiates the method, authenticates, and reads a CONNECT
// request, answering what it refuses. It returns the destination host:port,
// or an error and the metric reason for it.
func (s *Server) socksHandshake(c net.Conn) (dest, reject string, err error) {
	var head [2]byte
	if _, err := io.ReadFull(c, head[:]); err != nil {
		return "", rejectBadRequest, fmt.Errorf("greeting: %w", err)
	}
	if head[0] != socksVersion {
		return "", rejectBadRequest, fmt.Errorf("%w: version %d", errBadRequest, head[0])
	}
	methods := make([]byte, head[1])
	if _, err := io.ReadFull(c, methods); err != nil {
		return "", rejectBadRequest, fmt.Errorf("greeting methods: %w", err)
	}
	want := byte(methodNoAuth)
	if len(s.cfg.Users) > 0 {
		want = methodUserPass
	}
	if !slices.Contains(methods, want) {
		_, _ = c.Write([]byte{socksVersion, methodNoAcceptable})
		return "", rejectAuth, fmt.Errorf("client offers methods %v, not %d", methods, want)
	}
	if _, err := c.Write([]byte{socksVersion, want}); err != nil {
		return "", "", err
	}
	if want == methodUserPass {
		if reject, err := s.socksAuthenticate(c); err != nil {
			return "", reject, err
		}
	}

	var req [4]byte // VER CMD RSV ATYP
	if _, err := io.ReadFull(c, req[:]); err != nil {
		return "", rejectBadRequest, fmt.Errorf("request: %w", err)
	}
	if req[0] != socksVersion {
		return "", rejectBadRequest, fmt.Errorf("%w: request version %d", errBadRequest, req[0])
	}
	if req[1] != cmdConnect {
		_ = writeSOCKSReply(c, replyCommandNotSupported, nil)
		return "", rejectUnsupported, fmt.Errorf("command %d not supported", req[1])
	}
	host, err := readSOCKSAddr(c, req[3])
	if errors.Is(err, errAddrType) {
		_ = writeSOCKSReply(c, replyAddrTypeUnsupported, nil)
		return "", rejectUnsupported, err
	}
	if err != nil {
		return "", rejectBadRequest, err
	}
	var port [2]byte
	if _, err := io.ReadFull(c, port[:]); err != nil {
		return "", rejectBadRequest, fmt.Errorf("request port: %w", err)
	}
	return net.JoinHostPort(host, strconv.Itoa(int(binary.BigEndian.Uint16(port[:])))), "", nil
}

// socksAuthenticate runs the RFC 1929 username/password subnegotiation.
func (s *Server) socksAuthenticate(c net.Conn) (reject string, err error) {
	var ver [1]byte
	if _, err := io.ReadFull(c, ver[:]); err != nil {
		return rejectBadRequest, fmt.Errorf("auth: %w", err)
	}
	if ver[0] != userPassVersion {
		return rejectBadRequest, fmt.Errorf("%w: auth version %d", errBadRequest, ver[0])
	}
	user, err := readLengthPrefixed(c)
	if err != nil {
		return rejectBadRequest, fmt.Errorf("auth user: %w", err)
	}
	pass, err := readLengthPrefixed(c)
	if err != nil {
		return rejectBadRequest, fmt.Errorf("auth password: %w", err)
	}
	if !s.validUser(user, pass) {
		s.loginFailed(context.Background(), "socks", c.RemoteAddr(), user)
		// The delay may have outlasted the handshake's deadline.
		_ = c.SetWriteDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
		_, _ = c.Write([]byte{userPassVersion, userPassFailed})
		return rejectAuth, fmt.Errorf("user %q: wrong user name or password", user)
	}
	s.logins.succeeded(clientAddr(c.RemoteAddr()))
	_, err = c.Write([]byte{userPassVersion, userPassOK})
	return "", err
}

// validUser compares in constant time, so response timing does not reveal
// how much of a password was right.
func (s *Server) validUser(user, pass string) bool {
	want, ok := s.cfg.Users[user]
	if !ok {
		want = "\x00never matches a password read from the wire"
	}
	return subtle.ConstantTimeCompare([]byte(pass), []byte(want)) == 1 && ok
}

var errAddrType = errors.New("address type not supported")

func readSOCKSAddr(c net.Conn, atyp byte) (string, error) {
	switch atyp {
	case atypIPv4, atypIPv6:
		b := make([]byte, 4)
		if atyp == atypIPv6 {
			b = make([]byte, 16)
		}
		if _, err := io.ReadFull(c, b); err != nil {
			return "", fmt.Errorf("request address: %w", err)
		}
		ip, _ := netip.AddrFromSlice(b)
		return ip.Unmap().String(), nil
	case atypDomain:
		name, err := readLengthPrefixed(c)
		if err != nil {
			return "", fmt.Errorf("request name: %w", err)
		}
		if name == "" {
			return "", fmt.Errorf("%w: empty domain name", errBadRequest)
		}
		return name, nil
	}
	return "", fmt.Errorf("%w: %d", errAddrType, atyp)
}

func readLengthPrefixed(c net.Conn) (string, error) {
	var n [1]byte
	if _, err := io.ReadFull(c, n[:]); err != nil {
		return "", err
	}
	b := make([]byte, n[0])
	if _, err := io.ReadFull(c, b); err != nil {
		return "", err
	}
	return string(b), nil
}

// writeSOCKSReply sends a reply; bound is the proxy's address towards the
// target on success, and 0.0.0.0:0 otherwise.
func writeSOCKSReply(c net.Conn, code byte, bound net.Addr) error {
	addr := netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
	if tcp, ok := bound.(*net.TCPAddr); ok {
		addr = tcp.AddrPort()
	}
	ip := addr.Addr().Unmap()
	reply := []byte{socksVersion, code, 0x00, atypIPv4}
	if ip.Is6() {
		reply[3] = atypIPv6
	}
	reply = append(reply, ip.AsSlice()...)
	reply = binary.BigEndian.AppendUint16(reply, addr.Port())
	_, err := c.Write(reply)
	return err
}
