package ctl

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/miekg/dns"

	"github.com/berthdns/berth/record"
)

// Version is berth's version; the build may set it with -ldflags
// "-X github.com/berthdns/berth/ctl.Version=...".
var Version = "0.1.0"

// Defaults of the flags every subcommand takes.
const (
	DefaultPrefix = "berth"
	DefaultZone   = "c.example.org"
	DefaultListen = "127.0.0.1:9755"
)

// errUsage is a bad command line: exit 2 after the message.
var errUsage = errors.New("usage")

// options are the parsed command line: the flags every subcommand takes,
// and those only some use (a subcommand refuses the others' by not
// defining them).
type options struct {
	prefix        string
	zone          string // lower case, no trailing dot
	output        string // table or json
	allowLoopback bool
	nameservers   []string // ls, check: the Corefile's ns names
	dns           string   // resolve: the server to ask; "" is /etc/resolv.conf
	network       string   // resolve: tcp or udp
	plugin        bool     // policy: the plugin's instead of an exporter's
	index         int64    // policy apply: the ModifyIndex to write over (-1: the one it reads)
	listen        string   // ui
	args          []string
}

// origin is the zone as the plugin's zones name it: fully qualified.
func (o *options) origin() string { return o.zone + "." }

// zoneOptions are the Corefile's settings the command line gives.
func (o *options) zoneOptions() zoneOptions {
	return zoneOptions{origin: o.origin(), nameservers: o.nameservers, allowLoopback: o.allowLoopback}
}

// subcommands and what each takes, for parse and --help.
var subcommands = []struct {
	name, args, what string
	flags            func(fs *flag.FlagSet, o *options)
}{
	{"ls", "[SERVICE]", "services, their instances and the endpoints clients dial", zoneFlags},
	{"hosts", "", "hosts: addresses, containers, exporter version, session, last change", nil},
	{"check", "", "validate every document as the plugin would; exit 1 if something would not be served", zoneFlags},
	{"policy", "HOST | --plugin | check|apply FILE", "the Consul ACL policy of HOST's exporter, or of the plugin; or validate an ownership policy document, and write it with check-and-set", func(fs *flag.FlagSet, o *options) {
		fs.BoolVar(&o.plugin, "plugin", false, "the plugin's read-only policy instead of an exporter's")
		fs.Int64Var(&o.index, "index", -1, "apply: write only over this ModifyIndex of the document (0: only where there is none; default: the one apply reads)")
	}},
	{"resolve", "NAME[:PORT]", "what a client would dial for NAME, in the order it would try", func(fs *flag.FlagSet, o *options) {
		fs.StringVar(&o.dns, "dns", "", "DNS server to ask, host[:port] (default: /etc/resolv.conf's)")
		fs.StringVar(&o.network, "network", "tcp", "tcp or udp")
	}},
	{"ui", "", "serve a live, read-only web page of the namespace", func(fs *flag.FlagSet, o *options) {
		loopbackFlag(fs, o)
		fs.StringVar(&o.listen, "listen", DefaultListen, "address of the page (loopback by default: it shows the whole namespace)")
	}},
}

// zoneFlags are loopbackFlag and --ns, the Corefile's settings that
// decide what ls and check report as served.
func zoneFlags(fs *flag.FlagSet, o *options) {
	loopbackFlag(fs, o)
	fs.Func("ns", "a name of the Corefile's ns lines, repeatable (none: the plugin's default ns.dns.ZONE); no service or alias may claim it", func(v string) error {
		if _, ok := dns.IsDomainName(v); !ok {
			return fmt.Errorf("%q is not a domain name", v)
		}
		o.nameservers = append(o.nameservers, v)
		return nil
	})
}

func loopbackFlag(fs *flag.FlagSet, o *options) {
	fs.BoolVar(&o.allowLoopback, "allow-loopback", false, "loopback addresses are served, as the Corefile's allow_loopback")
}

// globalFlags are the flags every subcommand takes; their defaults come
// from the environment.
func globalFlags(fs *flag.FlagSet, o *options, lookupEnv func(string) (string, bool)) {
	prefix, zone := DefaultPrefix, DefaultZone
	if v, ok := lookupEnv("BERTH_PREFIX"); ok && v != "" {
		prefix = v
	}
	if v, ok := lookupEnv("BERTH_ZONE"); ok && v != "" {
		zone = v
	}
	fs.StringVar(&o.prefix, "prefix", prefix, "Consul KV prefix (BERTH_PREFIX)")
	fs.StringVar(&o.zone, "zone", zone, "the zone the plugin serves (BERTH_ZONE)")
	fs.StringVar(&o.output, "o", "table", "output: table or json")
	fs.StringVar(&o.output, "output", "table", "output: table or json")
}

