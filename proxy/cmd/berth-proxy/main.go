// Command berth-proxy lets browsers, curl and any program that speaks SOCKS5
// or HTTP proxy reach Berth services by name and container port: it looks up
// the SRV records for them and connects to the host and port that Docker
// published.
//
//	berth-proxy --zones c.example.org --dns 10.0.0.53
//	curl --socks5-hostname 127.0.0.1:1080 http://web.shop.c.example.org/
//	curl -x http://127.0.0.1:3128 http://web.shop.c.example.org/
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/berthdns/berth/proxy"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "berth-proxy:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("berth-proxy", flag.ContinueOnError)
	socksAddr := fs.String("socks", "127.0.0.1:1080", "SOCKS5 listen address (empty to disable)")
	httpAddr := fs.String("http", "127.0.0.1:3128", "HTTP proxy listen address (empty to disable)")
	metricsAddr := fs.String("metrics", "", "address to serve Prometheus /metrics on (empty: off)")
	dnsServer := fs.String("dns", "", "DNS server to ask, host[:port] (default: the system's, from /etc/resolv.conf)")
	zones := fs.String("zones", "", "comma-separated zones whose names are resolved through SRV records")
	allow := fs.String("allow", "", "comma-separated domain suffixes and CIDRs that may also be reached (default: only the zones)")
	authFile := fs.String("auth-file", "", "file of user:password lines; when set, clients must authenticate")
	dialTimeout := fs.Duration("dial-timeout", proxy.DefaultDialTimeout, "timeout of one connection attempt to one address")
	connectTimeout := fs.Duration("connect-timeout", proxy.DefaultConnectTimeout, "timeout of a whole dial: DNS and every attempt")
	handshakeTimeout := fs.Duration("handshake-timeout", proxy.DefaultHandshakeTimeout, "time a client has for its SOCKS handshake or HTTP request header")
	idleTimeout := fs.Duration("idle-timeout", proxy.DefaultIdleTimeout, "close a tunnel after this long with no traffic either way")
	maxConns := fs.Int("max-conns", proxy.DefaultMaxConns, "client connections open at once, over both listeners")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if *socksAddr == "" && *httpAddr == "" {
		return errors.New("both --socks and --http are empty: nothing to serve")
	}
	users, err := readUsers(*authFile)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	srv, err := proxy.New(proxy.Config{
		Zones:            splitList(*zones),
		Allow:            splitList(*allow),
		DNSServer:        *dnsServer,
		Users:            users,
		DialTimeout:      *dialTimeout,
		ConnectTimeout:   *connectTimeout,
		HandshakeTimeout: *handshakeTimeout,
		IdleTimeout:      *idleTimeout,
		MaxConns:         *maxConns,
		Registerer:       reg,
		Logger:           logger,
	})
	if err != nil {
		return err
	}
	defer srv.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errs := make(chan error, 3)
	serve := func(name, addr string, serveFn func(net.Listener) error) error {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("--%s: %w", name, err)
		}
		logger.Info("listening", "listener", name, "addr", ln.Addr().String())
		go func() { errs <- serveFn(ln) }()
		return nil
	}
	if *socksAddr != "" {
		if err := serve("socks", *socksAddr, srv.ServeSOCKS); err != nil {
			return err
		}
	}
	if *httpAddr != "" {
		if err := serve("http", *httpAddr, srv.ServeHTTPProxy); err != nil {
			return err
		}
	}
	if *metricsAddr != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		ms := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		defer ms.Close()
		if err := serve("metrics", *metricsAddr, func(ln net.Listener) error {
			if err := ms.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		}); err != nil {
			return err
		}
	}
	logger.Info("berth-proxy started", "zones", *zones, "allow", *allow, "dns", orSystem(*dnsServer), "auth", len(users) > 0)

	select {
	case <-ctx.Done():
		logger.Info("shutting down")
		return nil
	case err := <-errs:
		return err
	}
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

func orSystem(s string) string {
	if s == "" {
		return "system"
	}
	return s
}

// readUsers reads user:password lines; blank lines and # comments are
// skipped. Passwords come from a file, not a flag, so they do not show in ps.
func readUsers(path string) (map[string]string, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--auth-file: %w", err)
	}
	defer f.Close()
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
