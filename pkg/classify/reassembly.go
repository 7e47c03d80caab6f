package classify

import (
	"bytes"
	"fmt"
)

// maxSpans bounds the disjoint byte ranges one flow head may hold, i.e.
// the holes an out-of-order sender can leave open at once. A ClientHello
// crosses the wire in 1 to about 12 TCP segments or CRYPTO frames (Chromium
// shuffles its QUIC hello into several), and reordering on a path leaves a
// few holes at most; 32 is far above that and keeps the span list a small
// fixed array that a linear scan handles.
const maxSpans = 32

// span is a range [start, end) of stream offsets held.
type span struct{ start, end int }

func (s span) len() int { return s.end - s.start }

// reassembler holds the bytes of a flow head (a TCP stream from ISN+1, a
// QUIC CRYPTO stream from offset 0) that arrived in any order, and the
// ranges it holds.
//
// The bytes are packed: the spans' bytes lie in the buffer one after the
// other, in stream order, without the holes between them. So the buffer
// grows with the bytes received, not with the furthest offset: a sender
// that puts one byte near the limit costs one byte, not the limit. The
// first span, when it starts at offset 0, is the contiguous prefix the
// parsers read, and it is always at the start of the buffer. Filling a
// hole moves the bytes after it (at most limit bytes, a few microseconds,
// and at most maxSpans times per flow for new holes).
//
// It does not allocate once the buffer pools are warm.
type reassembler struct {
	buf   flowBuf
	limit int            // no byte at or past this offset is held
	held  int            // bytes held: buf[:held], the spans' bytes in order
	spans [maxSpans]span // sorted by start, disjoint, not adjacent
	n     int
}

// reset empties r for a new stream of at most limit bytes and returns its
// buffer to the pool.
func (r *reassembler) reset(limit int) {
	r.release()
	r.limit = limit
}

// release returns the buffer and forgets what it held.
func (r *reassembler) release() {
	r.buf.release()
	r.held, r.n = 0, 0
}

// add puts p at stream offset off.
//
// Bytes already held must be sent again identically: RFC 9293 §3.10.7.4
// lets a TCP receiver keep either copy of a retransmitted byte, and a QUIC
// server keeps one copy of repeated CRYPTO data (RFC 9000 §19.6), so data
// that overlaps held bytes with different contents could make the server
// read another hello than the one classified here. It is refused as
// ErrMalformed (no sender retransmits different bytes for the same
// offsets). Data ending past the limit, or opening more than maxSpans
// disjoint ranges, is ErrLimit. On error nothing is stored.
func (r *reassembler) add(off int, p []byte) error {
	end := off + len(p)
	if end > r.limit {
		return fmt.Errorf("%w: bytes up to offset %d, past the limit of %d", ErrLimit, end, r.limit)
	}
	if len(p) == 0 {
		return nil
	}
	// Spans i..j-1 touch [off, end) (overlap or adjacency) and merge with
	// it; at is where span i's bytes start in the buffer, have how many
	// bytes spans i..j-1 hold.
	i, at := 0, 0
	for i < r.n && r.spans[i].end < off {
		at += r.spans[i].len()
		i++
	}
	buf := r.buf.bytes()
	j, have := i, 0
	for ; j < r.n && r.spans[j].start <= end; j++ {
		s := r.spans[j]
		lo, hi := max(off, s.start), min(end, s.end)
		if b := at + have - s.start; lo < hi && !bytes.Equal(buf[b+lo:b+hi], p[lo-off:hi-off]) {
			return fmt.Errorf("%w: bytes %d-%d differ from bytes already received", ErrMalformed, lo, hi-1)
		}
		have += s.len()
	}
	merged := span{off, end}
	if i < j {
		merged.start = min(merged.start, r.spans[i].start)
		merged.end = max(merged.end, r.spans[j-1].end)
	} else if r.n == maxSpans {
		return fmt.Errorf("%w: bytes in more than %d separate ranges", ErrLimit, maxSpans)
	}
	// The bytes held are distinct offsets under the limit, so the buffer
	// never needs more than limit bytes.
	grown := merged.len() - have
	buf = r.buf.grow(r.held+grown, r.held, r.limit)
	// Make room: the spans after the merged one move right by what is
	// new, then spans i..j-1 (last first, each moves right) to their
	// places in the merged span, then p over all of it (where it overlaps
	// them, its bytes are theirs).
	tail := at + have
	copy(buf[tail+grown:], buf[tail:r.held])
	for k := j - 1; k >= i; k-- {
		s := r.spans[k]
		tail -= s.len()
		copy(buf[at+s.start-merged.start:], buf[tail:tail+s.len()])
	}
	copy(buf[at+off-merged.start:], p)
	r.held += grown
	// Replace spans[i:j] by merged.
	rest := r.n - j
	copy(r.spans[i+1:], r.spans[j:r.n])
	r.spans[i] = merged
	r.n = i + 1 + rest
	return nil
}

// contiguous returns how many bytes from offset 0 on are held.
func (r *reassembler) contiguous() int {
	if r.n == 0 || r.spans[0].start != 0 {
		return 0
	}
	return r.spans[0].end
}

// prefix returns the bytes held from offset 0 on without a hole. It is
// valid until the next add, reset or release.
func (r *reassembler) prefix() []byte {
	return r.buf.bytes()[:r.contiguous()]
}

// capacity is the length of the buffer r holds.
func (r *reassembler) capacity() int { return r.buf.capacity() }
