// Command berth-exporter publishes the containers of one Docker host into
// Consul KV for Berth's CoreDNS plugin. See exporter/README.md.
//
// Exit status: 0 after SIGTERM or SIGINT, --help, --version, and a
// successful --once or --dry-run; 2 for a bad flag or variable; 1 for any
// other failure, such as a --listen address that cannot be bound.
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
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/moby/moby/client"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/berthdns/berth/exporter"
)

func main() {
	cfg, err := exporter.ParseFlags(os.Args[1:], os.LookupEnv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "berth-exporter:", err)
		os.Exit(2)
	}
	if cfg.ShowVersion {
		fmt.Printf("berth-exporter %s %s\n", exporter.Version, runtime.Version())
		os.Exit(0)
	}
	log := cfg.Logger(os.Stderr)
	if err := run(cfg, log); err != nil {
		log.Error("exiting", "err", err)
		os.Exit(1)
	}
}

func run(cfg exporter.Config, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	docker, err := client.New(client.FromEnv)
	if err != nil {
		return fmt.Errorf("docker client: %w", err)
	}
	defer docker.Close()
	// The Consul client reads CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN,
	// CONSUL_HTTP_SSL, CONSUL_CACERT and the rest itself.
	e, err := exporter.New(ctx, cfg, docker, api.DefaultConfig(), log)
	if err != nil {
		return err
	}

	switch {
	case cfg.DryRun:
		return e.DryRun(ctx, os.Stdout)
	case cfg.Once:
		return e.Once(ctx)
	}

	// The binary's registry: the exporter's metrics, the build, and the Go
	// runtime's and the process's.
	reg := prometheus.NewRegistry()
	reg.MustRegister(e.Metrics(), exporter.BuildInfo(), e.EngineInfo(), collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// The listener is bound before anything is published, so that a taken
	// or forbidden --listen address ends the process at once, non-zero.
	serveErr := make(chan error, 1)
	if cfg.Listen != "" {
		ln, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			return fmt.Errorf("--listen: %w", err)
		}
		log.Info("serving /metrics and /healthz", "addr", ln.Addr().String())
		srv := &http.Server{Handler: e.Handler(reg), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("--listen %s: %w", cfg.Listen, err)
				stop()
			}
		}()
		defer srv.Close()
	}
	err = e.Run(ctx)
	select {
	case serr := <-serveErr:
		return errors.Join(serr, err)
	default:
		return err
	}
}
