package gwlb

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// GENEVE as the Gateway Load Balancer sends it (RFC 8926 section 3; AWS:
// "Integrate your custom logic or appliance with AWS Gateway Load
// Balancer"): outer IPv4 and UDP to port 6081, an 8-byte base header, then
// three options of class 0x0108 — type 1 the endpoint id (8 bytes), type 2
// the attachment id (8 bytes), type 3 the flow cookie (4 bytes) — and the
// client's IPv4 or IPv6 packet: 68 bytes of overhead in all.
const (
	Port        = 6081   // the UDP port of GENEVE (RFC 8926 section 3.3)
	OptionClass = 0x0108 // AWS's option class
	ProtoIPv4   = 0x0800 // the base header's protocol type for an inner IPv4 packet
	ProtoIPv6   = 0x86DD // ... and for IPv6

	optEndpoint   = 1
	optAttachment = 2
	optCookie     = 3

	baseLen = 8
	// HeaderLen is the GENEVE header the load balancer sends: the base
	// header and its three options (4+8, 4+8, 4+4 bytes).
	HeaderLen = baseLen + 12 + 12 + 8
	// Overhead is what encapsulation adds to a packet: outer IPv4 (20),
	// UDP (8) and the GENEVE header.
	Overhead = 20 + 8 + HeaderLen
	// MaxInner is the largest inner packet the load balancer carries (its
	// MTU); it drops larger ones without an ICMP error.
	MaxInner = 8500
	// MaxHeader is the longest GENEVE header this package echoes back. The
	// load balancer's is HeaderLen; RFC 8926 allows up to 260 bytes, and a
	// longer one than this is refused rather than truncated.
	MaxHeader = 64
)

// Errors of Parse and CheckInner. Each names a reason a datagram is
// dropped; none is retried.
var (
	ErrTruncated = errors.New("gwlb: GENEVE header truncated")
	ErrVersion   = errors.New("gwlb: GENEVE version is not 0")
	ErrOAM       = errors.New("gwlb: GENEVE OAM packet")
	ErrProtocol  = errors.New("gwlb: protocol type is not IPv4 or IPv6, or disagrees with the inner packet")
	ErrOptions   = errors.New("gwlb: GENEVE options malformed")
	ErrCritical  = errors.New("gwlb: unknown critical GENEVE option")
	ErrMissing   = errors.New("gwlb: a Gateway Load Balancer option (endpoint, attachment or flow cookie) is missing")
	ErrTooLong   = errors.New("gwlb: GENEVE header longer than egressd echoes")
	ErrInner     = errors.New("gwlb: inner packet malformed")
	ErrOversize  = errors.New("gwlb: inner packet over 8500 bytes")
)

// Header is what Parse reads from a GENEVE header.
type Header struct {
	Len        int    // the header's length in bytes, options included: the inner packet starts there
	Proto      uint16 // ProtoIPv4 or ProtoIPv6
	VNI        uint32 // the virtual network identifier (0 from the load balancer)
	Endpoint   uint64 // option type 1: the endpoint the flow came through
	Attachment uint64 // option type 2
	Cookie     uint32 // option type 3: the flow cookie
}

func (h Header) String() string {
	return fmt.Sprintf("geneve{len %d proto %#04x endpoint %016x attachment %016x cookie %08x}",
		h.Len, h.Proto, h.Endpoint, h.Attachment, h.Cookie)
}

