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
// is dialled as given (plain A/AAAA), so ordinary Internet names keep
// working; with Options.SRVOnly, names in the zones never are: they are
// reached only through the SRV records of _<port>._<proto>.<name>, each
// target at the one address the zone says its port is bound on (a
// container's name as target stands for its own addresses, not its
// host's), and otherwise Dial fails with ErrNotPublished.
// Whether a name is in a zone is record.InZone's answer (at a label
// boundary, escape-aware), the same as the plugin's.
//
// Answers are cached for their TTL (negative answers for the SOA minimum,
// every answer for at most an hour), in a cache of bounded size (4096
// answers by default, Options.CacheSize). So a change in the zone reaches
// Dial only when the cached answer expires: after a container stops or
// moves, Dial may still try its old host and port for up to the SRV
// record's TTL (the plugin's ttl, 5 s by default), then moves on to
// the next target as it would for any dead one. When Dial fails, its
// *DialError names every DNS name and address it tried and why each failed.
//
// Files, one role each:
//   - resolver.go: Options, New, Resolve (the plan: SRV targets in order,
//     or the name as given), Dial, and the address lookups.
//   - query.go: one DNS question to the configured servers, UDP then TCP
//     when truncated, through the cache.
//   - cache.go: the bounded LRU cache of answers by TTL.
//   - srv.go: RFC 2782 ordering.
//   - errors.go: QueryError, DialError and the Err* values.
//
// A Resolver is safe for concurrent use; its Dial method has the signature of
// net.Dialer.DialContext, so it plugs into http.Transport.DialContext.
package resolver
