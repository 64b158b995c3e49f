package exporter

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/moby/moby/client"
)

// /healthz reuses one ping of Docker and one of Consul for healthTTL, so
// that probes, however many and however often, cost each of them at most
// one request per healthTTL; each ping may take healthTimeout.
const (
	healthTTL     = 5 * time.Second
	healthTimeout = 2 * time.Second
)

// healthCache holds the last health result. Its lock is held during a check,
// so requests that arrive meanwhile wait for that check instead of starting
// their own.
type healthCache struct {
	check func(context.Context) (msg string, code int)

	mu   sync.Mutex
	ttl  time.Duration
	at   time.Time // when msg and code were checked; zero: never
	msg  string
	code int
}

func newHealthCache(check func(context.Context) (string, int)) *healthCache {
	return &healthCache{check: check, ttl: healthTTL}
}

// get returns the cached result, checking again once it is older than ttl.
// The check does not use the request's context: a client that hangs up must
// not leave a canceled result behind for the others.
func (h *healthCache) get() (string, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.at.IsZero() || time.Since(h.at) >= h.ttl {
		ctx, cancel := context.WithTimeout(context.Background(), healthTimeout)
		h.msg, h.code = h.check(ctx)
		cancel()
		h.at = time.Now()
	}
	return h.msg, h.code
}

// serveHealth answers /healthz: 200 "ok" when both Docker and Consul
// answered the last check, else 503 saying which did not.
func (e *Exporter) serveHealth(w http.ResponseWriter, _ *http.Request) {
	msg, code := e.health.get()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(msg))
}

// checkHealth pings Docker and Consul at once.
func (e *Exporter) checkHealth(ctx context.Context) (string, int) {
	var dockerErr, consulErr error
	var wg sync.WaitGroup
	wg.Go(func() { dockerErr = e.pingDocker(ctx) })
	wg.Go(func() { consulErr = e.pingConsul(ctx) })
	wg.Wait()
	if dockerErr == nil && consulErr == nil {
		return "ok\n", http.StatusOK
	}
	msg := ""
	if dockerErr != nil {
		msg += "docker: " + dockerErr.Error() + "\n"
	}
	if consulErr != nil {
		msg += "consul: " + consulErr.Error() + "\n"
	}
	return msg, http.StatusServiceUnavailable
}

func (e *Exporter) pingDocker(ctx context.Context) error {
	_, err := e.docker.Ping(ctx, client.PingOptions{})
	return e.reach.observe(err)
}

func (e *Exporter) pingConsul(ctx context.Context) error {
	leader, err := e.consul.Status().LeaderWithQueryOptions((&api.QueryOptions{}).WithContext(ctx))
	if err == nil && leader == "" {
		err = errors.New("no leader")
	}
	return err
}