// Parse reads the GENEVE header at the start of b (a UDP payload). It
// checks every length against b and the options against each other, and
// never reads past the options' end; the inner packet is b[h.Len:].
func Parse(b []byte) (Header, error) {
	if len(b) < baseLen {
		return Header{}, ErrTruncated
	}
	// RFC 8926 section 3.4: Ver (2 bits) must be 0, and a packet of an
	// unknown version MUST be dropped.
	if b[0]>>6 != 0 {
		return Header{}, ErrVersion
	}
	optLen := int(b[0]&0x3f) * 4
	oam := b[1]&0x80 != 0
	critical := b[1]&0x40 != 0
	h := Header{
		Len:   baseLen + optLen,
		Proto: binary.BigEndian.Uint16(b[2:4]),
		VNI:   uint32(b[4])<<16 | uint32(b[5])<<8 | uint32(b[6]),
	}
	if len(b) < h.Len {
		return Header{}, ErrTruncated // Opt Len says more than the datagram holds
	}
	if h.Len > MaxHeader {
		return Header{}, ErrTooLong
	}
	// Section 3.4: an OAM packet is a control message for the tunnel
	// endpoint, never data to forward. The load balancer sends none.
	if oam {
		return Header{}, ErrOAM
	}
	if h.Proto != ProtoIPv4 && h.Proto != ProtoIPv6 {
		return Header{}, ErrProtocol
	}
	var seen uint8
	opts := b[baseLen:h.Len]
	for len(opts) > 0 {
		// Section 3.5: class (16), type (8, its top bit "critical"),
		// 3 reserved bits and a 5-bit length of the data in 4-byte
		// words, not counting these 4 bytes.
		if len(opts) < 4 {
			return Header{}, ErrOptions
		}
		class := binary.BigEndian.Uint16(opts[0:2])
		typ := opts[2]
		n := 4 + int(opts[3]&0x1f)*4
		if n > len(opts) {
			return Header{}, ErrOptions // an option longer than the options
		}
		data := opts[4:n]
		opts = opts[n:]
		if class != OptionClass {
			if typ&0x80 != 0 {
				// Section 3.5.1: an unknown critical option MUST
				// make the endpoint drop the packet.
				return Header{}, ErrCritical
			}
			continue // non-critical options of other classes may be ignored
		}
		var bit uint8
		switch typ {
		case optEndpoint, optAttachment:
			if len(data) != 8 {
				return Header{}, ErrOptions
			}
			if typ == optEndpoint {
				h.Endpoint, bit = binary.BigEndian.Uint64(data), 1
			} else {
				h.Attachment, bit = binary.BigEndian.Uint64(data), 2
			}
		case optCookie:
			if len(data) != 4 {
				return Header{}, ErrOptions
			}
			h.Cookie, bit = binary.BigEndian.Uint32(data), 4
		default:
			if typ&0x80 != 0 {
				return Header{}, ErrCritical
			}
			continue
		}
		// Two cookies (or endpoints) would leave egressd echoing one
		// the load balancer did not mean: refuse the packet.
		if seen&bit != 0 {
			return Header{}, ErrOptions
		}
		seen |= bit
	}
	// The C bit says that an option is critical; every critical option
	// has been refused above, so a header with the bit set claims one it
	// does not carry.
	if critical {
		return Header{}, ErrOptions
	}
	if seen != 7 {
		return Header{}, ErrMissing
	}
	return h, nil
}

// CheckInner checks the inner packet p (what follows the header) against
// the header's protocol type: the IP version must agree, an IPv4 header
// must be whole and its total length must be p's (no trailing bytes, no
// truncation), and p must fit the load balancer's MTU.
func CheckInner(h Header, p []byte) error {
	if len(p) > MaxInner {
		return ErrOversize
	}
	if len(p) < 1 {
		return ErrInner
	}
	switch v := p[0] >> 4; {
	case h.Proto == ProtoIPv4 && v == 4:
		ihl := int(p[0]&0x0f) * 4
		if ihl < 20 || len(p) < ihl || int(binary.BigEndian.Uint16(p[2:4])) != len(p) {
			return ErrInner
		}
		return nil
	case h.Proto == ProtoIPv6 && v == 6:
		if len(p) < 40 || 40+int(binary.BigEndian.Uint16(p[4:6])) != len(p) {
			return ErrInner
		}
		return nil
	}
	return ErrProtocol
}

// AppendHeader appends the GENEVE header the load balancer would send for
// h (its three options, in order; h.Len is ignored) to b. The lab's fake
// load balancer and the tests build packets with it.
func AppendHeader(b []byte, h Header) []byte {
	b = append(b, (HeaderLen-baseLen)/4, 0)
	b = binary.BigEndian.AppendUint16(b, h.Proto)
	b = append(b, byte(h.VNI>>16), byte(h.VNI>>8), byte(h.VNI), 0)
	b = binary.BigEndian.AppendUint16(b, OptionClass)
	b = append(b, optEndpoint, 2)
	b = binary.BigEndian.AppendUint64(b, h.Endpoint)
	b = binary.BigEndian.AppendUint16(b, OptionClass)
	b = append(b, optAttachment, 2)
	b = binary.BigEndian.AppendUint64(b, h.Attachment)
	b = binary.BigEndian.AppendUint16(b, OptionClass)
	b = append(b, optCookie, 1)
	return binary.BigEndian.AppendUint32(b, h.Cookie)
}
