package berth

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/transfer"
	"github.com/hashicorp/consul/api"
	"github.com/miekg/dns"

	"github.com/berthdns/berth/record"
)

func init() { plugin.Register("berth", setup) }

// config is one berth stanza of the Corefile.
type config struct {
	zones    []string
	consul   *api.Config
	prefix   string
	ttl      uint32
	ns       []NSRecord
	timers   soaTimers
	loopback bool            // allow_loopback
	denied   record.DenyList // deny_addresses
	resync   time.Duration
	fall     []string
	fallSet  bool
}

func setup(c *caddy.Controller) error {
	cfg, err := parse(c)
	if err != nil {
		return plugin.Error("berth", err)
	}
	consul, err := newConsulClient(cfg.consul)
	if err != nil {
		return plugin.Error("berth", err)
	}

	b := &Berth{zones: map[string]*Zone{}}
	if cfg.fallSet {
		b.Fall.SetZonesFromArgs(cfg.fall)
	}
	skip := func(reason, name, why string) {
		invalidRecords.WithLabelValues(reason).Inc()
		dataLog.warningf("not publishing %s: %s", name, why)
	}
	zones := make([]*Zone, 0, len(cfg.zones))
	for _, origin := range cfg.zones {
		z := NewZone(origin, cfg.ttl, cfg.ns, skip)
		z.setTimers(cfg.timers)
		z.allowLoopback = cfg.loopback
		z.denied = cfg.denied
		b.zones[z.Origin()] = z
		b.names = append(b.names, z.Origin()) // match compares lower-case FQDNs
		zones = append(zones, z)
	}
	if cfg.loopback {
		log.Warningf("allow_loopback: loopback addresses are published; only clients on this machine can reach them (a single-machine demo or test, never a fleet)")
	}
	if len(cfg.denied) > 0 {
		log.Infof("deny_addresses: never publishing an address in %v", cfg.denied)
	}
	if len(cfg.ns) == 0 {
		log.Warningf("no ns line: the zone's NS record names %s, which has no address; set ns for delegation", zones[0].SOA().Ns)
	}

	ctx, cancel := context.WithCancel(context.Background())
	notify := newNotifier(zones)
	w := newWatcher(consul.KV(), cfg.prefix, zones, cfg.resync, func() {
		log.Infof("first load from Consul done: %d records, serial %d", zones[0].Records(), zones[0].SOA().Serial)
		notify.changed()
	}, notify.changed)
	c.OnStartup(func() error {
		// As the file plugin does: the transfer plugin, when configured,
		// sends our NOTIFYs to its `to` hosts.
		if t, ok := dnsserver.GetConfig(c).Handler("transfer").(*transfer.Transfer); ok && t != nil {
			notify.xfer = t
			go notify.run(ctx)
		}
		go w.run(ctx)
		return nil
	})
	c.OnShutdown(func() error {
		cancel()
		return nil
	})

	dnsserver.GetConfig(c).AddPlugin(func(next plugin.Handler) plugin.Handler {
		b.Next = next
		return b
	})
	return nil
}

