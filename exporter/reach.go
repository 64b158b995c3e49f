package exporter

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/moby/moby/client"
	"github.com/prometheus/client_golang/prometheus"
)

// reachProbe is how often the exporter pings an engine that did not answer
// its last request, so that it learns the engine is back within about this
// long whatever the length of the outage, even when nothing else asks the
// engine anything meanwhile. A ping is one GET /_ping; while the engine
// answers, none is sent.
const reachProbe = time.Second

// engineReach is the one owner of "does the engine answer". Every request
// to the engine reports its outcome to it (observe). A request the engine
// answers after one it did not is a recovery: it closes the channel that
// every loop waiting for the engine selects on, so the event stream
// resubscribes and the worker retries at once rather than when their
// backoffs run out.
type engineReach struct {
	reachable prometheus.Gauge

	mu   sync.Mutex
	down bool
	back chan struct{} // while down: closed at the recovery
}

func newEngineReach(reachable prometheus.Gauge) *engineReach {
	reachable.Set(1)
	return &engineReach{reachable: reachable}
}

// unreachableError is a request the engine did not answer: no connection,
// a broken one, or no answer in time. back is closed at the engine's next
// recovery.
type unreachableError struct {
	err  error
	back chan struct{}
}

func (u *unreachableError) Error() string { return u.err.Error() }
func (u *unreachableError) Unwrap() error { return u.err }

// observe records the outcome of one request to the engine and returns
// err, wrapped in an unreachableError when the engine did not answer. An
// error status (a 404 for a container just removed) is an answer: the
// engine is up. A context canceled by the exporter itself says nothing
// about the engine.
func (r *engineReach) observe(err error) error {
	switch {
	case errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded):
		return err
	case !unanswered(err):
		r.answered()
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.down {
		r.down, r.back = true, make(chan struct{})
		r.reachable.Set(0)
	}
	return &unreachableError{err: err, back: r.back}
}

func (r *engineReach) answered() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down {
		r.down = false
		close(r.back)
		r.reachable.Set(1)
	}
}

func (r *engineReach) isDown() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.down
}

// unanswered reports whether err means the engine did not answer, rather
// than answered with an error.
func unanswered(err error) bool {
	if err == nil {
		return false
	}
	var ne net.Error
	return client.IsErrConnectionFailed(err) || errors.Is(err, context.DeadlineExceeded) ||
		errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// recovery is, for a loop whose attempt failed with err, the channel
// closed when the engine answers again (already closed if it has since);
// nil, which blocks forever in a select, when err is not the engine's
// silence (a Consul error, an error answer), and the loop waits out its
// backoff alone.
func recovery(err error) <-chan struct{} {
	var u *unreachableError
	if errors.As(err, &u) {
		return u.back
	}
	return nil
}

// probe pings the engine once every reachProbe while it is down, until ctx
// ends. ping reports its own outcome through observe.
func (r *engineReach) probe(ctx context.Context, ping func(context.Context) error) {
	every(ctx, reachProbe, func() {
		if r.isDown() {
			pctx, cancel := context.WithTimeout(ctx, healthTimeout)
			_ = ping(pctx)
			cancel()
		}
	})
}