// parse reads args (without the program's name): the subcommand, then its
// flags and arguments in any order. It returns flag.ErrHelp after printing
// --help, and errUsage after printing what is wrong.
func parse(args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) (string, *options, error) {
	o := &options{index: -1}
	top := flag.NewFlagSet("berth", flag.ContinueOnError)
	top.SetOutput(io.Discard)
	version := top.Bool("version", false, "")
	globalFlags(top, o, lookupEnv)
	top.Usage = func() {}
	if err := top.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout)
			return "", nil, flag.ErrHelp
		}
		fmt.Fprintf(stderr, "berth: %v (berth --help)\n", err)
		return "", nil, errUsage
	}
	if *version {
		return "version", o, nil
	}
	if top.NArg() == 0 {
		usage(stderr)
		return "", nil, errUsage
	}
	name := top.Arg(0)
	if name == "help" {
		usage(stdout)
		return "", nil, flag.ErrHelp
	}
	i := -1
	for j, s := range subcommands {
		if s.name == name {
			i = j
		}
	}
	if i < 0 {
		fmt.Fprintf(stderr, "berth: unknown command %q (berth --help lists them)\n", name)
		return "", nil, errUsage
	}
	sub := subcommands[i]
	fs := flag.NewFlagSet("berth "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	// The flags given before the subcommand stay the defaults.
	g := *o
	globalFlags(fs, o, lookupEnv)
	o.prefix, o.zone, o.output = g.prefix, g.zone, g.output
	if sub.flags != nil {
		sub.flags(fs, o)
	}
	rest := top.Args()[1:]
	for {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprintf(stdout, "Usage: berth %s %s [flags]\n\n%s.\n\n", name, sub.args, sub.what)
				fs.SetOutput(stdout)
				fs.PrintDefaults()
				return "", nil, flag.ErrHelp
			}
			fmt.Fprintf(stderr, "berth %s: %v (berth %s --help)\n", name, err, name)
			return "", nil, errUsage
		}
		if fs.NArg() == 0 {
			break
		}
		o.args = append(o.args, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if err := o.validate(); err != nil {
		fmt.Fprintf(stderr, "berth %s: %v\n", name, err)
		return "", nil, errUsage
	}
	return name, o, nil
}

func (o *options) validate() error {
	prefix, err := record.CleanPrefix(o.prefix)
	if err != nil {
		return fmt.Errorf("--prefix: %w", err)
	}
	o.prefix = prefix
	zone := strings.ToLower(strings.TrimSuffix(o.zone, "."))
	if _, ok := dns.IsDomainName(zone); !ok || zone == "" {
		return fmt.Errorf("--zone %q: not a domain name", o.zone)
	}
	for _, l := range strings.Split(zone, ".") {
		if record.ValidLabel(l) != nil {
			return fmt.Errorf("--zone %q: not a domain name of a-z, 0-9 and - labels", o.zone)
		}
	}
	o.zone = zone
	if o.output != "table" && o.output != "json" {
		return fmt.Errorf("-o %q: table or json", o.output)
	}
	if o.network != "" && o.network != "tcp" && o.network != "udp" {
		return fmt.Errorf("--network %q: tcp or udp", o.network)
	}
	return nil
}

// usage is --help: the subcommands, the common flags and the variables.
func usage(w io.Writer) {
	fmt.Fprintf(w, `Usage: berth [flags] COMMAND [ARGS] [flags]

Shows and checks Berth's namespace in Consul KV (see ctl/README.md).

Commands:
`)
	for _, s := range subcommands {
		fmt.Fprintf(w, "  %-8s %-16s %s\n", s.name, s.args, s.what)
	}
	fmt.Fprintf(w, `
Flags of every command:
  --prefix PREFIX   Consul KV prefix (default %q; BERTH_PREFIX)
  --zone ZONE       the zone the plugin serves (default %q; BERTH_ZONE)
  -o table|json     output format (default table)
  --version         print the version and exit
berth COMMAND --help lists a command's own flags.

Environment:
  BERTH_PREFIX, BERTH_ZONE   defaults of --prefix and --zone
  CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, CONSUL_HTTP_TOKEN_FILE, CONSUL_HTTP_SSL,
  CONSUL_HTTP_SSL_VERIFY, CONSUL_CACERT, CONSUL_CAPATH, CONSUL_CLIENT_CERT,
  CONSUL_CLIENT_KEY, CONSUL_TLS_SERVER_NAME, CONSUL_HTTP_AUTH, CONSUL_NAMESPACE,
  CONSUL_PARTITION   the Consul client's own variables (api.DefaultConfig)

Exit status: 0 success; 1 check found something the zone would leave out
(or ls found no such service); 2 a bad command line or a Consul error.
`, DefaultPrefix, DefaultZone)
}
