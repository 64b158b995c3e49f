package exporter

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/berthdns/berth/internal/envflag"
	"github.com/berthdns/berth/record"
)

// Version is the exporter's version, written into every host document; the
// build may set it with -ldflags "-X github.com/berthdns/berth/exporter.Version=...".
var Version = "0.1.0"

// Config is the exporter's configuration; ParseFlags fills it from the
// command line and the environment.
type Config struct {
	Node             string        // this host's name; "" means the Docker Engine's name
	AdvertiseAddrs   []netip.Addr  // what clients dial for wildcard bindings; nil means detect
	Prefix           string        // KV prefix
	SessionTTL       time.Duration // Consul session TTL, at least 10s
	Resync           time.Duration // full reconcile interval
	Explicit         bool          // publish only containers that opt in
	Listen           string        // metrics and /healthz; "" disables
	LogLevel         string
	LogFormat        string // text or json
	DryRun           bool
	Once             bool
	DeregisterOnExit bool
	ShowVersion      bool // --version: print the version and exit
	// AllowLoopback lets a loopback advertise address be published (a
	// single-machine setup, tests); off, loopback is never published.
	AllowLoopback bool
	// OnlyLabel, "key" or "key=value", restricts the exporter to containers
	// carrying that label (several exporters sharing one engine, tests).
	OnlyLabel string
	// Compat is CompatNone or CompatRegistrator: also honour registrator's
	// SERVICE_* labels and environment variables (labels.go).
	Compat string
	// KVLayout is which KV layouts the host document is kept in
	// (record.WriteMode; README.md#upgrading-the-kv-layout).
	KVLayout record.WriteMode
}

// DefaultConfig is the configuration without any flag or variable.
func DefaultConfig() Config {
	return Config{Prefix: "berth", SessionTTL: 10 * time.Second, Resync: 30 * time.Second,
		Listen: "127.0.0.1:9753", LogLevel: "info", LogFormat: "text", KVLayout: record.WriteBoth}
}

// ParseFlags parses args (without the program name). Every flag can also be
// set by the environment variable BERTH_<FLAG> (upper case, - as _), looked
// up with lookupEnv (os.LookupEnv); a flag on the command line wins over the
// variable. A variable set to the empty string empties a string flag
// (BERTH_LISTEN= turns the listener off) and is ignored for the others.
func ParseFlags(args []string, lookupEnv func(string) (string, bool), output io.Writer) (Config, error) {
	cfg := DefaultConfig()
	fs := flag.NewFlagSet("berth-exporter", flag.ContinueOnError)
	fs.SetOutput(output)
	var addrs string
	layout := string(cfg.KVLayout)
	fs.StringVar(&cfg.Node, "node", "", "this host's name (default: the Docker Engine's name)")
	fs.StringVar(&addrs, "advertise-addr", "", "IP[,IP] clients dial for 0.0.0.0 / :: bindings (default: the source address towards Consul and its IPv6 twin)")
	fs.StringVar(&cfg.Prefix, "prefix", cfg.Prefix, "Consul KV prefix")
	fs.DurationVar(&cfg.SessionTTL, "session-ttl", cfg.SessionTTL, "Consul session TTL (at least 10s)")
	fs.DurationVar(&cfg.Resync, "resync", cfg.Resync, "full reconcile interval")
	fs.BoolVar(&cfg.Explicit, "explicit", false, "publish only containers labelled berth.enable=true or berth.service=...")
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "address for /metrics and /healthz (empty: none; :9753 for every interface)")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "debug, info, warn or error")
	fs.StringVar(&cfg.LogFormat, "log-format", cfg.LogFormat, "text or json")
	fs.BoolVar(&cfg.DryRun, "dry-run", false, "print the documents it would write, as a table, and exit")
	fs.BoolVar(&cfg.Once, "once", false, "reconcile once, then exit (records live until the session expires)")
	fs.BoolVar(&cfg.DeregisterOnExit, "deregister-on-exit", false, "remove this host's records on SIGTERM")
	fs.StringVar(&cfg.OnlyLabel, "only-label", "", "KEY or KEY=VALUE: consider only containers with this label")
	fs.BoolVar(&cfg.AllowLoopback, "allow-loopback", false, "allow a loopback advertise address (only this machine can dial it: a single-machine setup)")
	fs.StringVar(&cfg.Compat, "compat", "", `also honour another tool's container metadata: "registrator" (SERVICE_NAME, SERVICE_<port>_NAME, SERVICE_IGNORE, ... as labels or environment variables)`)
	fs.StringVar(&layout, "kv-layout", layout, "KV layouts of the host document: 1 (earlier releases' readers), 2 (this release's; a change costs readers one shard), or both, for a fleet whose CoreDNS servers are not all upgraded")
	fs.BoolVar(&cfg.ShowVersion, "version", false, "print the version and exit")
	fs.Usage = func() { usage(fs) }
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if err := envflag.Apply(fs, lookupEnv); err != nil {
		return cfg, err
	}
	mode, err := record.ParseWriteMode(layout)
	if err != nil {
		return cfg, fmt.Errorf("--kv-layout: %w", err)
	}
	cfg.KVLayout = mode
	if addrs != "" {
		for _, s := range strings.Split(addrs, ",") {
			a, err := netip.ParseAddr(strings.TrimSpace(s))
			if err != nil {
				return cfg, fmt.Errorf("--advertise-addr: %w", err)
			}
			if a = a.Unmap(); a.Zone() != "" {
				return cfg, fmt.Errorf("--advertise-addr: %s is not an address clients can dial: it has a zone", a)
			}
			if err := advertisable(a, cfg.AllowLoopback); err != nil {
				return cfg, err
			}
			cfg.AdvertiseAddrs = append(cfg.AdvertiseAddrs, a)
		}
	}
	return cfg, cfg.validate()
}

