// Command berth-exporter publishes the containers of one Docker host into
// Consul KV for Berth's CoreDNS plugin. See exporter/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/moby/moby/client"

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
	log := cfg.Logger(os.Stderr)
	if err := run(cfg, log); err != nil {
		log.Error("exiting", "err", err)
		os.Exit(1)
	}
}

func run(cfg exporter.Config, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	docker, err := client.New(client.FromEnv, client.WithAPIVersionNegotiation())
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

	if cfg.Listen != "" {
		srv := &http.Server{Addr: cfg.Listen, Handler: e.Handler(), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics listener", "err", err)
				stop()
			}
		}()
		defer srv.Close()
	}
	return e.Run(ctx)
}
