package classify

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
)

// quicMinInitialDatagram is the smallest UDP payload that may carry a
// client Initial packet (RFC 9000 section 14.1).
const quicMinInitialDatagram = 1200

// quicMinDCID is the shortest Destination Connection ID a client may choose
// for its first Initial (RFC 9000 section 7.2); quicMaxCID the longest
// connection ID of versions 1 and 2 (RFC 9000 section 17.2).
const (
	quicMinDCID = 8
	quicMaxCID  = 20
)

// quicLongHeader is the part of a long-header packet read before header
// protection is removed (RFC 9000 section 17.2).
type quicLongHeader struct {
	version  uint32
	typ      byte // the type bits (first byte & 0x30) >> 4, version-specific
	dcid     []byte
	pnOffset int // where the protected packet number starts
	length   int // the whole packet: header, packet number and payload
}

// readQUICVarint reads a variable-length integer (RFC 9000 section 16):
// the two high bits of the first byte give the length, 1, 2, 4 or 8 bytes.
// Values need not use the shortest encoding. It advances s only on success.
func readQUICVarint(s *cryptobyte.String, out *uint64) bool {
	if len(*s) == 0 {
		return false
	}
	n := 1 << ((*s)[0] >> 6)
	if len(*s) < n {
		return false
	}
	v := uint64((*s)[0] & 0x3f)
	for _, c := range (*s)[1:n] {
		v = v<<8 | uint64(c)
	}
	*s = (*s)[n:]
	*out = v
	return true
}

// errQUICNotLong is returned by parseQUICLongHeader for a short-header
// packet (first bit 0).
var errQUICNotLong = fmt.Errorf("short-header packet: %w", ErrNotTLS)

// errQUICUnknownVersion is returned for a version this reader does not
// know, including 0 (a Version Negotiation packet, which only servers send).
var errQUICUnknownVersion = fmt.Errorf("QUIC version not 1 or 2: %w", ErrNotTLS)

// parseQUICLongHeader reads the long header at the start of b, up to the
// protected packet number, and the packet's extent. It returns
// errQUICNotLong or errQUICUnknownVersion (both ErrNotTLS) when b does not
// start with a v1 or v2 long header, and ErrMalformed when the header is
// cut short or its lengths do not fit in b. A Retry packet has no Length
// field and is reported with length 0; clients never send one.
func parseQUICLongHeader(b []byte) (quicLongHeader, *quicVersion, error) {
	var h quicLongHeader
	s := cryptobyte.String(b)
	var first uint8
	if !s.ReadUint8(&first) {
		return h, nil, fmt.Errorf("empty packet: %w", ErrMalformed)
	}
	if first&0x80 == 0 {
		return h, nil, errQUICNotLong
	}
	if !s.ReadUint32(&h.version) {
		return h, nil, fmt.Errorf("long header cut short in the version: %w", ErrMalformed)
	}
	v := lookupQUICVersion(h.version)
	if v == nil {
		return h, nil, errQUICUnknownVersion
	}
	// The fixed bit (0x40) is not checked: RFC 9287 lets a client clear it
	// even in a first Initial, and it carries nothing this reader uses.
	h.typ = (first & 0x30) >> 4
	var scid []byte
	if !s.ReadUint8LengthPrefixed((*cryptobyte.String)(&h.dcid)) ||
		!s.ReadUint8LengthPrefixed((*cryptobyte.String)(&scid)) {
		return h, v, fmt.Errorf("long header cut short in a connection ID: %w", ErrMalformed)
	}
	if len(h.dcid) > quicMaxCID || len(scid) > quicMaxCID {
		// RFC 9000 section 17.2: at most 20 bytes in versions 1 and 2.
		return h, v, fmt.Errorf("connection ID of %d and %d bytes, over %d: %w", len(h.dcid), len(scid), quicMaxCID, ErrMalformed)
	}
	if h.typ == v.retry {
		return h, v, nil
	}
	if h.typ == v.initial {
		var tokenLen uint64
		if !readQUICVarint(&s, &tokenLen) || !s.Skip(int(min(tokenLen, uint64(len(b))+1))) {
			return h, v, fmt.Errorf("the Initial token cut short: %w", ErrMalformed)
		}
	}
	var length uint64
	if !readQUICVarint(&s, &length) {
		return h, v, fmt.Errorf("long header cut short in the Length: %w", ErrMalformed)
	}
	if length > uint64(len(s)) {
		return h, v, fmt.Errorf("packet Length %d, only %d bytes left in the datagram: %w", length, len(s), ErrMalformed)
	}
	h.pnOffset = len(b) - len(s)
	h.length = h.pnOffset + int(length)
	return h, v, nil
}

// decodeQUICPacketNumber recovers a full packet number from its truncated
// encoding of pnLen bytes, as the one closest to largest+1 (RFC 9000
// section 17.1 and appendix A.3). largest is -1 before any packet.
func decodeQUICPacketNumber(largest int64, truncated uint64, pnLen int) uint64 {
	expected := uint64(largest + 1)
	win := uint64(1) << (8 * pnLen)
	hwin := win / 2
	candidate := expected&^(win-1) | truncated
	switch {
	case candidate+hwin <= expected && candidate < 1<<62-win:
		return candidate + win
	case candidate > expected+hwin && candidate >= win:
		return candidate - win
	}
	return candidate
}

