package classify

import (
	"bytes"
	"fmt"
	"sync"
)

// quicMaxSpans bounds the number of separate byte ranges the CRYPTO stream
// reassembler keeps while holes remain between them. Real clients send their ClientHello
// in order or in a few shuffled pieces (Chromium's "chaos protection" splits
// it into several CRYPTO frames per packet), which merge into a handful of
// ranges; more than this many ranges at once is an attacker making us
// do bookkeeping, and the flow is denied with ErrLimit.
const quicMaxSpans = 32

// quicMaxStreamOffset is the largest offset plus length a stream may reach
// (RFC 9000 section 19.6: 2^62-1).
const quicMaxStreamOffset = 1<<62 - 1

// quicBufSize is the size of the pooled buffers that hold a flow's packet
// being decrypted and its CRYPTO stream. A ClientHello with a
// post-quantum key share is about 1.8 KB and client datagrams are at most
// the path MTU, so one buffer of each covers nearly every flow; larger
// ones grow (allocating) up to the flow's byte limit.
const quicBufSize = 4096

// quicBufPool holds *[]byte of capacity quicBufSize or more. It holds no
// data between uses: a buffer is only reused after Release or Reset.
var quicBufPool = sync.Pool{New: func() any {
	b := make([]byte, quicBufSize)
	return &b
}}

// quicMaxPooled keeps buffers that grew for an unusual flow out of the pool.
const quicMaxPooled = 64 << 10

// quicBuffer is a pooled byte buffer.
type quicBuffer struct {
	p *[]byte // nil until first use; returned to the pool by release
}

// get returns a slice of length n (contents unspecified), growing the
// buffer if needed. keep bytes of the old contents are carried over.
func (b *quicBuffer) get(n, keep int) []byte {
	if b.p == nil {
		b.p = quicBufPool.Get().(*[]byte)
	}
	if n > cap(*b.p) {
		grown := make([]byte, max(n, 2*cap(*b.p)))
		copy(grown, (*b.p)[:keep])
		quicBufPool.Put(b.p)
		b.p = &grown
	}
	return (*b.p)[:n]
}

func (b *quicBuffer) release() {
	if b.p != nil && cap(*b.p) <= quicMaxPooled {
		quicBufPool.Put(b.p)
	}
	b.p = nil
}

// quicSpan is a received byte range [start, end) of the CRYPTO stream.
type quicSpan struct{ start, end int }

// quicCryptoStream reassembles the client's Initial CRYPTO stream from
// CRYPTO frames that may arrive in any order, overlap and repeat, across
// packets and datagrams (RFC 9000 sections 19.6 and 7.5).
//
// Overlapping data must agree byte for byte: a server keeps one copy (which
// one is up to its implementation), so two different versions of the same
// bytes would let the client show egressd one ClientHello and the server
// another. A disagreement is ErrMalformed.
type quicCryptoStream struct {
	buf   quicBuffer
	limit int        // no byte at or past this offset is accepted
	size  int        // bytes of buf in use: the end of the furthest span
	spans []quicSpan // sorted, disjoint, not adjacent; backed by arr
	arr   [quicMaxSpans]quicSpan
}

func (s *quicCryptoStream) reset(limit int) {
	s.limit = limit
	s.size = 0
	s.spans = s.arr[:0]
}

// add stores data at stream offset off. It returns ErrLimit when the data
// reaches past the byte limit or would leave too many holes, and
// ErrMalformed when it disagrees with bytes already received or passes the
// largest stream offset QUIC allows.
func (s *quicCryptoStream) add(off uint64, data []byte) error {
	end := off + uint64(len(data))
	if end > quicMaxStreamOffset {
		// RFC 9000 section 19.6: FRAME_ENCODING_ERROR or CRYPTO_BUFFER_EXCEEDED.
		return fmt.Errorf("CRYPTO frame ends at offset %d, past 2^62-1: %w", end, ErrMalformed)
	}
	if end > uint64(s.limit) {
		return fmt.Errorf("CRYPTO data up to offset %d, limit %d: %w", end, s.limit, ErrLimit)
	}
	if len(data) == 0 {
		return nil
	}
	start, stop := int(off), int(end)
	if s.spans == nil {
		s.spans = s.arr[:0]
	}

	// Find the spans that overlap or touch [start, stop): they are merged
	// with it. Overlapping bytes must be equal.
	i := 0
	for i < len(s.spans) && s.spans[i].end < start {
		i++
	}
	j := i
	buf := s.buf.get(max(s.size, stop), s.size)
	for ; j < len(s.spans) && s.spans[j].start <= stop; j++ {
		lo, hi := max(start, s.spans[j].start), min(stop, s.spans[j].end)
		if lo < hi && !bytes.Equal(buf[lo:hi], data[lo-start:hi-start]) {
			return fmt.Errorf("CRYPTO data at offsets %d-%d differs from earlier data: %w", lo, hi, ErrMalformed)
		}
	}
	if j == i && len(s.spans) == quicMaxSpans {
		return fmt.Errorf("CRYPTO data in more than %d separate ranges: %w", quicMaxSpans, ErrLimit)
	}
	copy(buf[start:stop], data)
	s.size = max(s.size, stop)

	merged := quicSpan{start, stop}
	if j > i {
		merged.start = min(merged.start, s.spans[i].start)
		merged.end = max(merged.end, s.spans[j-1].end)
	}
	// Replace spans[i:j] by merged.
	if j > i {
		s.spans[i] = merged
		s.spans = append(s.spans[:i+1], s.spans[j:]...)
	} else {
		s.spans = append(s.spans, quicSpan{})
		copy(s.spans[i+1:], s.spans[i:])
		s.spans[i] = merged
	}
	return nil
}

// prefix returns the bytes received without a hole from offset 0. The
// slice is valid until the next add or reset.
func (s *quicCryptoStream) prefix() []byte {
	if len(s.spans) == 0 || s.spans[0].start != 0 {
		return nil
	}
	return (*s.buf.p)[:s.spans[0].end]
}

func (s *quicCryptoStream) release() {
	s.buf.release()
	s.reset(s.limit)
}
