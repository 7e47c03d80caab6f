package classify

import (
	"bytes"
	"crypto/aes"
	"errors"
	"fmt"
)

// QUICDefaultMaxBytes is the CRYPTO stream limit used when Reset is given
// none (the daemon config's hello.max_bytes default).
const QUICDefaultMaxBytes = 16384

// QUICFlow reads the server name of a QUIC connection (version 1, RFC 9000
// and 9001, or version 2, RFC 9369) from the client's Initial packets, one
// UDP datagram at a time.
//
// A client protects its Initial packets with keys derived from the
// Destination Connection ID it chose (RFC 9001 section 5.2), so anyone on
// the path can remove that protection. QUICFlow does, reassembles the
// CRYPTO stream from the frames of every Initial packet of the flow, in
// any order and across datagrams, and reads the TLS ClientHello in it.
//
// What it refuses, and why:
//   - The first datagram of a flow must start with a v1 or v2 long-header
//     Initial; anything else (another version, a short header, a Version
//     Negotiation packet, a 0-RTT or Handshake packet first) is ErrNotTLS.
//     So is a later datagram that starts with a short header or an unknown
//     version: a client has no 1-RTT keys before the server answers.
//   - A datagram carrying an Initial that is smaller than 1200 bytes is
//     ErrMalformed: a server must discard it (RFC 9000 section 14.1), and
//     egressd must not decide on bytes the server never reads.
//   - A first Destination Connection ID shorter than 8 bytes is
//     ErrMalformed (RFC 9000 section 7.2).
//   - Every later datagram must start with a packet of the same version and
//     Destination Connection ID: until it hears from the server (and the
//     server hears nothing while egressd holds the flow), a client keeps
//     its first DCID (RFC 9000 section 7.2). A datagram that starts with
//     another DCID would open a second connection on the server, so it is
//     ErrMalformed rather than a second name for the same decision.
//   - Packets coalesced after the first one in a datagram (RFC 9000
//     section 12.2): Initials are read; 0-RTT and Handshake packets are
//     skipped by their Length, as they cannot be opened with Initial keys;
//     a packet with another DCID or version, or a short header, ends the
//     datagram, as receivers ignore it.
//   - A packet that does not decrypt, has reserved bits set, is cut short,
//     has no frames or holds a frame other than PADDING, PING, ACK, CRYPTO
//     or CONNECTION_CLOSE is ErrMalformed (RFC 9001 section 5, RFC 9000
//     sections 12.4 and 17.2). So is CRYPTO data that disagrees with data
//     already received at the same offsets, and a CRYPTO stream that does
//     not start with a ClientHello.
//   - ErrLimit: a ClientHello (or CRYPTO data) past the byte limit, CRYPTO
//     data in more than 32 separate ranges at once, or more datagrams than
//     a ClientHello of the limit's size needs, with margin for
//     retransmissions: 8 plus 4 per 1000 bytes of the limit (76 for
//     16384).
//
// The reader assumes what egressd guarantees: the server receives nothing
// of an undecided flow, so it cannot answer, and the client has no reason
// to change its Destination Connection ID or version.
//
// Cost: the first Initial of a flow derives its keys (HKDF, two AES key
// schedules, one GCM instance), which the standard library and x/crypto
// allocate (49 allocations with go1.26, 46 of them in HKDF's HMACs); a
// decided name is one more (the string). Every datagram after that is read
// without allocating: the packet is copied into a pooled scratch buffer
// (taken for the datagram and returned after it), opened in place with the
// flow's AEAD, and its CRYPTO data copied into the flow's pooled stream
// buffer, which grows by size class with the CRYPTO bytes received (512
// bytes, doubling, up to the limit; see Capacity).
//
// A QUICFlow is used by one goroutine at a time. Its zero value is ready
// and behaves as after Reset(0).
type QUICFlow struct {
	limit     int // CRYPTO stream byte limit
	datagrams int // datagrams fed so far
	res       Result
	decided   bool

	version   *quicVersion // nil until the first Initial
	dcid      [quicMaxCID]byte
	dcidLen   int
	keys      quicInitialKeys
	largestPN int64 // -1 before the first packet opens

	pkt    flowBuf // scratch: the packet being decrypted; held only inside Feed
	stream quicCryptoStream
	mask   [aes.BlockSize]byte // header protection mask; here so it does not escape
	nonce  [quicIVLen]byte
}

