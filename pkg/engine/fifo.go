package engine

import "time"

// fifo is a queue of flows in time order. Every undecided flow gets the
// same timeout and every decided flow the same linger, so the order of
// arrival is the order of expiry and no heap is needed. Entries are not
// removed when a flow is decided early or reused; they are skipped when
// popped (gen no longer matches, or the state moved on).
type fifo struct {
	buf  []fifoEntry
	head int
}

type fifoEntry struct {
	f   *flow
	gen uint32
	at  time.Time // when the entry expires
}

func (q *fifo) push(f *flow, at time.Time) {
	if q.head > 0 && q.head >= len(q.buf)/2 {
		// Reuse the consumed front instead of growing.
		n := copy(q.buf, q.buf[q.head:])
		clear(q.buf[n:])
		q.buf = q.buf[:n]
		q.head = 0
	}
	q.buf = append(q.buf, fifoEntry{f: f, gen: f.gen, at: at})
}

// popExpired removes and returns the front entry if it expires at or
// before now.
func (q *fifo) popExpired(now time.Time) (fifoEntry, bool) {
	if q.head == len(q.buf) || q.buf[q.head].at.After(now) {
		return fifoEntry{}, false
	}
	e := q.buf[q.head]
	q.buf[q.head] = fifoEntry{}
	q.head++
	return e, true
}

// popFront removes and returns the front entry whatever its time.
func (q *fifo) popFront() (fifoEntry, bool) {
	if q.head == len(q.buf) {
		return fifoEntry{}, false
	}
	e := q.buf[q.head]
	q.buf[q.head] = fifoEntry{}
	q.head++
	return e, true
}
