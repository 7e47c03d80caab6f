package classify

import "fmt"

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
// Memory per flow is the struct (about 1.4 KB) and, from the first payload
// byte on, pooled buffers that grow with the bytes the flow has sent (see
// Capacity): the stream as received, and for a ClientHello in more than
// one TLS record its handshake bytes without the record headers.
type TCPFlow struct {
	isn      uint32
	maxBytes int
	live     bool
	res      Result
	asm      reassembler
	asmCap   int // the stream buffer's capacity when the head was last classified
	have     int // contiguous bytes classified so far
	kind     int
	rec      recordReader
	http     httpReader
	hello    ClientHello
}

// ISN is the initial sequence number the flow was Reset with.
func (f *TCPFlow) ISN() uint32 { return f.isn }

// Reset starts a new flow whose SYN carried sequence number isn: the first
// data byte is isn+1 (RFC 9293 §3.4), and so is data carried in the SYN
// itself (TCP Fast Open, RFC 7413). The head may take up to maxBytes bytes
// from isn+1 on; maxBytes <= 0 means DefaultMaxBytes, and it is capped at
// 16 MiB. Reset releases the buffers of the previous flow.
func (f *TCPFlow) Reset(isn uint32, maxBytes int) {
	f.Release()
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	*f = TCPFlow{isn: isn, maxBytes: min(maxBytes, maxMaxBytes), live: true}
	f.asm.limit = f.maxBytes
}

// Release returns the flow's buffers to their pools. Call it when the flow
// is decided or dropped. A decided flow keeps its Result (Feed goes on
// returning it); an undecided one answers Feed with Denied (ErrLimit) until
// the next Reset. Release on a released or zero TCPFlow does nothing.
func (f *TCPFlow) Release() {
	f.asm.release()
	f.rec.release()
	f.live = false
	// Slices into the buffers go with them.
	f.http = httpReader{}
	f.hello.alpn = nil
}

// BufferedBytes is how many bytes of the flow's stream it holds: the
// distinct payload bytes stored so far, in order or not (bytes past the
// limit are not stored), until Reset or Release.
func (f *TCPFlow) BufferedBytes() int { return f.asm.held }

// Capacity is how many bytes of pooled buffer the flow holds: its stream
// buffer (BufferedBytes rounded up to a size class of 512 bytes, doubling,
// and never more than the limit given to Reset) and, only for a ClientHello
// over more than one TLS record, the buffer of its handshake bytes (at
// most as much again). With the struct itself (unsafe.Sizeof) it is the
// flow's memory for accounting; it changes only in Feed, Reset and Release,
// and is 0 after Release.
func (f *TCPFlow) Capacity() int { return f.asm.capacity() + f.rec.buf.capacity() }

// Feed takes one client-to-server segment: its sequence number, whether it
// is the SYN (then seq must be the flow's isn), and its payload, which may
// be empty. It returns NeedMore until the head is decided, and from then on
// the same final Result (Done or Denied) on every call.
//
// Feed allocates only when it decides the flow (Result.Name, or the error
// of a Denied), and takes a pooled buffer at the first payload byte it
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
	if f.asm.held == 0 && off == 0 && firstByteKind(p[0]) == kindUnknown {
		return f.deny(fmt.Errorf("%w: first byte 0x%02x", ErrNotTLS, p[0]))
	}
	if err := f.asm.add(int(off), p); err != nil {
		return f.deny(err)
	}
	if c := f.asm.capacity(); c != f.asmCap {
		// The stream buffer grew into a new one, and the HTTP reader's
		// slices point into the old one: it reads the head again from
		// the start. That is once per size class, so each byte is read
		// fewer than twice on average. (The TLS record reader keeps no
		// slice of the stream from one call to the next.)
		f.asmCap = c
		f.have = 0
		f.http = httpReader{}
	}
	n := f.asm.contiguous()
	if n == f.have {
		return f.res
	}
	f.have = n
	switch err := f.classify(f.asm.prefix()); {
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
	if f.res.Status != Done || f.kind != kindTLS || !f.live {
		return nil, false
	}
	return &f.hello, true
}

// RequestHead returns the request head of a flow decided as HTTP, or
// false. It is valid until Reset or Release (it points into the buffer).
func (f *TCPFlow) RequestHead() (*RequestHead, bool) {
	if f.res.Status != Done || f.kind != kindHTTP || !f.live {
		return nil, false
	}
	return &f.http.head, true
}
