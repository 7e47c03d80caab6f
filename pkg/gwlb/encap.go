package gwlb

import (
	"encoding/binary"

	"github.com/egressd/egressd/internal/inetsum"
)

// Headroom is the space to leave before an inner packet in its buffer for
// Encap to write the outer IPv4 and UDP headers and the longest GENEVE
// header in front of it, without moving the packet.
const Headroom = 20 + 8 + MaxHeader

// Outer are the outer addresses and ports of a datagram Encap builds.
type Outer struct {
	Src, Dst         [4]byte
	SrcPort, DstPort uint16
	ID               uint16 // the IPv4 identification
}

// Reply is the outer header of a packet of path p sent back to the load
// balancer: the addresses swapped and the ports kept, so the load
// balancer's source port is the reply's source port too (what it
// expects of a target; RFC 8926 leaves it open).
func (p *Path) Reply(id uint16) Outer {
	return Outer{Src: p.Local, Dst: p.LB, SrcPort: p.LBPort, DstPort: p.LocalPort, ID: id}
}

// Encap builds, in buf, the datagram that carries the inner packet
// buf[Headroom:Headroom+n] under the GENEVE header hdr (at most MaxHeader
// bytes) and the outer header o, and returns it: an IPv4 packet with its
// header checksum and the UDP checksum filled in, for a raw socket. It
// neither allocates nor moves the inner packet.
func Encap(buf []byte, n int, hdr []byte, o Outer) []byte {
	start := Headroom - len(hdr) - 28
	pkt := buf[start : Headroom+n]
	ip, udp := pkt[:20], pkt[20:28]
	copy(pkt[28:], hdr)
	total := len(pkt)
	ip[0], ip[1] = 0x45, 0
	binary.BigEndian.PutUint16(ip[2:4], uint16(total))
	binary.BigEndian.PutUint16(ip[4:6], o.ID)
	binary.BigEndian.PutUint16(ip[6:8], 0x4000) // DF: the underlay's MTU (9001 in a VPC) holds 8,568 bytes
	ip[8], ip[9] = 64, 17
	ip[10], ip[11] = 0, 0
	copy(ip[12:16], o.Src[:])
	copy(ip[16:20], o.Dst[:])
	binary.BigEndian.PutUint16(ip[10:12], ^inetsum.Sum(ip, 0))
	binary.BigEndian.PutUint16(udp[0:2], o.SrcPort)
	binary.BigEndian.PutUint16(udp[2:4], o.DstPort)
	binary.BigEndian.PutUint16(udp[4:6], uint16(total-20))
	udp[6], udp[7] = 0, 0
	sum := ^inetsum.Sum(pkt[20:], inetsum.Pseudo(o.Src, o.Dst, 17, total-20))
	if sum == 0 {
		sum = 0xffff // RFC 768: a computed zero is sent as all ones
	}
	binary.BigEndian.PutUint16(udp[6:8], sum)
	return pkt
}
