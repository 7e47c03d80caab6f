package ha

import (
	"math/rand/v2"
	"time"
)

// backoff spaces retries of a failing EC2 API: base, then twice as long
// each time up to max, each wait jittered by ±20% so that the two members
// (and the pairs of other zones) do not retry in step.
type backoff struct {
	base, max time.Duration
	next      time.Duration
	rand      func() float64 // in [0,1); rand.Float64 unless a test says
}

func newBackoff(base, max time.Duration) *backoff {
	return &backoff{base: base, max: max, rand: rand.Float64}
}

// Fail returns how long to wait before the next try.
func (b *backoff) Fail() time.Duration {
	if b.next == 0 {
		b.next = b.base
	} else {
		b.next = min(2*b.next, b.max)
	}
	return time.Duration(float64(b.next) * (0.8 + 0.4*b.rand()))
}

// Reset starts again from base after a success.
func (b *backoff) Reset() { b.next = 0 }