// quicMaxDatagrams bounds the datagrams a flow may take to finish its
// ClientHello: one per 1000 bytes of the limit (a client datagram carries
// more than that), four times over for retransmissions, plus eight.
func quicMaxDatagrams(limit int) int {
	return 8 + 4*((limit+999)/1000)
}

// Reset makes f ready for a new flow whose ClientHello may take at most
// maxBytes bytes of CRYPTO stream (QUICDefaultMaxBytes if maxBytes <= 0,
// capped at 16 MiB, more than a ClientHello's length field can say). It
// returns the buffers of the previous flow to their pools: a new flow
// holds none until its first CRYPTO data.
func (f *QUICFlow) Reset(maxBytes int) {
	if maxBytes <= 0 {
		maxBytes = QUICDefaultMaxBytes
	}
	maxBytes = min(maxBytes, maxMaxBytes)
	f.pkt.release()
	f.limit = maxBytes
	f.datagrams = 0
	f.res = Result{}
	f.decided = false
	f.version = nil
	f.dcidLen = 0
	f.keys.clear()
	f.largestPN = -1
	f.stream.reset(maxBytes)
}

// Release returns f's pooled buffers and drops its keys. A decided Result
// is kept until the next Reset; an undecided flow starts over, as after
// Reset with the same limit.
func (f *QUICFlow) Release() {
	f.pkt.release()
	f.stream.release()
	if !f.decided {
		f.Reset(f.limit)
	}
	f.keys.clear()
}

// Feed reads one client-to-server UDP payload of the flow. It returns
// NeedMore until the CRYPTO stream holds a whole ClientHello (Done, with
// the name and From == SourceQUIC) or the flow is to be denied (Denied,
// with Err wrapping ErrNotTLS, ErrMalformed or ErrLimit). Once decided,
// Feed returns the same Result again without reading. datagram is not
// modified or retained.
func (f *QUICFlow) Feed(datagram []byte) Result {
	if f.decided {
		return f.res
	}
	if f.limit == 0 {
		f.Reset(0)
	}
	f.datagrams++
	if f.datagrams > quicMaxDatagrams(f.limit) {
		return f.decide(Result{Status: Denied, Err: fmt.Errorf("%d datagrams without a whole ClientHello: %w", f.datagrams-1, ErrLimit)})
	}
	err := f.readDatagram(datagram)
	f.pkt.release() // nothing points into it once the datagram is read
	if err != nil {
		return f.decide(Result{Status: Denied, Err: err})
	}
	msg, err := f.clientHello()
	if err != nil {
		return f.decide(Result{Status: Denied, Err: err})
	}
	if msg == nil {
		return Result{Status: NeedMore}
	}
	return f.decide(quicHelloResult(msg))
}

// BufferedBytes is how many bytes of CRYPTO stream the flow holds: the
// distinct bytes received so far, in order or not, until Reset or Release.
func (f *QUICFlow) BufferedBytes() int { return f.stream.held }

// Capacity is how many bytes of pooled buffer the flow holds between calls
// to Feed: its CRYPTO stream buffer, BufferedBytes rounded up to a size
// class (512 bytes, doubling) and never more than the limit given to
// Reset. With the struct itself (unsafe.Sizeof) it is the flow's memory for
// accounting; it is 0 after Release and before the first CRYPTO data.
// Inside Feed the flow also holds a scratch buffer of the datagram's size,
// returned before Feed returns.
func (f *QUICFlow) Capacity() int { return f.stream.capacity() }

