package exporter

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"

	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"
)

// libpodEventsPath is Podman's own event stream (its libpod API), served on
// the same socket as its Docker-compatible API. Podman 4.3's compatible
// /events loses start events; this one does not. Its lines are Docker's
// event message with Podman's action names ("died", "remove") plus a
// HealthStatus field, so handleEvent reads them as it reads Docker's.
const libpodEventsPath = "/v4.0.0/libpod/events"

// libpodClient speaks Podman's libpod API over the connection the moby
// client dials, whatever DOCKER_HOST names (a unix socket, TCP, TLS).
type libpodClient struct {
	http *http.Client
}

func newLibpodClient(docker *client.Client) *libpodClient {
	dial := docker.Dialer()
	return &libpodClient{http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
		// Each request is one long stream, ended by canceling it.
		DisableKeepAlives: true,
	}}}
}

// events subscribes to the libpod stream, filtered by the event types, and
// returns once Podman answered the subscription (or failed to), as moby's
// Events does: Podman sends the response header as it subscribes, before
// any event.
func (l *libpodClient) events(ctx context.Context, types []string) client.EventsResult {
	msgs := make(chan events.Message)
	errs := make(chan error, 1)
	res := client.EventsResult{Messages: msgs, Err: errs}
	filters, err := json.Marshal(map[string][]string{"type": types})
	if err != nil {
		errs <- err
		return res
	}
	u := url.URL{Scheme: "http", Host: "podman", Path: libpodEventsPath,
		RawQuery: url.Values{"stream": {"true"}, "filters": {string(filters)}}.Encode()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		errs <- err
		return res
	}
	resp, err := l.http.Do(req)
	if err != nil {
		errs <- err
		return res
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		errs <- fmt.Errorf("libpod events: %s: %s", resp.Status, body)
		return res
	}
	go func() {
		defer resp.Body.Close()
		dec := json.NewDecoder(resp.Body)
		for {
			var m events.Message
			if err := dec.Decode(&m); err != nil {
				errs <- err
				return
			}
			select {
			case msgs <- m:
			case <-ctx.Done():
				errs <- ctx.Err()
				return
			}
		}
	}()
	return res
}
