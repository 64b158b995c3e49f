package exporter

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"

	"github.com/berthdns/berth/internal/backoff"
)

// eventActions are the Docker events that can change a container's document.
// health_status matches "health_status: healthy" and the like: the engine
// matches that one by prefix.
var eventActions = []string{"start", "die", "stop", "kill", "destroy", "pause", "unpause",
	"health_status", "rename", "connect", "disconnect"}

// podmanActions are Podman's names for the same changes where they differ
// from Docker's: "died" where Docker says "die", "remove" for "destroy".
var podmanActions = []string{"died", "remove"}

// wantedActions are the actions handleEvent acts on, whichever engine sent
// them.
var wantedActions = func() map[string]bool {
	m := map[string]bool{}
	for _, a := range append(slices.Clone(eventActions), podmanActions...) {
		m[a] = true
	}
	return m
}()

// podmanPoll is how often the exporter lists the containers of a Podman
// engine to catch the changes whose events never came (see watchEvents).
const podmanPoll = 2 * time.Second

// watchEvents subscribes to Docker's events and marks the containers they
// name dirty. After every (re)subscription it queues a full listing: the
// subscription comes first, so no change can fall between the listing and
// the events. A broken stream is reopened with jittered exponential backoff.
//
// Before each subscription it detects the engine. Podman's event filter
// does not match Docker's action names ("die" misses Podman's "died"
// before Podman 4.4, and an unknown name matches nothing), so a Podman
// engine gets a filter by type only and handleEvent picks the actions.
// Podman also loses events (start and stop, under load), so while the
// engine is Podman a cheap listing every podmanPoll marks dirty the
// containers whose state, health or ports changed unseen.
func (e *Exporter) watchEvents(ctx context.Context) {
	bo := backoff.Backoff{Policy: backoff.Policy{Min: 250 * time.Millisecond, Max: 10 * time.Second}}
	for ctx.Err() == nil {
		eng := e.detectEngine(ctx)
		f := make(client.Filters).Add("type", string(events.ContainerEventType), string(events.NetworkEventType))
		if eng.Name != EnginePodman {
			f.Add("event", eventActions...)
		}
		sctx, cancel := context.WithCancel(ctx)
		// Events returns once the engine answered the subscription (or
		// failed to); from then on nothing is missed, and the listing may
		// start.
		res := e.docker.Events(sctx, client.EventsListOptions{Filters: f})
		since := time.Now()
		e.markAll()
		var poll <-chan time.Time
		var poller *lister
		var ticker *time.Ticker
		if eng.Name == EnginePodman {
			ticker = time.NewTicker(podmanPoll)
			poll, poller = ticker.C, &lister{}
		}
		var err error
	stream:
		for {
			select {
			case msg := <-res.Messages:
				e.handleEvent(msg)
			case err = <-res.Err:
				break stream
			case <-poll:
				if perr := poller.poll(sctx, e); perr != nil {
					e.log.Debug("podman listing failed", "err", perr)
				}
			}
		}
		cancel()
		if ticker != nil {
			ticker.Stop()
		}
		if ctx.Err() != nil {
			return
		}
		if time.Since(since) > time.Minute {
			bo.Reset() // the stream had been healthy
		}
		e.metrics.DockerErrors.Inc()
		d := bo.Next()
		e.log.Warn("docker event stream broken; reconnecting", "err", err, "in", d.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
}

func (e *Exporter) handleEvent(msg events.Message) {
	action := string(msg.Action)
	if i := strings.IndexByte(action, ':'); i >= 0 {
		action = action[:i]
	}
	if !wantedActions[action] {
		return // a Podman stream is filtered by type only
	}
	id := msg.Actor.ID
	if msg.Type == events.NetworkEventType {
		// Docker names the network in Actor.ID and the container in an
		// attribute; Podman names the container in Actor.ID and has no
		// such attribute.
		if c, ok := msg.Actor.Attributes["container"]; ok {
			id = c
		}
	}
	if id == "" {
		return
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

// lister remembers the last listing of a Podman engine, one fingerprint per
// running container, to tell which changed since.
type lister struct {
	last map[string]string // id -> fingerprint; nil before the first listing
}

// poll lists the running containers and marks dirty each one that
// appeared, disappeared or changed state, health or ports since the last
// listing. The first listing marks them all, as a subscription does.
func (l *lister) poll(ctx context.Context, e *Exporter) error {
	lctx, cancel := context.WithTimeout(ctx, dockerTimeout)
	defer cancel()
	opts := client.ContainerListOptions{}
	if e.cfg.OnlyLabel != "" {
		opts.Filters = make(client.Filters).Add("label", e.cfg.OnlyLabel)
	}
	list, err := e.docker.ContainerList(lctx, opts)
	if err != nil {
		return err
	}
	now := make(map[string]string, len(list.Items))
	for _, c := range list.Items {
		now[c.ID] = fingerprint(c)
	}
	for id, fp := range now {
		if old, ok := l.last[id]; !ok || old != fp {
			e.markDirty(id, time.Time{})
		}
	}
	for id := range l.last {
		if _, ok := now[id]; !ok {
			e.markDirty(id, time.Time{})
		}
	}
	l.last = now
	return nil
}

// fingerprint is what of a listed container its document depends on and a
// listing shows: state, health (inside Status, "Up 3 minutes (healthy)"; the
// uptime itself is left out), name and ports. Labels cannot change while a
// container lives.
func fingerprint(c container.Summary) string {
	health := ""
	if i := strings.LastIndexByte(c.Status, '('); i >= 0 {
		health = c.Status[i:]
	}
	if c.Health != nil {
		health = string(c.Health.Status)
	}
	ports := make([]string, 0, len(c.Ports))
	for _, p := range c.Ports {
		ports = append(ports, fmt.Sprintf("%s:%d->%d/%s", p.IP, p.PublicPort, p.PrivatePort, p.Type))
	}
	slices.Sort(ports)
	return fmt.Sprintf("%s %s %s %v", c.State, health, strings.Join(c.Names, ","), ports)
}
