package engine

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/egressd/egressd/pkg/policy"
)

// Packet is one queued IPv4 packet, decoded. Payload aliases the buffer
// the packet was decoded from and is valid only during the call it is
// passed to.
type Packet struct {
	ID   uint32    // the queue's packet id, opaque to the engine
	Time time.Time // when the packet reached egressd
	// Queue is the queue the packet came from: the Sink (Engine.Attach)
	// its verdict goes to.
	Queue uint16
	// Logged says the kernel forwarded the packet and only told egressd
	// (a SYN from a SYNSource): there is no verdict to give it, and ID
	// and Queue mean nothing.
	Logged bool

	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	Proto            policy.Proto // TCP or UDP
	TTL              uint8

	// TCP only.
	Seq                uint32
	SYN, ACK, FIN, RST bool

	Payload []byte
	// Truncated says the queue's copy range cut the packet: Payload is
	// only its start. A flow head that does not complete within it is
	// denied (limit).
	Truncated bool
}

// Decoding errors. A packet that fails to decode cannot be part of a
// decision; the engine drops it.
var (
	ErrNotIPv4      = errors.New("not an IPv4 packet")
	ErrFragment     = errors.New("IPv4 fragment")
	ErrNotTransport = errors.New("neither TCP nor UDP")
)

// Decoder decodes IPv4 + TCP/UDP packets with gopacket's
// DecodingLayerParser into a reused set of layers: no allocation per
// packet once warm. A Decoder is not safe for concurrent use; each queue
// reader owns one.
type Decoder struct {
	ip4     layers.IPv4
	tcp     layers.TCP
	udp     layers.UDP
	payload gopacket.Payload
	parser  *gopacket.DecodingLayerParser
	decoded []gopacket.LayerType
}

// NewDecoder returns a Decoder for packets that start at the IPv4 header,
// as NFQUEUE delivers them.
func NewDecoder() *Decoder {
	d := &Decoder{decoded: make([]gopacket.LayerType, 0, 4)}
	d.parser = gopacket.NewDecodingLayerParser(layers.LayerTypeIPv4, &d.ip4, &d.tcp, &d.udp, &d.payload)
	d.parser.IgnoreUnsupported = true // ICMP and others: reported as ErrNotTransport
	return d
}

// Decode fills p from data. On error p's addresses may be set (for logs)
// and the rest is unspecified.
func (d *Decoder) Decode(data []byte, p *Packet) error {
	if len(data) < 20 || data[0]>>4 != 4 {
		return ErrNotIPv4
	}
	// The IP total length tells whether the queue copied the whole
	// packet: the headers are there, the payload is cut.
	truncated := int(binary.BigEndian.Uint16(data[2:4])) > len(data)
	// Fragments never reach the queue when conntrack is loaded (it
	// reassembles them first); a fragment here cannot be classified, and
	// its transport header may be a lie.
	if flags := binary.BigEndian.Uint16(data[6:8]); flags&0x3fff != 0 {
		return ErrFragment
	}
	if err := d.parser.DecodeLayers(data, &d.decoded); err != nil {
		return err
	}
	p.Src, _ = netip.AddrFromSlice(d.ip4.SrcIP.To4())
	p.Dst, _ = netip.AddrFromSlice(d.ip4.DstIP.To4())
	p.TTL = d.ip4.TTL
	p.Payload, p.Truncated, p.Logged = nil, truncated, false
	p.SYN, p.ACK, p.FIN, p.RST, p.Seq = false, false, false, false, 0
	for _, t := range d.decoded {
		switch t {
		case layers.LayerTypeTCP:
			p.Proto = policy.TCP
			p.SrcPort, p.DstPort = uint16(d.tcp.SrcPort), uint16(d.tcp.DstPort)
			p.Seq = d.tcp.Seq
			p.SYN, p.ACK, p.FIN, p.RST = d.tcp.SYN, d.tcp.ACK, d.tcp.FIN, d.tcp.RST
			p.Payload = d.tcp.Payload
			return nil
		case layers.LayerTypeUDP:
			p.Proto = policy.UDP
			p.SrcPort, p.DstPort = uint16(d.udp.SrcPort), uint16(d.udp.DstPort)
			p.Payload = d.udp.Payload
			return nil
		}
	}
	return ErrNotTransport
}
