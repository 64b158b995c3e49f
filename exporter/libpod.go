package exporter

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"sync"

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

// events subscribes to the libpod stream, filtered by the event types. It
// returns once the request is sent (or failed): Podman 4.3 answers the
// subscription only with its first event, on either stream, so waiting for
// the answer could wait for ever on a quiet engine. subscribed runs when
// the answer comes, the subscription then surely in place: a change made
// between the request and Podman's subscription has sent an event, which
// is what brought the answer, and the listing subscribed queues finds it.
func (l *libpodClient) events(ctx context.Context, types []string, subscribed func()) client.EventsResult {
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
	sent := make(chan struct{})
	var once sync.Once
	done := func() { once.Do(func() { close(sent) }) }
	trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { done() }}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodGet, u.String(), nil)
	if err != nil {
		errs <- err
		return res
	}
	go func() {
		resp, err := l.http.Do(req)
		done()
		if err != nil {
			errs <- err
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			errs <- fmt.Errorf("libpod events: %s: %s", resp.Status, body)
			return
		}
		subscribed()
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
	<-sent
	return res
}
