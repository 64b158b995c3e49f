package exporter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/moby/moby/client"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/berthdns/berth/internal/backoff"
	"github.com/berthdns/berth/record"
)

// Timeouts for one Docker or Consul round, so that a frozen peer delays the
// worker instead of stopping it.
const (
	dockerTimeout = 15 * time.Second
	consulTimeout = 10 * time.Second
)

// Exporter keeps one Docker host's containers published in Consul KV. Events
// and the periodic resync only mark containers dirty; a single worker
// goroutine re-inspects them, recomputes the desired state and hands it to
// the Publisher, so a quick stop-start can never be applied out of order.
type Exporter struct {
	cfg     Config
	docker  *client.Client
	consul  *api.Client
	log     *slog.Logger
	metrics *Metrics
	mapper  Mapper
	host    string
	pub     *Publisher
	sess    *Session
	health  *healthCache
	reach   *engineReach  // whether the engine answers; every Docker request reports to it
	libpod  *libpodClient // Podman's own API, for its event stream (libpod.go)

	// The engine behind the Docker API, detected before each event
	// subscription (events.go): Podman's events need handling of their own.
	engineMu   sync.Mutex
	engine     Engine
	engineInfo *prometheus.GaugeVec

	mu    sync.Mutex
	dirty map[string]time.Time // id -> time of the earliest unapplied event (zero: none)
	full  bool                 // a full listing is due
	wake  chan struct{}

	// Worker-only state.
	desired map[string]*record.Container
	skipped map[string]string           // id -> reason last logged, so each is logged once
	unbound map[string][]SkippedBinding // id -> bindings left out, as last logged
	labels  labelNotes                  // id -> label values left out, as last logged
	pending map[string]time.Time        // id -> event time, until a publish reflects it
}

// New prepares an exporter: it resolves the node name (from Docker unless
// configured) and the advertise addresses (advertise.go). consulCfg is the Consul client's configuration (normally
// api.DefaultConfig(), which reads CONSUL_HTTP_ADDR and friends); the Consul
// address only matters for a dry run, which writes nothing.
func New(ctx context.Context, cfg Config, docker *client.Client, consulCfg *api.Config, log *slog.Logger) (*Exporter, error) {
	consul, err := api.NewClient(consulCfg)
	if err != nil {
		return nil, fmt.Errorf("consul client: %w", err)
	}
	e := &Exporter{cfg: cfg, docker: docker, libpod: newLibpodClient(docker), consul: consul, log: log, metrics: NewMetrics(),
		dirty: map[string]time.Time{}, wake: make(chan struct{}, 1),
		desired: map[string]*record.Container{}, skipped: map[string]string{}, unbound: map[string][]SkippedBinding{}, labels: labelNotes{}, pending: map[string]time.Time{},
		engineInfo: newEngineInfo()}
	e.health = newHealthCache(e.checkHealth)
	e.reach = newEngineReach(e.metrics.EngineReachable)
	node := cfg.Node
	if node == "" {
		ictx, cancel := context.WithTimeout(ctx, dockerTimeout)
		info, err := docker.Info(ictx, client.InfoOptions{})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("docker info (for the node name; or set --node): %w", err)
		}
		node = info.Info.Name
	}
	if e.host = record.Label(node); e.host == "" {
		return nil, fmt.Errorf("node name %q sanitizes to nothing; set --node", node)
	} else if e.host != node {
		log.Info("node name sanitized", "node", node, "host", e.host)
	}
	if cfg.AllowLoopback {
		log.Warn("--allow-loopback: loopback advertise addresses may be published, which only this machine can dial")
	}
	addrs, err := advertiseAddrs(cfg, consulCfg.Address)
	if err != nil {
		return nil, err
	}
	e.mapper = Mapper{Explicit: cfg.Explicit, Addrs: addrs, AllowLoopback: cfg.AllowLoopback, Compat: cfg.Compat}
	popts := []PublisherOption{WithKVLayout(cfg.KVLayout)}
	if cfg.AllowLoopback {
		popts = append(popts, WithAllowLoopback())
	}
	if e.pub, err = NewPublisher(consul, cfg.Prefix, e.host, popts...); err != nil {
		return nil, err
	}
	e.sess = NewSession(consul, cfg.Prefix, e.host, cfg.SessionTTL, log)
	if len(e.mapper.Addrs) > 0 {
		e.sess.NodeAddress = e.mapper.Addrs[0].String()
	}
	return e, nil
}

// Host is the sanitized host name the exporter publishes under.
func (e *Exporter) Host() string { return e.host }

// Addrs are the host's advertise addresses.
func (e *Exporter) Addrs() []netip.Addr { return e.mapper.Addrs }

// Metrics are the exporter's metrics.
func (e *Exporter) Metrics() *Metrics { return e.metrics }

// Engine names, the values of berth_exporter_engine_info's engine label.
const (
	EngineDocker = "docker"
	EnginePodman = "podman"
)

// Engine is the container engine serving the Docker API the exporter talks
// to. Nothing in the records depends on it; only how events are read does.
type Engine struct {
	Name    string // EngineDocker or EnginePodman; "" before the first detection
	Version string
}

