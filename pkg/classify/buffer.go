package classify

import (
	"math/bits"
	"sync"
)

// Flow-head buffers come in size classes of minBufSize<<k bytes, each
// class with a pool of its own. A flow's buffer starts at the smallest
// class that holds what it has stored and doubles as more arrives, up to
// its limit (issue 13: a fixed buffer of twice the limit, 32 KiB, for
// every flow that had sent one byte made 65,536 such flows take 1.5 GB).
// A byte is copied once per class its buffer passes, so growth copies
// less than the buffer's final size in all; once the pools are warm no
// class allocates.
//
// A buffer at the top of a limit that is not a class size (10000 bytes)
// is exactly the limit long and goes to the pool of the class above it;
// taking it there serves any request up to its length.
const (
	minBufSize    = 512
	minBufShift   = 9 // minBufSize == 1 << minBufShift
	numBufClasses = 16
	// maxPooledBuf is the largest class, 16 MiB (maxMaxBytes), so every
	// buffer a flow head may need is pooled; a larger one would be served
	// and then dropped.
	maxPooledBuf = minBufSize << (numBufClasses - 1)
)

// bufPools[k] holds *[]byte of capacity in (minBufSize<<(k-1),
// minBufSize<<k]; bufPools[0] those up to minBufSize. A pooled buffer
// holds no data any flow still reads: it is put back only on release or
// after its bytes moved to a larger one.
var bufPools [numBufClasses]sync.Pool

// bufClass returns the class of a buffer of n bytes: the smallest k with
// minBufSize<<k >= n. It is numBufClasses or more for n > maxPooledBuf.
func bufClass(n int) int {
	if n <= minBufSize {
		return 0
	}
	return bits.Len(uint(n-1)) - minBufShift
}

// flowBuf is a pooled buffer that grows by size class. Its zero value
// holds nothing.
type flowBuf struct {
	p *[]byte // nil until the first grow; returned to its pool by release
}

// grow makes the buffer at least n bytes long and returns all of it. It
// takes the class that holds n, but no more than limit bytes unless n is
// more than that; the first keep bytes are carried over when the buffer moves, and
// every slice of the old buffer is then stale (it went back to a pool).
// grow does not allocate once the pool of the class has buffers.
func (b *flowBuf) grow(n, keep, limit int) []byte {
	if b.p != nil && cap(*b.p) >= n {
		return (*b.p)[:cap(*b.p)]
	}
	size := max(n, min(minBufSize<<min(bufClass(n), numBufClasses-1), limit))
	var p *[]byte
	if k := bufClass(size); k < numBufClasses {
		p, _ = bufPools[k].Get().(*[]byte)
	}
	if p == nil || cap(*p) < n || cap(*p) > size {
		// An empty pool, or a buffer this request cannot take: shorter
		// than n or longer than the limit. The latter two happen only
		// where flows of different limits share a class (a limit that is
		// no class size, or a QUIC packet's scratch), and such a buffer is
		// left to the collector: a flow never holds more than its limit.
		s := make([]byte, size)
		p = &s
	}
	if b.p != nil {
		copy((*p)[:cap(*p)], (*b.p)[:keep])
		b.release()
	}
	b.p = p
	return (*p)[:cap(*p)]
}

// bytes returns the whole buffer (nil before the first grow).
func (b *flowBuf) bytes() []byte {
	if b.p == nil {
		return nil
	}
	return (*b.p)[:cap(*b.p)]
}

// capacity is the length of the buffer held, 0 for none.
func (b *flowBuf) capacity() int {
	if b.p == nil {
		return 0
	}
	return cap(*b.p)
}

// release returns the buffer to its class's pool.
func (b *flowBuf) release() {
	if b.p == nil {
		return
	}
	if k := bufClass(cap(*b.p)); k < numBufClasses {
		bufPools[k].Put(b.p)
	}
	b.p = nil
}
