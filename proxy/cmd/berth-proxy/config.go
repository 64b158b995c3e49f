package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/berthdns/berth/internal/envflag"
	"github.com/berthdns/berth/proxy"
	"github.com/berthdns/berth/record"
)

// config is berth-proxy's command line, checked.
type config struct {
	socks, http, metrics string // listen addresses; "" is off
	dns                  string
	zones, allow, deny   []string
	authFile             string
	users                map[string]string // read from authFile
	dialTimeout          time.Duration
	connectTimeout       time.Duration
	handshakeTimeout     time.Duration
	idleTimeout          time.Duration
	keepAliveTimeout     time.Duration
	maxConns             int
	allowLoopback        bool
	allowOwnAddresses    bool
	logLevel             slog.Level
	logFormat            string
	version              bool
}

// parseFlags parses args (without the program name) and checks them, so
// that nonsense is refused before anything listens. Every flag can also be
// set by its BERTH_ variable, looked up with lookupEnv; the command line
// wins. A variable set to "" empties a string flag (BERTH_SOCKS= turns the
// SOCKS listener off) and is ignored for the others. --help returns
// flag.ErrHelp after writing the usage to output.
func parseFlags(args []string, lookupEnv func(string) (string, bool), output io.Writer) (config, error) {
	var c config
	var zones, allow, deny, logLevel string
	fs := flag.NewFlagSet("berth-proxy", flag.ContinueOnError)
	fs.SetOutput(output)
	fs.StringVar(&c.socks, "socks", "127.0.0.1:1080", "SOCKS5 listen address (empty to disable)")
	fs.StringVar(&c.http, "http", "127.0.0.1:3128", "HTTP proxy listen address, which also serves /proxy.pac (empty to disable)")
	fs.StringVar(&c.metrics, "metrics", "", "address to serve Prometheus /metrics on (empty: off)")
	fs.StringVar(&c.dns, "dns", "", "DNS server to ask, host[:port] (default: the system's, from /etc/resolv.conf)")
	fs.StringVar(&zones, "zones", "", "comma-separated zones whose names are resolved through SRV records")
	fs.StringVar(&allow, "allow", "", "comma-separated domain suffixes and CIDRs that may also be reached (default: only the zones)")
	fs.StringVar(&deny, "deny", "", "comma-separated CIDRs and addresses never dialled, whatever DNS says (metadata services and link-local always are)")
	fs.StringVar(&c.authFile, "auth-file", "", "file of user:password lines; when set, clients must authenticate")
	fs.DurationVar(&c.dialTimeout, "dial-timeout", proxy.DefaultDialTimeout, "timeout of one connection attempt to one address")
	fs.DurationVar(&c.connectTimeout, "connect-timeout", proxy.DefaultConnectTimeout, "timeout of a whole dial: DNS and every attempt")
	fs.DurationVar(&c.handshakeTimeout, "handshake-timeout", proxy.DefaultHandshakeTimeout, "time a client has for its SOCKS handshake or HTTP request header")
	fs.DurationVar(&c.idleTimeout, "idle-timeout", proxy.DefaultIdleTimeout, "close a CONNECT or SOCKS tunnel after this long with no traffic either way")
	fs.BoolVar(&c.allowLoopback, "allow-loopback", false, "also dial loopback addresses (this host) when DNS points there; link-local stays refused")
	fs.BoolVar(&c.allowOwnAddresses, "allow-own-addresses", false, "also dial this host's own non-loopback addresses (a proxy on a container host that must reach its containers)")
	fs.DurationVar(&c.keepAliveTimeout, "keepalive-timeout", proxy.DefaultKeepAliveTimeout, "close an HTTP proxy connection idle this long between requests (it holds a --max-conns slot)")
	fs.IntVar(&c.maxConns, "max-conns", proxy.DefaultMaxConns, "client connections open at once, over both listeners")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "text or json")
	fs.BoolVar(&c.version, "version", false, "print the version and exit")
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name != "version" {
			f.Usage += " [$" + envflag.Name(f.Name) + "]"
		}
	})
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: berth-proxy [flags]\n\n"+
			"A SOCKS5 and HTTP proxy to the services of Berth's zones (see proxy/README.md).\n"+
			"Every flag can also be set by the environment variable in brackets;\n"+
			"a flag on the command line wins over its variable.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.version {
		return c, nil
	}
	if err := envflag.Apply(fs, lookupEnv); err != nil {
		return c, err
	}
	c.zones, c.allow, c.deny = splitList(zones), splitList(allow), splitList(deny)
	if err := c.logLevel.UnmarshalText([]byte(logLevel)); err != nil {
		return c, fmt.Errorf("--log-level %q: debug, info, warn or error", logLevel)
	}
	if err := c.validate(); err != nil {
		return c, err
	}
	users, err := readUsers(c.authFile)
	c.users = users
	return c, err
}

