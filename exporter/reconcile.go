package exporter

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

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
		if err = e.reach.observe(err); err != nil {
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
		err = e.reach.observe(err)
		if gone(err) {
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
		mapped, err := e.mapper.MapResult(c)
		doc := mapped.Doc
		e.noteUnbound(id, strings.TrimPrefix(c.Name, "/"), mapped.Bindings)
		e.labels.note(id, strings.TrimPrefix(c.Name, "/"), mapped.Labels, e.log, e.metrics.LabelsSkipped)
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
	delete(e.unbound, id)
	delete(e.labels, id)
}

// noteUnbound logs and counts each binding of a container left out for its
// host IP's address class once, when it first appears, not every reconcile.
func (e *Exporter) noteUnbound(id, name string, bindings []SkippedBinding) {
	for _, b := range bindings {
		if slices.Contains(e.unbound[id], b) {
			continue
		}
		e.metrics.BindingsSkipped.WithLabelValues(b.Reason).Inc()
		e.log.Info("port binding not published", "id", shortID(id), "name", name, "binding", b.String(), "reason", b.Reason)
	}
	if len(bindings) == 0 {
		delete(e.unbound, id)
	} else {
		e.unbound[id] = bindings
	}
}

func (e *Exporter) updateGauges() {
	e.metrics.ContainersSeen.Set(float64(len(e.desired) + len(e.skipped)))
	e.metrics.ContainersPublished.Set(float64(len(e.desired)))
	counts := map[string]int{}
	for _, r := range e.skipped {
		counts[r]++
	}
	for _, r := range skipReasons {
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

// gone reports whether an inspect failed because the container no longer
// exists. Podman answers a container removed while it was being inspected
// with a 500 "does not exist in database: no such container" rather than
// a 404; either way there is nothing left to publish.
func gone(err error) bool {
	return errdefs.IsNotFound(err) || err != nil && strings.Contains(err.Error(), "no such container")
}