// openInitial removes header and packet protection from one client
// Initial packet (RFC 9001 sections 5.3 and 5.4) and returns its plaintext
// payload. The packet is copied into the flow's scratch buffer and
// decrypted in place there; datagram bytes are never written to.
func (f *QUICFlow) openInitial(packet []byte, pnOffset int) ([]byte, error) {
	// RFC 9001 section 5.4.2: the sample starts 4 bytes after the start of
	// the packet number; a packet too short for it cannot be unprotected.
	sampleAt := pnOffset + 4
	if len(packet) < sampleAt+quicSampleLen {
		return nil, fmt.Errorf("an Initial packet of %d bytes too short for the header protection sample: %w", len(packet), ErrMalformed)
	}
	p := f.pkt.grow(len(packet), 0, quicMaxPacket)[:len(packet)]
	copy(p, packet)
	f.keys.hp.Encrypt(f.mask[:], p[sampleAt:sampleAt+quicSampleLen])
	p[0] ^= f.mask[0] & 0x0f // long header: the low 4 bits
	pnLen := int(p[0]&0x03) + 1
	var truncated uint64
	for k := range pnLen {
		p[pnOffset+k] ^= f.mask[1+k]
		truncated = truncated<<8 | uint64(p[pnOffset+k])
	}
	pn := decodeQUICPacketNumber(f.largestPN, truncated, pnLen)

	// RFC 9001 section 5.3: the nonce is the IV XORed with the packet
	// number, left-padded to the IV's length.
	f.nonce = f.keys.iv
	var pnb [8]byte
	binary.BigEndian.PutUint64(pnb[:], pn)
	for k := range pnb {
		f.nonce[quicIVLen-8+k] ^= pnb[k]
	}
	header := p[:pnOffset+pnLen]
	sealed := p[pnOffset+pnLen:]
	plain, err := f.keys.aead.Open(sealed[:0], f.nonce[:], sealed, header)
	if err != nil {
		return nil, fmt.Errorf("the Initial packet numbered %d does not decrypt with the keys of its connection ID: %w", pn, ErrMalformed)
	}
	// RFC 9000 section 17.2: the reserved bits must be 0 once protection is
	// removed (PROTOCOL_VIOLATION otherwise).
	if p[0]&0x0c != 0 {
		return nil, fmt.Errorf("the Initial packet numbered %d has reserved bits set: %w", pn, ErrMalformed)
	}
	if int64(pn) > f.largestPN {
		f.largestPN = int64(pn)
	}
	return plain, nil
}

// Frame types allowed in an Initial packet (RFC 9000 section 12.4, table 3).
const (
	quicFramePadding         = 0x00
	quicFramePing            = 0x01
	quicFrameAck             = 0x02
	quicFrameAckECN          = 0x03
	quicFrameCrypto          = 0x06
	quicFrameConnectionClose = 0x1c
)

// readFrames reads the frames of a decrypted Initial payload and hands the
// CRYPTO data to the stream. Any frame type not allowed in an Initial is
// ErrMalformed (RFC 9000 section 12.4: PROTOCOL_VIOLATION), as is a frame
// cut short or a payload with no frames at all.
func (f *QUICFlow) readFrames(payload []byte) error {
	if len(payload) == 0 {
		return fmt.Errorf("an Initial packet without frames: %w", ErrMalformed)
	}
	s := cryptobyte.String(payload)
	for !s.Empty() {
		var typ uint8
		s.ReadUint8(&typ)
		// Frame types are varints in their shortest encoding (RFC 9000
		// section 12.4); every allowed type fits in one byte, so a first
		// byte of 0x40 or more is not one of them.
		switch typ {
		case quicFramePadding:
			// PADDING fills most of a client's Initial: skip the run in
			// one loop rather than one frame at a time.
			n := 0
			for n < len(s) && s[n] == quicFramePadding {
				n++
			}
			s = s[n:]
		case quicFramePing:
			// No fields.
		case quicFrameAck, quicFrameAckECN:
			if !skipQUICAck(&s, typ == quicFrameAckECN) {
				return fmt.Errorf("ACK frame cut short: %w", ErrMalformed)
			}
		case quicFrameCrypto:
			var off, n uint64
			var data []byte
			if !readQUICVarint(&s, &off) || !readQUICVarint(&s, &n) ||
				n > uint64(len(s)) || !s.ReadBytes(&data, int(n)) {
				return fmt.Errorf("CRYPTO frame cut short: %w", ErrMalformed)
			}
			if err := f.stream.add(off, data); err != nil {
				return err
			}
		case quicFrameConnectionClose:
			// The client gives up; nothing in it names a server. Read it
			// so what follows is framed right.
			var code, frameType, n uint64
			if !readQUICVarint(&s, &code) || !readQUICVarint(&s, &frameType) ||
				!readQUICVarint(&s, &n) || n > uint64(len(s)) || !s.Skip(int(n)) {
				return fmt.Errorf("CONNECTION_CLOSE frame cut short: %w", ErrMalformed)
			}
		default:
			return fmt.Errorf("frame type 0x%02x in an Initial packet: %w", typ, ErrMalformed)
		}
	}
	return nil
}

// skipQUICAck reads the fields of an ACK frame after its type (RFC 9000
// section 19.3). Each range is at least two bytes, so the loop is bounded
// by the payload whatever the range count says.
func skipQUICAck(s *cryptobyte.String, ecn bool) bool {
	var largest, delay, count, first uint64
	if !readQUICVarint(s, &largest) || !readQUICVarint(s, &delay) ||
		!readQUICVarint(s, &count) || !readQUICVarint(s, &first) {
		return false
	}
	for ; count > 0; count-- {
		var gap, length uint64
		if !readQUICVarint(s, &gap) || !readQUICVarint(s, &length) {
			return false
		}
	}
	if ecn {
		var ect0, ect1, ce uint64
		return readQUICVarint(s, &ect0) && readQUICVarint(s, &ect1) && readQUICVarint(s, &ce)
	}
	return true
}