// validate refuses values the proxy could only fail on later, naming the
// flag and saying what it wants.
func (c *config) validate() error {
	if c.socks == "" && c.http == "" {
		return errors.New("both --socks and --http are empty: nothing to serve")
	}
	for _, l := range []struct{ name, addr string }{{"socks", c.socks}, {"http", c.http}, {"metrics", c.metrics}} {
		if l.addr == "" {
			continue
		}
		if err := checkHostPort(l.addr, true); err != nil {
			return fmt.Errorf("--%s %q: %w", l.name, l.addr, err)
		}
	}
	if c.dns != "" {
		addr := c.dns
		if _, _, err := net.SplitHostPort(addr); err != nil {
			addr = net.JoinHostPort(strings.Trim(addr, "[]"), "53") // host alone, v6 included
		}
		if err := checkHostPort(addr, false); err != nil {
			return fmt.Errorf("--dns %q: %w; want host[:port], e.g. 10.0.0.53 or 10.0.0.53:53", c.dns, err)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"dial-timeout", c.dialTimeout}, {"connect-timeout", c.connectTimeout},
		{"handshake-timeout", c.handshakeTimeout}, {"idle-timeout", c.idleTimeout}, {"keepalive-timeout", c.keepAliveTimeout}} {
		if d.v <= 0 {
			return fmt.Errorf("--%s %s: must be positive", d.name, d.v)
		}
	}
	if c.connectTimeout < c.dialTimeout {
		return fmt.Errorf("--connect-timeout %s is shorter than --dial-timeout %s: no attempt could run its course", c.connectTimeout, c.dialTimeout)
	}
	if c.maxConns < 1 {
		return fmt.Errorf("--max-conns %d: must be at least 1", c.maxConns)
	}
	if c.logFormat != "text" && c.logFormat != "json" {
		return fmt.Errorf("--log-format %q: text or json", c.logFormat)
	}
	if _, err := proxy.NewPolicy(c.zones, c.allow); err != nil {
		return err
	}
	if _, err := record.ParseDenyList(c.deny); err != nil {
		return fmt.Errorf("--deny: %w", err)
	}
	return nil
}

// checkHostPort checks "host:port": the host an IP address or a domain name
// (empty too when listening, meaning every address), the port a number
// (0 when listening, meaning any free one).
func checkHostPort(s string, listen bool) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 || n == 0 && !listen {
		return fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	switch {
	case host == "" && listen:
		return nil
	case host == "":
		return errors.New("missing host")
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if _, ok := dns.IsDomainName(host); !ok || strings.ContainsAny(host, " /\\:[]") {
		return fmt.Errorf("host %q is neither an IP address nor a domain name", host)
	}
	return nil
}

// logger builds the slog logger the configuration asks for.
func (c *config) logger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.logLevel}
	if c.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// readUsers reads user:password lines; blank lines and # comments are
// skipped. Passwords come from a file, not a flag, so they do not show in ps;
// the file must be its owner's alone, and no password may be empty.
func readUsers(path string) (map[string]string, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--auth-file: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("--auth-file: %w", err)
	}
	if mode := info.Mode().Perm(); mode&0o077 != 0 {
		return nil, fmt.Errorf("--auth-file %s: mode %04o lets group or others at the passwords; make it the owner's alone: chmod 600 %s", path, mode, path)
	}
	users := map[string]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, pass, ok := strings.Cut(line, ":")
		if !ok || user == "" || len(user) > 255 || len(pass) > 255 {
			return nil, fmt.Errorf("--auth-file %s:%d: want user:password, each at most 255 bytes", path, n)
		}
		if pass == "" {
			return nil, fmt.Errorf("--auth-file %s:%d: user %q has an empty password; give every user one", path, n, user)
		}
		users[user] = pass
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("--auth-file: %w", err)
	}
	if len(users) == 0 {
		return nil, fmt.Errorf("--auth-file %s: no users", path)
	}
	return users, nil
}
