package exporter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/berthdns/berth/record"
)

// ErrSessionLost means Consul no longer knows the session (it expired or was
// destroyed, and with it every key it held).
var ErrSessionLost = errors.New("consul session lost")

// Session is the Consul session that holds every key of one host. It is
// created with behavior=delete, so that the records of a host whose exporter
// dies disappear within one to two TTLs; with a lock-delay of 1 ms, since
// the default 15 s would block re-acquiring the keys after an invalidation;
// and without health checks, since the serfHealth check of the agent the
// exporter talks to says nothing about this host when that agent is remote.
//
// A restarted exporter adopts the still-valid session of its predecessor
// (found as the holder of the host document in either KV layout, else by
// name), so that the keys never lose their holder and DNS has no gap.
//
// The session lives on the Consul node named after the host (registered in
// the catalog if no agent of that name exists), whichever agent the exporter
// talks to: so the ACL rule `session "<host>"` confines an exporter to its
// own sessions, and no exporter can destroy another's, which with
// behavior=delete would delete the other's records.
type Session struct {
	client *api.Client
	prefix string
	host   string
	name   string
	ttl    time.Duration
	log    *slog.Logger

	// NodeAddress is the address given to the host's catalog node when the
	// exporter has to register it; it anchors sessions and is never dialled.
	NodeAddress string

	mu sync.Mutex
	id string
}

// SessionName is the name of host's session.
func SessionName(host string) string { return "berth-exporter:" + host }

// NewSession returns host's session manager; nothing is created until ID.
func NewSession(client *api.Client, prefix, host string, ttl time.Duration, log *slog.Logger) *Session {
	return &Session{client: client, prefix: prefix, host: host, name: SessionName(host), ttl: ttl, log: log,
		NodeAddress: "127.0.0.1"}
}

// ID returns the session's ID, adopting a predecessor's or creating one if
// there is none yet.
func (s *Session) ID(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.id != "" {
		return s.id, nil
	}
	if id := s.findAdoptable(ctx); id != "" {
		s.id = id
		s.log.Info("adopted the session of a previous exporter", "session", id)
		return id, nil
	}
	if err := s.ensureNode(ctx); err != nil {
		return "", err
	}
	id, _, err := s.client.Session().CreateNoChecks(&api.SessionEntry{
		Node:      s.host,
		Name:      s.name,
		Behavior:  api.SessionBehaviorDelete,
		TTL:       s.ttl.String(),
		LockDelay: time.Millisecond,
	}, (&api.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return "", fmt.Errorf("create session: %w", err)
	}
	s.id = id
	s.log.Info("created session", "session", id, "ttl", s.ttl)
	return id, nil
}

// ensureNode makes sure the catalog has a node named after the host for the
// session to live on: a Consul agent of that name, or one registered here.
func (s *Session) ensureNode(ctx context.Context) error {
	n, _, err := s.client.Catalog().Node(s.host, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("look up catalog node %s: %w", s.host, err)
	}
	if n != nil && n.Node != nil {
		return nil
	}
	_, err = s.client.Catalog().Register(&api.CatalogRegistration{
		Node: s.host, Address: s.NodeAddress, SkipNodeUpdate: true,
		NodeMeta: map[string]string{"berth": "exporter session anchor"},
	}, (&api.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("register catalog node %s for the session: %w", s.host, err)
	}
	return nil
}

// findAdoptable returns a valid session of this host's name, renewed just
// now, or "". The holders of the host document come first, in layout 1 and
// in layout 2 (a predecessor may have written either, record.WriteMode);
// the sessions of the host's node with the right name are the fallback.
func (s *Session) findAdoptable(ctx context.Context) string {
	var candidates []string
	q := (&api.QueryOptions{}).WithContext(ctx)
	if pair, _, err := s.client.KV().Get(record.HostKey(s.prefix, s.host), q); err == nil && pair != nil && pair.Session != "" {
		candidates = append(candidates, pair.Session)
	}
	if pairs, _, err := s.client.KV().List(record.HostRevPrefix(s.prefix, s.host), q); err == nil {
		for _, pair := range pairs {
			if pair.Session != "" && !slices.Contains(candidates, pair.Session) {
				candidates = append(candidates, pair.Session)
			}
		}
	}
	if list, _, err := s.client.Session().Node(s.host, q); err == nil {
		for _, e := range list {
			if e.Name == s.name && e.Behavior == api.SessionBehaviorDelete {
				candidates = append(candidates, e.ID)
			}
		}
	}
	for _, id := range candidates {
		e, _, err := s.client.Session().Info(id, q)
		if err != nil || e == nil || e.Name != s.name || e.Behavior != api.SessionBehaviorDelete {
			continue
		}
		// Renew at once: the predecessor may have died just before its
		// own renewal was due.
		if e, _, err := s.client.Session().Renew(id, (&api.WriteOptions{}).WithContext(ctx)); err == nil && e != nil {
			return id
		}
	}
	return ""
}

// Current is the session's ID, or "" if there is none at the moment.
func (s *Session) Current() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.id
}

// Renew renews the session once. It returns ErrSessionLost (and forgets the
// session, so that the next ID creates a new one) when Consul no longer
// knows it.
func (s *Session) Renew(ctx context.Context) error {
	id := s.Current()
	if id == "" {
		return nil
	}
	e, _, err := s.client.Session().Renew(id, (&api.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("renew session: %w", err)
	}
	if e == nil {
		s.forget(id)
		return ErrSessionLost
	}
	return nil
}

// Verify checks that the session still exists, as Renew does, for use after
// a transaction was rolled back (perhaps because the session was gone).
func (s *Session) Verify(ctx context.Context) error {
	id := s.Current()
	if id == "" {
		return nil
	}
	e, _, err := s.client.Session().Info(id, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("session info: %w", err)
	}
	if e == nil {
		s.forget(id)
		return ErrSessionLost
	}
	return nil
}

func (s *Session) forget(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.id == id {
		s.id = ""
		s.log.Warn("session lost; its keys are gone and will be written again under a new one", "session", id)
	}
}

// Destroy ends the session; Consul deletes every key it held.
func (s *Session) Destroy(ctx context.Context) error {
	id := s.Current()
	if id == "" {
		return nil
	}
	if _, err := s.client.Session().Destroy(id, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("destroy session: %w", err)
	}
	s.forget(id)
	return nil
}

// RunRenewals renews the session every TTL/2 (every second while renewals
// fail) until ctx ends, calling lost when it was lost.
func (s *Session) RunRenewals(ctx context.Context, lost func(), errs func(error)) {
	wait := s.ttl / 2
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		rctx, cancel := context.WithTimeout(ctx, wait)
		err := s.Renew(rctx)
		cancel()
		switch {
		case err == nil:
			wait = s.ttl / 2
		case errors.Is(err, ErrSessionLost):
			wait = s.ttl / 2
			lost()
		default:
			if ctx.Err() == nil {
				s.log.Warn("session renewal failed", "err", err)
				errs(err)
			}
			wait = time.Second
		}
	}
}
