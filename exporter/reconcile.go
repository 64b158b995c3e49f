package exporter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/containerd/errdefs"
	"github.com/hashicorp/consul/api"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"

	"github.com/berthdns/berth/record"
)

// eventActions are the Docker events that can change a container's document.
// health_status matches "health_status: healthy" and the like: the engine
// matches that one by prefix.
var eventActions = []string{"start", "die", "stop", "kill", "destroy", "pause", "unpause",
	"health_status", "rename", "connect", "disconnect"}

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

	mu    sync.Mutex
	dirty map[string]time.Time // id -> time of the earliest unapplied event (zero: none)
	full  bool                 // a full listing is due
	wake  chan struct{}

	// Worker-only state.
	desired map[string]*record.Container
	skipped map[string]string    // id -> reason last logged, so each is logged once
	pending map[string]time.Time // id -> event time, until a publish reflects it
}

// New prepares an exporter: it resolves the node name (from Docker unless
// configured) and the advertise addresses (from the route to Consul unless
// configured). consulCfg is the Consul client's configuration (normally
// api.DefaultConfig(), which reads CONSUL_HTTP_ADDR and friends); the Consul
// address only matters for a dry run, which writes nothing.
func New(ctx context.Context, cfg Config, docker *client.Client, consulCfg *api.Config, log *slog.Logger) (*Exporter, error) {
	consul, err := api.NewClient(consulCfg)
	if err != nil {
		return nil, fmt.Errorf("consul client: %w", err)
	}
	e := &Exporter{cfg: cfg, docker: docker, consul: consul, log: log, metrics: NewMetrics(),
		dirty: map[string]time.Time{}, wake: make(chan struct{}, 1),
		desired: map[string]*record.Container{}, skipped: map[string]string{}, pending: map[string]time.Time{}}
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
	e.mapper = Mapper{Explicit: cfg.Explicit, Addrs: cfg.AdvertiseAddrs}
	if len(e.mapper.Addrs) == 0 {
		addrs, err := DetectAdvertiseAddrs(consulCfg.Address)
		if err != nil {
			return nil, fmt.Errorf("advertise address (or set --advertise-addr): %w", err)
		}
		e.mapper.Addrs = addrs
	}
	if e.pub, err = NewPublisher(consul, cfg.Prefix, e.host); err != nil {
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

// Run publishes until ctx ends. It then leaves the records to expire with
// the session, or removes them with DeregisterOnExit.
func (e *Exporter) Run(ctx context.Context) error {
	e.log.Info("exporter starting", "host", e.host, "addrs", e.mapper.Addrs, "prefix", e.cfg.Prefix,
		"explicit", e.cfg.Explicit, "session_ttl", e.cfg.SessionTTL)
	var wg sync.WaitGroup
	wg.Go(func() { e.watchEvents(ctx) })
	wg.Go(func() {
		e.sess.RunRenewals(ctx, func() { e.markAll() }, func(error) { e.metrics.ConsulErrors.Inc() })
	})
	wg.Go(func() {
		t := time.NewTicker(e.cfg.Resync)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				e.markAll()
			}
		}
	})
	e.work(ctx)
	wg.Wait()
	if e.cfg.DeregisterOnExit {
		return e.Deregister(context.Background())
	}
	e.log.Info("exporter stopped; records stay until the session expires", "session", e.sess.Current())
	return nil
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

// work is the single worker: it reconciles whenever woken, and retries with
// backoff after a failure, keeping the desired state meanwhile.
func (e *Exporter) work(ctx context.Context) {
	bo := backoff{max: 5 * time.Second}
	var retry <-chan time.Time
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
		}
		retry = nil
		if err := e.step(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			d := bo.next()
			e.log.Warn("reconcile failed; retrying", "err", err, "in", d.Round(time.Millisecond))
			retry = time.After(d)
		} else {
			bo.reset()
		}
	}
}

// markDirty queues a container for re-inspection; at is its event's time.
func (e *Exporter) markDirty(id string, at time.Time) {
	e.mu.Lock()
	if old, ok := e.dirty[id]; !ok || old.IsZero() || (!at.IsZero() && at.Before(old)) {
		e.dirty[id] = at
	}
	e.mu.Unlock()
	e.poke()
}

// markAll queues a full listing.
func (e *Exporter) markAll() {
	e.mu.Lock()
	e.full = true
	e.mu.Unlock()
	e.poke()
}

func (e *Exporter) poke() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// take hands the queued work to the worker; giveBack returns it after a
// Docker failure.
func (e *Exporter) take() (full bool, dirty map[string]time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	full, dirty = e.full, e.dirty
	e.full, e.dirty = false, map[string]time.Time{}
	return full, dirty
}