// engineOf tells the engine from its /version answer: Podman names itself
// in a component ("Podman Engine"), Docker Engine's main component is
// "Engine" (Platform.Name "Docker Engine - ...", empty in some builds).
// Anything else speaking the API is taken for Docker.
func engineOf(v client.ServerVersionResult) Engine {
	for _, c := range v.Components {
		if strings.Contains(strings.ToLower(c.Name), "podman") {
			return Engine{Name: EnginePodman, Version: c.Version}
		}
	}
	if strings.Contains(strings.ToLower(v.Platform.Name), "podman") {
		return Engine{Name: EnginePodman, Version: v.Version}
	}
	return Engine{Name: EngineDocker, Version: v.Version}
}

// detectEngine asks the engine who it is, logs it when it is new (at start,
// or when another engine answers on the same socket after a reconnect) and
// sets berth_exporter_engine_info. A failure keeps the last known engine:
// the event subscription that follows reports the outage itself.
func (e *Exporter) detectEngine(ctx context.Context) Engine {
	vctx, cancel := context.WithTimeout(ctx, dockerTimeout)
	v, err := e.docker.ServerVersion(vctx, client.ServerVersionOptions{})
	cancel()
	err = e.reach.observe(err)
	e.engineMu.Lock()
	defer e.engineMu.Unlock()
	if err != nil {
		return e.engine
	}
	eng := engineOf(v)
	if eng != e.engine {
		e.log.Info("container engine", "engine", eng.Name, "version", eng.Version, "api_version", v.APIVersion)
		e.engine = eng
		e.engineInfo.Reset()
		e.engineInfo.WithLabelValues(eng.Name, eng.Version).Set(1)
	}
	return eng
}

// Engine is the engine last detected; its Name is "" until the first
// answer.
func (e *Exporter) Engine() Engine {
	e.engineMu.Lock()
	defer e.engineMu.Unlock()
	return e.engine
}

func newEngineInfo() *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: metricsNamespace, Subsystem: metricsSubsystem,
		Name: "engine_info", Help: "Always 1: the container engine behind the Docker API (docker, podman) and its version."},
		[]string{"engine", "version"})
}

// EngineInfo is berth_exporter_engine_info{engine,version}, 1 for the
// engine last detected (no series before the first detection). Like
// BuildInfo, it is registered by the binary beside Metrics.
func (e *Exporter) EngineInfo() prometheus.Collector { return e.engineInfo }

// Run publishes until ctx ends. It then leaves the records to expire with
// the session, or removes them with DeregisterOnExit.
func (e *Exporter) Run(ctx context.Context) error {
	e.log.Info("exporter starting", "host", e.host, "addrs", e.mapper.Addrs, "prefix", e.cfg.Prefix,
		"explicit", e.cfg.Explicit, "session_ttl", e.cfg.SessionTTL, "kv_layout", e.cfg.KVLayout)
	var wg sync.WaitGroup
	wg.Go(func() { e.watchEvents(ctx) })
	wg.Go(func() { e.reach.probe(ctx, e.pingDocker) })
	wg.Go(func() {
		e.sess.RunRenewals(ctx, func() { e.markAll() }, func(error) { e.metrics.ConsulErrors.Inc() })
	})
	wg.Go(func() { every(ctx, e.cfg.Resync, e.markAll) })
	e.work(ctx)
	wg.Wait()
	if e.cfg.DeregisterOnExit {
		return e.Deregister(context.Background())
	}
	e.log.Info("exporter stopped; records stay until the session expires", "session", e.sess.Current())
	return nil
}

// every runs f every d until ctx ends.
func every(ctx context.Context, d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

// Deregister removes the host's records and ends its session.
func (e *Exporter) Deregister(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, consulTimeout)
	defer cancel()
	err := e.pub.Deregister(ctx)
	if serr := e.sess.Destroy(ctx); serr != nil {
		err = errors.Join(err, serr)
	}
	if err == nil {
		e.log.Info("deregistered: this host's records are removed")
	}
	return err
}

// Once reconciles everything once and returns.
func (e *Exporter) Once(ctx context.Context) error {
	e.markAll()
	return e.step(ctx)
}

// workBackoff spaces the worker's retries: a Consul that comes back is
// used again within 5 s, while a long outage costs one attempt per 2.5 to
// 5 s. An engine that comes back is used at once (engineReach).
var workBackoff = backoff.Policy{Min: 250 * time.Millisecond, Max: 5 * time.Second}

// work is the single worker: it reconciles whenever woken, and retries with
// backoff after a failure, keeping the desired state meanwhile; after the
// engine's silence, also as soon as the engine answers again.
func (e *Exporter) work(ctx context.Context) {
	bo := backoff.Backoff{Policy: workBackoff}
	var retry <-chan time.Time
	var back <-chan struct{} // the engine's recovery, when it was the engine that failed
	for {
		// While a retry is pending, events only queue work: waking up for
		// each would hammer a Consul that is down and inflate the backoff.
		wake := e.wake
		if retry != nil {
			wake = nil
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-retry:
		case <-back:
		}
		retry, back = nil, nil
		if err := e.step(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			d := bo.Next()
			e.log.Warn("reconcile failed; retrying", "err", err, "in", d.Round(time.Millisecond))
			retry, back = time.After(d), recovery(err)
		} else {
			bo.Reset()
		}
	}
}
