package classify

import (
	"fmt"
	"sync"
)

// DefaultMaxBytes is the flow-head limit Reset uses when given none
// (design.md: hello.max_bytes).
const DefaultMaxBytes = 16384

// maxMaxBytes caps the limit so offsets stay far from int32 wrap.
const maxMaxBytes = 1 << 24

// Protocol of a flow head, as its first byte says.
const (
	kindUnknown = iota
	kindTLS
	kindHTTP
)

// firstByteKind says what a flow head's first byte can start: 0x16 (TLS
// handshake record, RFC 8446 §5.1) or the first letter of an accepted HTTP
// method (see methods).
func firstByteKind(c byte) int {
	switch c {
	case contentHandshake:
		return kindTLS
	case 'C', 'D', 'G', 'H', 'O', 'P', 'T':
		return kindHTTP
	}
	return kindUnknown
}

// bufPool holds flow-head buffers. A buffer is 2*maxBytes: the stream as
// received, then the TLS handshake bytes without record headers.
var bufPool sync.Pool // of *[]byte

func getBuf(n int) *[]byte {
	if p, _ := bufPool.Get().(*[]byte); p != nil && cap(*p) >= n {
		*p = (*p)[:n]
		return p
	}
	b := make([]byte, n)
	return &b
}

// errNoFlow is what Feed answers on a TCPFlow that was never Reset or was
// Released: its state is gone, so nothing can be decided from it.
var errNoFlow = fmt.Errorf("%w: Feed on a flow without state (no Reset, or after Release)", ErrLimit)

// TCPFlow reads the name from the head of one TCP flow: the client-to-server
// segments of a TLS ClientHello or an HTTP/1.x request head, in any order
// and any split.
//
// The zero value is not usable: call Reset first. A TCPFlow is reused
// across flows (Reset again) without allocating. It is not safe for
// concurrent use; the engine feeds one flow from one goroutine at a time.
//
// Memory per flow is the struct (about 1.3 KB) and, from the first payload
// byte on, one pooled buffer of 2*maxBytes.
type TCPFlow struct {
	isn      uint32
	maxBytes int
	live     bool
	res      Result
	buf      *[]byte
	asm      reassembler
	have     int // contiguous bytes classified so far
	kind     int
	rec      recordReader
	http     httpReader
	hello    ClientHello
}

// Reset starts a new flow whose SYN carried sequence number isn: the first
// data byte is isn+1 (RFC 9293 §3.4), and so is data carried in the SYN
// itself (TCP Fast Open, RFC 7413). The head may take up to maxBytes bytes
// from isn+1 on; maxBytes <= 0 means DefaultMaxBytes, and it is capped at
// 16 MiB. Reset releases the buffer of the previous flow.
func (f *TCPFlow) Reset(isn uint32, maxBytes int) {
	f.Release()
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	*f = TCPFlow{isn: isn, maxBytes: min(maxBytes, maxMaxBytes), live: true}
}

// Release returns the flow's buffer to the pool. Call it when the flow is
// decided or dropped. A decided flow keeps its Result (Feed goes on
// returning it); an undecided one answers Feed with Denied (ErrLimit) until
// the next Reset. Release on a released or zero TCPFlow does nothing.
func (f *TCPFlow) Release() {
	if f.buf != nil {
		bufPool.Put(f.buf)
		f.buf = nil
	}
	f.live = false
	// Slices into the buffer go with it.
	f.rec.msg = nil
	f.http = httpReader{}
	f.hello.alpn = nil
	f.asm.buf = nil
}

