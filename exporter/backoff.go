package exporter

import (
	"math/rand/v2"
	"time"
)

// backoff is exponential with jitter, from 250 ms to max: a peer that comes
// back is used again within max, while a long outage costs one request per
// max/2 to max.
type backoff struct {
	n   int
	max time.Duration
}

func (b *backoff) next() time.Duration {
	d := min(250*time.Millisecond<<min(b.n, 10), b.max)
	b.n++
	return d/2 + rand.N(d/2+1)
}

func (b *backoff) reset() { b.n = 0 }
