package exporter

import (
	"context"
	"slices"
	"strings"
	"time"

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

// eventsBackoff spaces the resubscriptions of a broken event stream while
// the engine keeps failing them. Its wait also ends when the engine answers
// again (engineReach), so after an outage of any length the stream is back
// within about reachProbe, not when this backoff runs out.
var eventsBackoff = backoff.Policy{Min: 250 * time.Millisecond, Max: 10 * time.Second}

// The causes of a resubscription, as berth_exporter_event_stream_reconnects_total
// counts them: the backoff's wait ran out, or the engine answered first.
const (
	reconnectBackoff        = "backoff"
	reconnectEngineAnswered = "engine_answered"
)

// watchEvents subscribes to the engine's events and marks the containers
// they name dirty. After every (re)subscription it queues a full listing:
// the subscription comes first, so no change can fall between the listing
// and the events. A broken stream is reopened with jittered exponential
// backoff, or at once when the engine answers again after its silence.
//
// Before each subscription it detects the engine: Docker's /events, or on
// Podman its own libpod stream (libpod.go), whose events Podman's
// Docker-compatible /events loses.
func (e *Exporter) watchEvents(ctx context.Context) {
	bo := backoff.Backoff{Policy: eventsBackoff}
	for ctx.Err() == nil {
		eng := e.detectEngine(ctx)
		sctx, cancel := context.WithCancel(ctx)
		// Docker's subscription returns once the engine answered it (or
		// failed to); from then on nothing is missed, and the listing may
		// start. Podman's returns once asked, and lists again when it
		// answers (libpod.go).
		res := e.subscribe(sctx, eng)
		since := time.Now()
		e.markAll()
		err := e.readEvents(res)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if time.Since(since) > time.Minute {
			bo.Reset() // the stream had been healthy
		}
		e.metrics.DockerErrors.Inc()
		err = e.reach.observe(err)
		d := bo.Next()
		e.log.Warn("docker event stream broken; reconnecting", "err", err, "in", d.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
			e.metrics.StreamReconnects.WithLabelValues(reconnectBackoff).Inc()
		case <-recovery(err):
			bo.Reset()
			e.metrics.StreamReconnects.WithLabelValues(reconnectEngineAnswered).Inc()
			e.log.Info("container engine answers again; resubscribing to its events")
		}
	}
}

// subscribe opens the event stream of eng: Docker's /events, filtered by
// type and action, or Podman's libpod stream, filtered by type only:
// Podman's event filter does not know Docker's action names ("die" misses
// Podman's "died" before Podman 4.4, an unknown name matches nothing), so
// handleEvent picks the actions.
func (e *Exporter) subscribe(ctx context.Context, eng Engine) client.EventsResult {
	types := []string{string(events.ContainerEventType), string(events.NetworkEventType)}
	if eng.Name == EnginePodman {
		return e.libpod.events(ctx, types, func() {
			_ = e.reach.observe(nil)
			e.markAll()
		})
	}
	f := make(client.Filters).Add("type", types...).Add("event", eventActions...)
	return e.docker.Events(ctx, client.EventsListOptions{Filters: f})
}

// readEvents handles the stream's events until it breaks, and returns why.
func (e *Exporter) readEvents(res client.EventsResult) error {
	for {
		select {
		case msg := <-res.Messages:
			e.handleEvent(msg)
		case err := <-res.Err:
			return err
		}
	}
}

func (e *Exporter) handleEvent(msg events.Message) {
	action := string(msg.Action)
	if i := strings.IndexByte(action, ':'); i >= 0 {
		action = action[:i]
	}
	if action == "died" {
		// Podman's libpod stream's name: its /events, which the exporter
		// read before, says "die", and the metric keeps that label.
		action = "die"
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