func (f *QUICFlow) decide(r Result) Result {
	f.res = r
	f.decided = true
	return r
}

// readDatagram reads every packet of one datagram.
func (f *QUICFlow) readDatagram(d []byte) error {
	size := len(d)
	if size == 0 {
		return fmt.Errorf("empty datagram: %w", ErrNotTLS)
	}
	for first := true; len(d) > 0; first = false {
		h, v, err := parseQUICLongHeader(d)
		switch {
		case first && err != nil:
			return err
		case err == nil && v == f.version || err == nil && f.version == nil:
		case errors.Is(err, ErrMalformed):
			return err
		case first:
			// A known version other than the flow's.
			return fmt.Errorf("datagram in QUIC version %#x, the flow's is %#x: %w", v.number, f.version.number, ErrMalformed)
		default:
			// A later packet in a short header or in another version:
			// receivers ignore the rest (RFC 9000 section 12.2).
			return nil
		}
		if f.version == nil {
			if h.typ != v.initial {
				return fmt.Errorf("first QUIC packet of the flow is not an Initial: %w", ErrNotTLS)
			}
			if len(h.dcid) < quicMinDCID {
				return fmt.Errorf("first Initial's Destination Connection ID has %d bytes, under %d: %w", len(h.dcid), quicMinDCID, ErrMalformed)
			}
			f.version = v
			f.dcidLen = copy(f.dcid[:], h.dcid)
			f.keys.setup(v, h.dcid)
		} else if !bytes.Equal(h.dcid, f.dcid[:f.dcidLen]) {
			if first {
				return fmt.Errorf("datagram for Destination Connection ID %x, the flow's is %x: %w", h.dcid, f.dcid[:f.dcidLen], ErrMalformed)
			}
			return nil // RFC 9000 section 12.2: ignore the rest
		}
		switch h.typ {
		case v.initial:
			if size < quicMinInitialDatagram {
				return fmt.Errorf("an Initial in a datagram of %d bytes, under %d: %w", size, quicMinInitialDatagram, ErrMalformed)
			}
			payload, err := f.openInitial(d[:h.length], h.pnOffset)
			if err != nil {
				return err
			}
			if err := f.readFrames(payload); err != nil {
				return err
			}
		case v.retry:
			return fmt.Errorf("a Retry packet from a client: %w", ErrMalformed)
		default:
			// 0-RTT or Handshake: skipped by their Length.
		}
		d = d[h.length:]
	}
	return nil
}

// clientHello returns the whole ClientHello message (handshake header
// included) once the CRYPTO stream holds it without a hole, nil before.
func (f *QUICFlow) clientHello() ([]byte, error) {
	const clientHelloType = 0x01 // RFC 8446 section 4
	p := f.stream.prefix()
	if len(p) == 0 {
		return nil, nil
	}
	if p[0] != clientHelloType {
		// RFC 9001 section 4.1.3: the client's Initial CRYPTO stream
		// starts with its ClientHello.
		return nil, fmt.Errorf("CRYPTO stream starts with handshake message type %d, not a ClientHello: %w", p[0], ErrMalformed)
	}
	if len(p) < 4 {
		return nil, nil
	}
	total := 4 + (int(p[1])<<16 | int(p[2])<<8 | int(p[3]))
	if total > f.limit {
		return nil, fmt.Errorf("ClientHello of %d bytes, limit %d: %w", total, f.limit, ErrLimit)
	}
	if len(p) < total {
		// Check the prefix as far as it goes, so that a bad hello is
		// refused at once rather than after its last datagram.
		_, err := ParseClientHello(p)
		switch {
		case errors.Is(err, ErrTruncated):
			return nil, nil
		case err == nil: // cannot be: p is shorter than its header says
			err = ErrMalformed
		}
		return nil, fmt.Errorf("QUIC ClientHello: %w", err)
	}
	return p[:total], nil
}