// usage prints --help: every flag with its variable, and the variables of
// the Consul and Docker clients.
func usage(fs *flag.FlagSet) {
	w := fs.Output()
	fmt.Fprintf(w, `Usage: berth-exporter [flags]

Publishes the running containers of this Docker host into Consul KV for
Berth's CoreDNS plugin (see exporter/README.md). Every flag but --version is
also the environment variable named beside it; a flag on the command line
wins over its variable.

`)
	fs.VisitAll(func(f *flag.Flag) {
		kind, text := flag.UnquoteUsage(f)
		fmt.Fprintf(w, "  --%s", f.Name)
		if kind != "" {
			fmt.Fprintf(w, " %s", kind)
		}
		if env := envflag.Name(f.Name); env != "" {
			fmt.Fprintf(w, "    (%s)", env)
		}
		fmt.Fprintf(w, "\n    \t%s", text)
		if f.DefValue != "" && f.DefValue != "false" {
			fmt.Fprintf(w, " (default %q)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
	fmt.Fprintf(w, `
Consul is configured by its client's variables (CONSUL_HTTP_ADDR,
CONSUL_HTTP_TOKEN, CONSUL_HTTP_TOKEN_FILE, CONSUL_HTTP_SSL, CONSUL_CACERT,
...), Docker by its own (DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH,
DOCKER_API_VERSION).
`)
}

func (c *Config) validate() error {
	prefix, err := record.CleanPrefix(c.Prefix)
	if err != nil {
		return fmt.Errorf("--prefix: %w", err)
	}
	c.Prefix = prefix
	switch {
	case c.SessionTTL < 10*time.Second || c.SessionTTL > 24*time.Hour:
		return fmt.Errorf("--session-ttl %s: Consul accepts 10s to 24h", c.SessionTTL)
	case c.Resync <= 0:
		return fmt.Errorf("--resync %s: must be positive", c.Resync)
	case c.LogFormat != "text" && c.LogFormat != "json":
		return fmt.Errorf("--log-format %q: text or json", c.LogFormat)
	case c.Compat != CompatNone && c.Compat != CompatRegistrator:
		return fmt.Errorf("--compat %q: empty or %q", c.Compat, CompatRegistrator)
	}
	if err := checkListen(c.Listen); err != nil {
		return err
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	return nil
}

// checkListen refuses a --listen the listener could never bind, such as
// port 99999, before anything starts.
func checkListen(addr string) error {
	if addr == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--listen %q: want HOST:PORT, IP:PORT or :PORT: %w", addr, err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("--listen %q: port %q is not a number from 0 to 65535", addr, port)
	}
	if strings.ContainsAny(host, "/ ") {
		return fmt.Errorf("--listen %q: host %q is not an address or a name", addr, host)
	}
	return nil
}

// Logger builds the slog logger the configuration asks for.
func (c *Config) Logger(w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