// Feed takes one client-to-server segment: its sequence number, whether it
// is the SYN (then seq must be the flow's isn), and its payload, which may
// be empty. It returns NeedMore until the head is decided, and from then on
// the same final Result (Done or Denied) on every call.
//
// Feed allocates only when it decides the flow (Result.Name, or the error
// of a Denied), and takes the pooled buffer at the first payload byte it
// stores; a flow decided before that (on its first byte) never takes one.
func (f *TCPFlow) Feed(seq uint32, syn bool, payload []byte) Result {
	if f.res.Status != NeedMore {
		return f.res
	}
	if !f.live {
		return Result{Status: Denied, Err: errNoFlow}
	}
	var off uint32
	if syn {
		if seq != f.isn {
			// A SYN of another ISN is another connection attempt; the
			// engine keys flows by 5-tuple, so this one is refused.
			return f.deny(fmt.Errorf("%w: SYN with sequence number %d, the flow's ISN is %d", ErrMalformed, seq, f.isn))
		}
	} else {
		off = seq - (f.isn + 1) // modulo 2^32: a wrapped sequence number works
	}
	if len(payload) == 0 {
		// The SYN, the handshake's ACK, a FIN. A FIN before the head is
		// complete leaves it NeedMore: the engine's hello timeout denies it
		// as incomplete, which is what a server does with a cut hello too.
		return f.res
	}
	if int32(off) < 0 {
		// RFC 9293 §3.4: data starts at ISN+1. Payload before it, outside
		// the SYN, is no byte of this connection's stream; a receiver
		// would trim it as an old duplicate, but no sender produces it in
		// a new connection, so it is refused rather than guessed at.
		return f.deny(fmt.Errorf("%w: payload at sequence number %d, before the first data byte %d", ErrMalformed, seq, f.isn+1))
	}
	if int(off) >= f.maxBytes {
		// Wholly past the limit: not stored. If the head cannot be decided
		// within maxBytes, the contiguous prefix reaches the limit and the
		// flow is denied there; bytes past it may belong to a pipelined
		// request or early data after a head that fits.
		return f.res
	}
	p := payload[:min(len(payload), f.maxBytes-int(off))]
	if f.buf == nil {
		if off == 0 && firstByteKind(p[0]) == kindUnknown {
			return f.deny(fmt.Errorf("%w: first byte 0x%02x", ErrNotTLS, p[0]))
		}
		f.buf = getBuf(2 * f.maxBytes)
		f.asm.buf = (*f.buf)[:f.maxBytes]
		f.rec.msg = (*f.buf)[f.maxBytes : f.maxBytes : 2*f.maxBytes]
	}
	if err := f.asm.add(int(off), p); err != nil {
		return f.deny(err)
	}
	n := f.asm.contiguous()
	if n == f.have {
		return f.res
	}
	f.have = n
	switch err := f.classify(f.asm.buf[:n]); {
	case err == nil:
		return f.res
	case err != ErrTruncated:
		return f.deny(err)
	case n == f.maxBytes:
		return f.deny(fmt.Errorf("%w: no decision within the first %d bytes", ErrLimit, f.maxBytes))
	}
	return f.res
}

// classify reads the contiguous head. It sets f.res and returns nil when
// the flow is decided by a name (or none), else ErrTruncated or the reason
// to deny.
func (f *TCPFlow) classify(head []byte) error {
	if f.kind == kindUnknown {
		f.kind = firstByteKind(head[0])
		if f.kind == kindUnknown {
			return fmt.Errorf("%w: first byte 0x%02x", ErrNotTLS, head[0])
		}
	}
	if f.kind == kindHTTP {
		if err := f.http.feed(head); err != nil {
			return err
		}
		f.done(f.http.head.Name(), SourceHost, false)
		return nil
	}
	recErr := f.rec.feed(head, f.maxBytes)
	if recErr != nil && recErr != ErrTruncated {
		return recErr
	}
	// Parse what is in, whole or not: a bad prefix is refused early.
	h, err := ParseClientHello(f.rec.msg)
	if err != nil {
		return err
	}
	if recErr != nil { // cannot happen: a whole hello ends its records
		return recErr
	}
	f.hello = h
	f.done(f.hello.ServerName(), SourceSNI, h.ECH)
	return nil
}

func (f *TCPFlow) done(name []byte, from Source, ech bool) {
	f.res = Result{Status: Done, ECH: ech}
	if len(name) > 0 {
		f.res.Name, f.res.From = string(name), from
	}
}

func (f *TCPFlow) deny(err error) Result {
	f.res = Result{Status: Denied, Err: err}
	return f.res
}

// ClientHello returns the hello of a flow decided as TLS, or false. It is
// valid until Reset or Release (its ALPN points into the flow's buffer).
func (f *TCPFlow) ClientHello() (*ClientHello, bool) {
	if f.res.Status != Done || f.kind != kindTLS || f.buf == nil {
		return nil, false
	}
	return &f.hello, true
}

// RequestHead returns the request head of a flow decided as HTTP, or
// false. It is valid until Reset or Release (it points into the buffer).
func (f *TCPFlow) RequestHead() (*RequestHead, bool) {
	if f.res.Status != Done || f.kind != kindHTTP || f.buf == nil {
		return nil, false
	}
	return &f.http.head, true
}