func (e *Exporter) giveBack(full bool, dirty map[string]time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.full = e.full || full
	for id, at := range dirty {
		if old, ok := e.dirty[id]; !ok || old.IsZero() || (!at.IsZero() && at.Before(old)) {
			e.dirty[id] = at
		}
	}
}

// step is one reconcile: refresh the desired state from Docker for what is
// queued, then make KV equal to it.
func (e *Exporter) step(ctx context.Context) error {
	start := time.Now()
	full, dirty := e.take()
	kind := "partial"
	if full {
		kind = "full"
	}
	err := e.refresh(ctx, full, dirty)
	if err != nil {
		e.metrics.DockerErrors.Inc()
		e.giveBack(full, dirty)
	} else {
		err = e.publish(ctx)
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	e.metrics.Reconciles.WithLabelValues(kind, result).Inc()
	e.metrics.ReconcileDuration.Observe(time.Since(start).Seconds())
	return err
}

// refresh updates the desired state: from a full listing, or by inspecting
// the dirty containers.
func (e *Exporter) refresh(ctx context.Context, full bool, dirty map[string]time.Time) error {
	for id, at := range dirty {
		if old, ok := e.pending[id]; !at.IsZero() && (!ok || at.Before(old)) {
			e.pending[id] = at
		}
	}
	ids := make(map[string]bool, len(dirty))
	for id := range dirty {
		ids[id] = true
	}
	if full {
		lctx, cancel := context.WithTimeout(ctx, dockerTimeout)
		opts := client.ContainerListOptions{}
		if e.cfg.OnlyLabel != "" {
			opts.Filters = make(client.Filters).Add("label", e.cfg.OnlyLabel)
		}
		list, err := e.docker.ContainerList(lctx, opts)
		cancel()
		if err != nil {
			return fmt.Errorf("list containers: %w", err)
		}
		running := make(map[string]bool, len(list.Items))
		for _, c := range list.Items {
			running[c.ID] = true
			ids[c.ID] = true
		}
		for id := range e.desired {
			if !running[id] {
				ids[id] = true
			}
		}
		for id := range e.skipped {
			if !running[id] {
				ids[id] = true
			}
		}
	}
	for id := range ids {
		ictx, cancel := context.WithTimeout(ctx, dockerTimeout)
		res, err := e.docker.ContainerInspect(ictx, id, client.ContainerInspectOptions{})
		cancel()
		if errdefs.IsNotFound(err) {
			e.forget(id)
			continue
		}
		if err != nil {
			return fmt.Errorf("inspect %s: %w", shortID(id), err)
		}
		c := &res.Container
		if e.cfg.OnlyLabel != "" && !hasLabel(c.Config, e.cfg.OnlyLabel) {
			e.forget(id)
			continue
		}
		doc, err := e.mapper.Map(c)
		var skip *SkipError
		switch {
		case errors.As(err, &skip):
			delete(e.desired, id)
			if e.skipped[id] != skip.Reason {
				e.log.Info("container not published", "id", shortID(id), "name", strings.TrimPrefix(c.Name, "/"),
					"reason", skip.Reason, "detail", skip.Detail)
			}
			e.skipped[id] = skip.Reason
		case doc == nil:
			e.forget(id)
		default:
			e.desired[id] = doc
			delete(e.skipped, id)
		}
	}
	e.updateGauges()
	return nil
}

func (e *Exporter) forget(id string) {
	delete(e.desired, id)
	delete(e.skipped, id)
}

func (e *Exporter) updateGauges() {
	e.metrics.ContainersSeen.Set(float64(len(e.desired) + len(e.skipped)))
	e.metrics.ContainersPublished.Set(float64(len(e.desired)))
	counts := map[string]int{}
	for _, r := range e.skipped {
		counts[r]++
	}
	for _, r := range []string{ReasonDisabled, ReasonNotOptedIn, ReasonNoPort, ReasonNoAddress, ReasonBadLabel,
		ReasonEmptyName, ReasonTooLong, ReasonReserved, ReasonInvalid} {
		e.metrics.ContainersSkipped.WithLabelValues(r).Set(float64(counts[r]))
	}
}

// publish makes KV equal to the desired state.
func (e *Exporter) publish(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, consulTimeout)
	defer cancel()
	sid, err := e.sess.ID(ctx)
	if err != nil {
		e.metrics.ConsulErrors.Inc()
		return err
	}
	st, err := e.pub.Publish(ctx, sid, e.mapper.Addrs, e.desired)
	e.metrics.KVWrites.WithLabelValues("set").Add(float64(st.Sets))
	e.metrics.KVWrites.WithLabelValues("delete").Add(float64(st.Deletes))
	e.metrics.KVTxns.Add(float64(st.Txns))
	if err != nil {
		e.metrics.ConsulErrors.Inc()
		var txnErr *TxnError
		if errors.As(err, &txnErr) {
			// Perhaps the session is gone; if so the next attempt gets a new one.
			_ = e.sess.Verify(ctx)
		}
		return err
	}
	if st.Txns > 0 {
		e.log.Debug("published", "sets", st.Sets, "deletes", st.Deletes, "txns", st.Txns)
	}
	now := time.Now()
	for id, at := range e.pending {
		e.metrics.EventLatency.Observe(now.Sub(at).Seconds())
		delete(e.pending, id)
	}
	return nil
}

