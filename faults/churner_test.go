package faults

import "testing"

// TestChurnerPlanSlowEngine is the slow-engine case that made scenario 1
// panic: starts still in flight and no churned container running yet. The
// plan must start another container, never pick a victim from nothing; once
// one runs, it may be stopped.
func TestChurnerPlanSlowEngine(t *testing.T) {
	keep := &ctr{Name: "churn-keep", Running: true}
	w := &world{containers: map[string]*ctr{keep.ID: keep}}
	c := newChurner(w, "churn-", nil, keep)
	for i := range 8 {
		if v := c.plan(i); v != nil {
			t.Fatalf("change %d: planned to stop %s with nothing churned running", i, v.Name)
		}
	}
	if c.starting != 8 {
		t.Fatalf("starts in flight: %d, want 8", c.starting)
	}
	up := &ctr{ID: "1", Name: "churn-1001", Running: true}
	w.containers[up.ID] = up
	var stopped *ctr
	for i := 1; stopped == nil && i < 20; i += 2 { // odd changes may stop
		stopped = c.plan(i)
	}
	if stopped != up || up.Running {
		t.Fatalf("with one churned container running, the plan stopped %v", stopped)
	}
}
