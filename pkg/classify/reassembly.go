package classify

import (
	"bytes"
	"fmt"
)

// maxSpans bounds the disjoint byte ranges one flow head may hold, i.e.
// the holes an out-of-order sender can leave open at once. A ClientHello
// crosses the wire in 1 to about 12 segments, and reordering on a path
// leaves a few holes at most; 32 is far above that and keeps the span list
// a small fixed array that a linear scan handles.
const maxSpans = 32

// span is a range [start, end) of stream offsets held in the buffer.
type span struct{ start, end int }

// reassembler holds the client-to-server bytes of a flow head at their
// stream offsets (offset 0 is the byte at ISN+1) and the ranges it holds.
// It never allocates: buf comes from the caller and spans is a fixed array.
type reassembler struct {
	buf   []byte
	spans [maxSpans]span // sorted by start, disjoint, not adjacent
	n     int
}

// add puts p at stream offset off; off+len(p) must be within buf.
//
// Bytes already held must be sent again identically: RFC 9293 §3.10.7.4
// lets a receiver keep either copy of a retransmitted byte, so a segment
// that overlaps held bytes with different contents could make the server
// read another hello than the one classified here. It is refused as
// ErrMalformed (no TCP sender retransmits different bytes for the same
// sequence numbers). More than maxSpans disjoint ranges is ErrLimit.
func (r *reassembler) add(off int, p []byte) error {
	end := off + len(p)
	for _, s := range r.spans[:r.n] {
		lo, hi := max(off, s.start), min(end, s.end)
		if lo < hi && !bytes.Equal(r.buf[lo:hi], p[lo-off:hi-off]) {
			return fmt.Errorf("%w: segment bytes %d-%d differ from bytes already received", ErrMalformed, lo, hi-1)
		}
	}
	// Spans i..j-1 touch [off, end) (overlap or adjacency) and merge with it.
	i := 0
	for i < r.n && r.spans[i].end < off {
		i++
	}
	j := i
	for j < r.n && r.spans[j].start <= end {
		j++
	}
	merged := span{off, end}
	if i < j {
		merged.start = min(merged.start, r.spans[i].start)
		merged.end = max(merged.end, r.spans[j-1].end)
	} else if r.n == maxSpans {
		return fmt.Errorf("%w: more than %d holes in the flow head", ErrLimit, maxSpans-1)
	}
	copy(r.buf[off:end], p)
	// Replace spans[i:j] by merged.
	tail := r.n - j
	copy(r.spans[i+1:], r.spans[j:r.n])
	r.spans[i] = merged
	r.n = i + 1 + tail
	return nil
}

// contiguous returns how many bytes from offset 0 on are held.
func (r *reassembler) contiguous() int {
	if r.n == 0 || r.spans[0].start != 0 {
		return 0
	}
	return r.spans[0].end
}