// watchEvents subscribes to Docker's events and marks the containers they
// name dirty. After every (re)subscription it queues a full listing: the
// subscription comes first, so no change can fall between the listing and
// the events. A broken stream is reopened with jittered exponential backoff.
func (e *Exporter) watchEvents(ctx context.Context) {
	f := make(client.Filters).Add("type", string(events.ContainerEventType), string(events.NetworkEventType)).
		Add("event", eventActions...)
	bo := backoff{max: 10 * time.Second}
	for ctx.Err() == nil {
		sctx, cancel := context.WithCancel(ctx)
		// Events returns once the engine answered the subscription (or
		// failed to); from then on nothing is missed, and the listing may
		// start.
		res := e.docker.Events(sctx, client.EventsListOptions{Filters: f})
		since := time.Now()
		e.markAll()
		var err error
	stream:
		for {
			select {
			case msg := <-res.Messages:
				e.handleEvent(msg)
			case err = <-res.Err:
				break stream
			}
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		if time.Since(since) > time.Minute {
			bo.reset() // the stream had been healthy
		}
		e.metrics.DockerErrors.Inc()
		d := bo.next()
		e.log.Warn("docker event stream broken; reconnecting", "err", err, "in", d.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
}

func (e *Exporter) handleEvent(msg events.Message) {
	id := msg.Actor.ID
	if msg.Type == events.NetworkEventType {
		id = msg.Actor.Attributes["container"]
	}
	if id == "" {
		return
	}
	action := string(msg.Action)
	if i := strings.IndexByte(action, ':'); i >= 0 {
		action = action[:i]
	}
	e.metrics.Events.WithLabelValues(action).Inc()
	var at time.Time
	if msg.TimeNano != 0 {
		at = time.Unix(0, msg.TimeNano)
	} else if msg.Time != 0 {
		at = time.Unix(msg.Time, 0)
	}
	e.markDirty(id, at)
}

// DryRun lists and maps every running container, and prints the documents
// it would write (and the containers it would skip) as a table.
func (e *Exporter) DryRun(ctx context.Context, w io.Writer) error {
	e.markAll()
	full, dirty := e.take()
	if err := e.refresh(ctx, full, dirty); err != nil {
		return err
	}
	fmt.Fprintf(w, "host %s  addrs %v  key %s\n\n", e.host, e.mapper.Addrs, record.HostKey(e.cfg.Prefix, e.host))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tSERVICE\tHEALTH\tPAUSED\tPRIO/WEIGHT\tPORT\tPORT NAME\tADDRESS")
	for _, id := range sortedKeys(e.desired) {
		d := e.desired[id]
		for _, p := range d.Ports {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%d/%d\t%d/%s\t%s\t%s\n", d.ShortID(), d.Name, d.Service, d.Health,
				d.Paused, d.Priority, d.Weight, p.Port, p.Proto, p.Name, netip.AddrPortFrom(p.Addr, uint16(p.HostPort)))
		}
	}
	for _, id := range sortedKeys(e.skipped) {
		fmt.Fprintf(tw, "%s\t(skipped: %s)\t\t\t\t\t\t\t\n", shortID(id), e.skipped[id])
	}
	return tw.Flush()
}

func (e *Exporter) pingDocker(ctx context.Context) error {
	_, err := e.docker.Ping(ctx, client.PingOptions{})
	return err
}

func (e *Exporter) pingConsul(ctx context.Context) error {
	leader, err := e.consul.Status().LeaderWithQueryOptions((&api.QueryOptions{}).WithContext(ctx))
	if err == nil && leader == "" {
		err = errors.New("no leader")
	}
	return err
}

// hasLabel matches Docker's label filter syntax: "key" or "key=value".
func hasLabel(cfg *container.Config, sel string) bool {
	if cfg == nil {
		return false
	}
	k, v, withValue := strings.Cut(sel, "=")
	got, ok := cfg.Labels[k]
	return ok && (!withValue || got == v)
}

func shortID(id string) string { return id[:min(12, len(id))] }

// backoff is exponential with jitter, from 250 ms to max: a peer that comes
// back is used again within max, while a long outage costs one request per
// max/2 to max.
type backoff struct {
	n   int
	max time.Duration
}

func (b *backoff) next() time.Duration {
	d := min(250*time.Millisecond<<min(b.n, 10), b.max)
	b.n++
	return d/2 + rand.N(d/2+1)
}

func (b *backoff) reset() { b.n = 0 }
