package exporter

import (
	"context"
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

// watchEvents subscribes to Docker's events and marks the containers they
// name dirty. After every (re)subscription it queues a full listing: the
// subscription comes first, so no change can fall between the listing and
// the events. A broken stream is reopened with jittered exponential backoff.
func (e *Exporter) watchEvents(ctx context.Context) {
	f := make(client.Filters).Add("type", string(events.ContainerEventType), string(events.NetworkEventType)).
		Add("event", eventActions...)
	bo := backoff.Backoff{Policy: backoff.Policy{Min: 250 * time.Millisecond, Max: 10 * time.Second}}
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