func parse(c *caddy.Controller) (*config, error) {
	cfg := &config{
		consul: api.DefaultConfig(), // CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, ... apply
		prefix: "berth",
		ttl:    5,
		timers: defaultTimers,
		resync: 5 * time.Minute,
	}
	i := 0
	for c.Next() {
		if i > 0 {
			return nil, plugin.ErrOnce
		}
		i++
		args := c.RemainingArgs()
		cfg.zones = plugin.OriginsFromArgsOrServerBlock(args, c.ServerBlockKeys)
		if len(args) > 0 && len(c.ServerBlockKeys) > 0 {
			if err := insideServerBlock(cfg.zones, c.ServerBlockKeys); err != nil {
				return nil, err
			}
		}
		for c.NextBlock() {
			property := c.Val()
			args := c.RemainingArgs()
			switch property {
			case "consul":
				if len(args) != 1 {
					return nil, c.ArgErr()
				}
				cfg.consul.Address = args[0]
			case "token":
				if len(args) != 1 {
					return nil, c.ArgErr()
				}
				cfg.consul.Token = args[0]
			case "token_file":
				if len(args) != 1 {
					return nil, c.ArgErr()
				}
				cfg.consul.TokenFile = args[0]
				cfg.consul.Token = ""
			case "tls":
				if len(args) != 3 {
					return nil, c.Errf("tls needs CERT KEY CA")
				}
				cfg.consul.TLSConfig.CertFile, cfg.consul.TLSConfig.KeyFile, cfg.consul.TLSConfig.CAFile = args[0], args[1], args[2]
				if !strings.Contains(cfg.consul.Address, "://") {
					cfg.consul.Scheme = "https"
				}
			case "datacenter":
				if len(args) != 1 {
					return nil, c.ArgErr()
				}
				cfg.consul.Datacenter = args[0]
			case "prefix":
				if len(args) != 1 {
					return nil, c.ArgErr()
				}
				p, err := record.CleanPrefix(args[0])
				if err != nil {
					return nil, c.Err(err.Error())
				}
				cfg.prefix = p
			case "ttl":
				if len(args) != 1 {
					return nil, c.ArgErr()
				}
				t, err := strconv.ParseUint(args[0], 10, 32)
				if err != nil || t > 3600 {
					return nil, c.Errf("ttl must be a number of seconds from 0 to 3600, not %q", args[0])
				}
				cfg.ttl = uint32(t)
			case "ns":
				if len(args) < 1 {
					return nil, c.ArgErr()
				}
				ns := NSRecord{Name: args[0]}
				for _, a := range args[1:] {
					addr, err := netip.ParseAddr(a)
					if err != nil {
						return nil, c.Errf("ns %s: %q is not an IP address", args[0], a)
					}
					ns.Addrs = append(ns.Addrs, addr.Unmap())
				}
				cfg.ns = append(cfg.ns, ns)
			case "refresh", "retry", "expire":
				if len(args) != 1 {
					return nil, c.ArgErr()
				}
				d, err := parseSeconds(args[0])
				if err != nil {
					return nil, c.Errf("%s: %v", property, err)
				}
				switch property {
				case "refresh":
					cfg.timers.refresh = d
				case "retry":
					cfg.timers.retry = d
				default:
					cfg.timers.expire = d
				}
			case "resync":
				if len(args) != 1 {
					return nil, c.ArgErr()
				}
				d, err := time.ParseDuration(args[0])
				if err != nil || d < time.Second {
					return nil, c.Errf("resync must be a duration of at least 1s, not %q", args[0])
				}
				cfg.resync = d
			case "allow_loopback":
				if len(args) != 0 {
					return nil, c.ArgErr()
				}
				cfg.loopback = true
			case "deny_addresses":
				// CIDRs or addresses no record may lead to (record.DenyList);
				// the line may repeat.
				if len(args) == 0 {
					return nil, c.ArgErr()
				}
				denied, err := record.ParseDenyList(args)
				if err != nil {
					return nil, c.Err(err.Error())
				}
				cfg.denied = append(cfg.denied, denied...)
			case "fallthrough":
				cfg.fall, cfg.fallSet = args, true
			default:
				return nil, c.Errf("unknown property %q", property)
			}
		}
	}
	if t := cfg.timers; t.expire <= t.refresh || t.expire <= t.retry {
		return nil, fmt.Errorf("expire (%ds) must be longer than refresh (%ds) and retry (%ds), or secondaries drop the zone before they retry", t.expire, t.refresh, t.retry)
	}
	for _, ns := range cfg.ns {
		if _, ok := dns.IsDomainName(ns.Name); !ok {
			return nil, fmt.Errorf("ns %q is not a domain name", ns.Name)
		}
		name := strings.ToLower(dns.Fqdn(ns.Name))
		if len(ns.Addrs) > 0 && !slices.ContainsFunc(cfg.zones, func(z string) bool { return record.InZone(name, z) }) {
			return nil, fmt.Errorf("ns %s: addresses are glue, served only for a name inside the zone (%s); give an outside name without them", ns.Name, strings.Join(cfg.zones, " "))
		}
	}
	if err := checkConsulAddress(cfg.consul.Address); err != nil {
		return nil, err
	}
	if cfg.consul.TokenFile != "" {
		if _, err := os.Stat(cfg.consul.TokenFile); err != nil {
			return nil, fmt.Errorf("token_file: %w", err)
		}
	}
	return cfg, nil
}

// parseSeconds reads an SOA timer: a number of seconds, a Go duration
// ("5m", "1h30m") or a number of days or weeks as zone files write them
// ("1d", "2w"), from 1 s to 2^31-1 s (RFC 1035's limit for these fields).
func parseSeconds(arg string) (uint32, error) {
	var secs uint64
	if d, err := time.ParseDuration(arg); err == nil {
		secs = uint64(max(d, 0) / time.Second)
	} else {
		unit := uint64(1)
		switch {
		case strings.HasSuffix(arg, "d"):
			unit = 24 * 3600
		case strings.HasSuffix(arg, "w"):
			unit = 7 * 24 * 3600
		}
		n, err := strconv.ParseUint(strings.TrimRight(arg, "dw"), 10, 32)
		if err != nil {
			return 0, fmt.Errorf("%q is neither a duration nor a number of seconds, days (d) or weeks (w)", arg)
		}
		secs = n * unit // at most 2^32 weeks: no overflow
	}
	if secs < 1 || secs > math.MaxInt32 {
		return 0, fmt.Errorf("%q must be from 1s to %ds", arg, math.MaxInt32)
	}
	return uint32(secs), nil
}

// insideServerBlock checks that every zone named on the berth line lies in
// one of the server block's zones: CoreDNS would never route a query for
// one outside to this block.
func insideServerBlock(zones, keys []string) error {
	var block []string
	for _, k := range keys {
		block = append(block, plugin.Host(k).NormalizeExact()...)
	}
	for _, z := range zones {
		if !slices.ContainsFunc(block, func(b string) bool { return record.InZone(z, b) }) {
			return fmt.Errorf("zone %s is outside its server block (%s): no query for it would reach berth", z, strings.Join(block, " "))
		}
	}
	return nil
}

// checkConsulAddress checks the consul address (or CONSUL_HTTP_ADDR) at
// start, rather than at the first request: host:port or a URL of scheme
// http or https, a port from 1 to 65535 (or a unix socket path).
func checkConsulAddress(addr string) error {
	hostport := addr
	if scheme, rest, ok := strings.Cut(addr, "://"); ok {
		switch scheme {
		case "http", "https":
			hostport = strings.TrimSuffix(rest, "/")
		case "unix":
			return nil
		default:
			return fmt.Errorf("consul %q: scheme %q, want http or https", addr, scheme)
		}
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return fmt.Errorf("consul %q: want host:port: %v", addr, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || host == "" {
		return fmt.Errorf("consul %q: want host:port with a port from 1 to 65535", addr)
	}
	return nil
}
