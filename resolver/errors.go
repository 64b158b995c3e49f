package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
)

// Answers that mean "there is nothing", as opposed to "asking failed".
var (
	// ErrNoSuchHost: the name does not exist (NXDOMAIN).
	ErrNoSuchHost = errors.New("no such host")
	// ErrNoRecords: the name exists but has no record of the asked type (NODATA).
	ErrNoRecords = errors.New("no records")
	// ErrServiceUnavailable: the SRV answer is the single target "." with
	// which a domain says the service is decidedly not offered (RFC 2782).
	ErrServiceUnavailable = errors.New(`service not available (SRV target ".")`)
	// ErrNotPublished: under Options.SRVOnly, the name exists in a zone but
	// no SRV record publishes the port asked for, so it is not dialled.
	ErrNotPublished = errors.New("no SRV record publishes the port")
)

// QueryError is a DNS query that got no usable answer: a network error, a
// timeout, or an rcode such as SERVFAIL or REFUSED.
type QueryError struct {
	Name   string // the name asked, fully qualified
	Type   string // "SRV", "A", "AAAA"
	Server string // the server that failed last
	Err    error
}

func (e *QueryError) Error() string {
	return fmt.Sprintf("%s %s: %s: %v", e.Name, e.Type, e.Server, e.Err)
}

func (e *QueryError) Unwrap() error { return e.Err }

// Attempt is one step Dial took: a DNS name it asked, or an address it dialled.
type Attempt struct {
	// What was tried: "_80._tcp.web.shop.c.example.org. SRV", or
	// "host1.hosts.c.example.org.:32768" for an SRV target, or
	// "host1.hosts.c.example.org.:32768 (127.0.0.1)" for one of its addresses.
	What string
	Err  error
}

// DialError is returned by Dial when no target connected. Its message lists
// the names tried and why each failed, e.g.
//
//	resolver: dial tcp web.shop.c.example.org:80: _80._tcp.web.shop.c.example.org. SRV: 2 targets: host1.hosts.c.example.org.:32768 (127.0.0.1): connection refused; host2.hosts.c.example.org.:32768: A: no such host
type DialError struct {
	Network, Address string
	// Lookups are the SRV names that gave no target, and why.
	Lookups []Attempt
	// SRV is the SRV name whose targets were dialled, "" when Dial fell back
	// to the name as given.
	SRV string
	// Targets counts the targets in the SRV answer.
	Targets int
	// Dials are the attempts to reach a target, in order. Each Err is the
	// error from DNS (a *QueryError or one of the Err* values) or from the
	// dialer (typically a *net.OpError).
	Dials []Attempt
	// Err is set when Dial stopped before dialling anything: the context
	// ended, or a DNS failure made it unsafe to fall back to the plain name.
	Err error
}

func (e *DialError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "resolver: dial %s %s: ", e.Network, e.Address)
	var parts []string
	for _, a := range e.Lookups {
		parts = append(parts, a.What+": "+describe(a.Err))
	}
	var dials []string
	for _, a := range e.Dials {
		dials = append(dials, a.What+": "+describe(a.Err))
	}
	switch {
	case e.SRV != "":
		parts = append(parts, fmt.Sprintf("%s SRV: %s: %s", e.SRV, plural(e.Targets, "target"), strings.Join(dials, "; ")))
	case len(dials) > 0:
		parts = append(parts, dials...)
	}
	if e.Err != nil {
		parts = append(parts, describe(e.Err))
	}
	b.WriteString(strings.Join(parts, "; "))
	return b.String()
}

// Unwrap gives every underlying error, so that errors.Is(err,
// syscall.ECONNREFUSED) or errors.Is(err, ErrNoSuchHost) reports whether any
// attempt failed that way.
func (e *DialError) Unwrap() []error {
	var errs []error
	for _, a := range e.Lookups {
		errs = append(errs, a.Err)
	}
	for _, a := range e.Dials {
		errs = append(errs, a.Err)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// describe shortens dialer errors to their cause: "dial tcp 127.0.0.1:32768:
// connect: connection refused" says the address twice in a DialError.
func describe(err error) string {
	var errno syscall.Errno
	var netErr net.Error
	var queryErr *QueryError
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &queryErr): // the name and type are said already
		return queryErr.Server + ": " + describe(queryErr.Err)
	case errors.As(err, &netErr) && netErr.Timeout(),
		errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return "timed out"
	case errors.As(err, &errno):
		return errno.Error()
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err.Error()
	}
	return err.Error()
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
