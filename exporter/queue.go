package exporter

import (
	"time"
)

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
