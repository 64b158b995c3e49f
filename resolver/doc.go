// Package resolver owns the client side of Berth's names: it turns a service
// name and the container port a client wants ("web.shop.c.example.org:80")
// into the host and port Docker published, and dials it.
//
// Programs that never look up SRV records (browsers, curl) cannot find a
// published port on their own. Dial does it for them: it asks for
// _<port>._<proto>.<name> SRV, then _<IANA name>._<proto>.<name> for
// well-known ports, orders the targets as RFC 2782 says (lowest priority
// first, weighted random within a priority), and dials them in that order
// with a timeout per attempt until one connects. A name with no SRV records
// is dialled as given (plain A/AAAA), so ordinary Internet names keep working.
//
// Answers are cached for their TTL (negative answers for the SOA minimum),
// in a cache of bounded size. When Dial fails, its *DialError names every
// DNS name and address it tried and why each failed.
//
// A Resolver is safe for concurrent use; its Dial method has the signature of
// net.Dialer.DialContext, so it plugs into http.Transport.DialContext.
package resolver
