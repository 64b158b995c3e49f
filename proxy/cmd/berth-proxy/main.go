// Command berth-proxy lets browsers, curl and any program that speaks SOCKS5
// or HTTP proxy reach Berth services by name and container port: it looks up
// the SRV records for them and connects to the host and port that Docker
// published. See proxy/README.md.
//
//	berth-proxy --zones c.example.org --dns 10.0.0.53
//	curl --socks5-hostname 127.0.0.1:1080 http://web.shop.c.example.org/
//	curl -x http://127.0.0.1:3128 http://web.shop.c.example.org/
//
// Exit status: 0 after SIGTERM, --help or --version; 2 for a bad command
// line (nothing has listened yet); 1 when serving fails.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/berthdns/berth/proxy"
)

func main() {
	cfg, err := parseFlags(os.Args[1:], os.LookupEnv, os.Stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case err != nil:
		fmt.Fprintln(os.Stderr, "berth-proxy:", err)
		os.Exit(2)
	case cfg.version:
		fmt.Printf("berth-proxy %s %s\n", proxy.Version, runtime.Version())
		os.Exit(0)
	}
	logger := cfg.logger(os.Stderr)
	if err := run(cfg, logger); err != nil {
		logger.Error("exiting", "err", err)
		os.Exit(1)
	}
}

// run serves until SIGTERM or SIGINT (nil) or a listener fails.
func run(cfg config, logger *slog.Logger) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	srv, err := proxy.New(proxy.Config{
		Zones:             cfg.zones,
		Allow:             cfg.allow,
		DNSServer:         cfg.dns,
		Users:             cfg.users,
		DialTimeout:       cfg.dialTimeout,
		ConnectTimeout:    cfg.connectTimeout,
		HandshakeTimeout:  cfg.handshakeTimeout,
		IdleTimeout:       cfg.idleTimeout,
		KeepAliveTimeout:  cfg.keepAliveTimeout,
		MaxConns:          cfg.maxConns,
		AllowLoopback:     cfg.allowLoopback,
		AllowOwnAddresses: cfg.allowOwnAddresses,
		Deny:              cfg.deny,
		Registerer:        reg,
		Logger:            logger,
	})
	if err != nil {
		return err
	}
	defer srv.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errs := make(chan error, 3)
	serve := func(name, addr string, serveFn func(net.Listener) error) error {
		if addr == "" {
			return nil
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("--%s: %w", name, err)
		}
		logger.Info("listening", "listener", name, "addr", ln.Addr().String())
		go func() { errs <- serveFn(ln) }()
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	ms := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	defer ms.Close()
	serveMetrics := func(ln net.Listener) error {
		if err := ms.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
	if err := errors.Join(serve("socks", cfg.socks, srv.ServeSOCKS), serve("http", cfg.http, srv.ServeHTTPProxy),
		serve("metrics", cfg.metrics, serveMetrics)); err != nil {
		return err
	}
	logger.Info("berth-proxy started", "version", proxy.Version, "zones", strings.Join(cfg.zones, ","),
		"allow", strings.Join(cfg.allow, ","), "dns", orSystem(cfg.dns), "auth", len(cfg.users) > 0,
		"allow_loopback", cfg.allowLoopback, "allow_own_addresses", cfg.allowOwnAddresses, "deny", strings.Join(cfg.deny, ","))
	if cfg.allowLoopback {
		logger.Warn("--allow-loopback: names in the zones may send clients to this host's own ports")
	}
	if cfg.allowOwnAddresses {
		logger.Warn("--allow-own-addresses: names in the zones may send clients to this host's own addresses")
	}

	select {
	case <-ctx.Done():
		logger.Info("shutting down")
		return nil
	case err := <-errs:
		return err
	}
}

func orSystem(s string) string {
	if s == "" {
		return "system"
	}
	return s
}
