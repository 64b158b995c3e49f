package backoff

import (
	"math/rand/v2"
	"time"
)

// Policy is an exponential backoff with jitter. The wait after the first
// failure is Min, and doubles with every further failure up to Max; a random
// half of it is jitter, so Delay is uniform in [d/2, d] for that wait d.
// A Max below Min is taken as Min; a Min of zero or less means no wait.
type Policy struct {
	Min, Max time.Duration
}

// Delay is the wait after failures consecutive failures (1 for the first;
// less than 1 counts as 1).
func (p Policy) Delay(failures int) time.Duration {
	d := p.Ceiling(failures)
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d/2+1)
}

// Ceiling is the longest Delay(failures) can be: the wait before jitter.
func (p Policy) Ceiling(failures int) time.Duration {
	if p.Min <= 0 {
		return 0
	}
	limit := max(p.Max, p.Min)
	d := p.Min
	// Doubling stops at the cap, so a long outage cannot overflow the shift.
	for i := 1; i < failures && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// Backoff counts consecutive failures for a Policy: Next after each
// failure, Reset after a success. It is not safe for concurrent use; each
// retry loop keeps its own.
type Backoff struct {
	Policy
	failures int
}

// Next records a failure and returns the wait before the next attempt.
func (b *Backoff) Next() time.Duration {
	b.failures++
	return b.Delay(b.failures)
}

// Reset forgets the failures: the next failure waits about Min again.
func (b *Backoff) Reset() { b.failures = 0 }

// Failures is the number of failures since the last Reset.
func (b *Backoff) Failures() int { return b.failures }
