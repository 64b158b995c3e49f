package backoff

import (
	"testing"
	"time"
)

// TestPolicyDelay proves the exponential steps, the cap, and that every
// delay lies in the jittered half [d/2, d] of its step, for the plugin's
// policy (250 ms to 8 s) and the exporter's worker (250 ms to 5 s, a cap
// that is not a power-of-two step).
func TestPolicyDelay(t *testing.T) {
	ms := time.Millisecond // not a wait: a policy under test
	tests := []struct {
		p        Policy
		failures int
		ceiling  time.Duration
	}{
		{Policy{250 * ms, 8 * time.Second}, 1, 250 * ms},              // not a wait: a policy under test
		{Policy{250 * ms, 8 * time.Second}, 2, 500 * ms},              // not a wait: a policy under test
		{Policy{250 * ms, 8 * time.Second}, 5, 4 * time.Second},       // not a wait: a policy under test
		{Policy{250 * ms, 8 * time.Second}, 6, 8 * time.Second},       // not a wait: a policy under test
		{Policy{250 * ms, 8 * time.Second}, 7, 8 * time.Second},       // not a wait: a policy under test
		{Policy{250 * ms, 8 * time.Second}, 1 << 40, 8 * time.Second}, // not a wait: a policy under test
		{Policy{250 * ms, 5 * time.Second}, 5, 4 * time.Second},       // not a wait: a policy under test
		{Policy{250 * ms, 5 * time.Second}, 6, 5 * time.Second},       // not a wait: a policy under test
		{Policy{250 * ms, 8 * time.Second}, 0, 250 * ms},              // not a wait: a policy under test; below 1 counts as 1
		{Policy{250 * ms, 8 * time.Second}, -3, 250 * ms},             // not a wait: a policy under test; below 1 counts as 1
		{Policy{time.Second, 100 * ms}, 4, time.Second},               // not a wait: a policy under test; Max below Min is Min
		{Policy{0, time.Second}, 3, 0},                                // not a wait: a policy under test; no Min, no wait
	}
	for _, tc := range tests {
		if got := tc.p.Ceiling(tc.failures); got != tc.ceiling {
			t.Errorf("%+v.Ceiling(%d) = %s, want %s", tc.p, tc.failures, got, tc.ceiling)
		}
		for range 200 {
			d := tc.p.Delay(tc.failures)
			if d < tc.ceiling/2 || d > tc.ceiling {
				t.Fatalf("%+v.Delay(%d) = %s, outside [%s, %s]", tc.p, tc.failures, d, tc.ceiling/2, tc.ceiling)
			}
		}
	}
}

// TestPolicyJitter proves the delay is random: 100 draws of a 4 s step are
// not all the same nanosecond (the chance they are is nil).
func TestPolicyJitter(t *testing.T) {
	p := Policy{Min: 4 * time.Second, Max: 4 * time.Second} // not a wait: a policy under test
	seen := map[time.Duration]bool{}
	for range 100 {
		seen[p.Delay(1)] = true
	}
	if len(seen) < 2 {
		t.Errorf("100 delays, %d distinct values: no jitter", len(seen))
	}
}

// TestBackoff proves Next counts failures up the steps and Reset starts
// again from Min.
func TestBackoff(t *testing.T) {
	b := Backoff{Policy: Policy{Min: 100 * time.Millisecond, Max: time.Second}} // not a wait: a policy under test
	for i, ceiling := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		ceiling *= time.Millisecond // not a wait: a policy under test
		if d := b.Next(); d < ceiling/2 || d > ceiling {
			t.Errorf("Next #%d = %s, outside [%s, %s]", i+1, d, ceiling/2, ceiling)
		}
	}
	if b.Failures() != 6 {
		t.Errorf("Failures = %d after 6 Next, want 6", b.Failures())
	}
	b.Reset()
	if d := b.Next(); d > 100*time.Millisecond || b.Failures() != 1 { // not a wait: a policy under test
		t.Errorf("after Reset: Next = %s, Failures = %d; want at most 100ms and 1", d, b.Failures())
	}
}
