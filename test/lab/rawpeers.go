package lab

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"
)

// The other end of a RawTCP flow, and the routers on its way: segments and
// ICMP errors forged with the flow's real addresses, ports and sequence
// numbers, so that the NAT's conntrack takes them as the flow's (or as
// RELATED to it) and its rules, not conntrack, decide what crosses.

// SendFromServer sends, from the inet namespace, a segment the server of
// c's flow could have sent: from c's destination to the NAT's public
// address at the port the NAT gave the flow, with the server's next
// sequence number and acknowledging the client's (so conntrack finds it in
// window). It carries payload (with PSH) if any, laid out with opts. The
// server's own TCP stack knows nothing of it.
func (c *RawTCP) SendFromServer(payload []byte, opts ...SegOpt) error {
	if err := c.openInet(); err != nil {
		return err
	}
	flags := func(t *layers.TCP) { t.ACK, t.PSH, t.Ack = true, len(payload) > 0, c.ISN+1 }
	pkt, err := tcpPacket(c.dst, netip.MustParseAddr(NATPublic), c.dport, c.natPort, c.rcvNxt, flags, payload, opts...)
	if err != nil {
		return err
	}
	return sendIPv4(c.inet, pkt)
}

// ICMPError is an ICMP error about a RawTCP flow: its type and code, the 4
// bytes after its checksum, the quoted segment (its IPv4 header, then
// QuotedTCP bytes of its TCP header) and then Data.
type ICMPError struct {
	Type, Code uint8
	Rest       uint32 // destination unreachable, fragmentation needed: the next-hop MTU
	// QuotedOptions are the quoted TCP header's options (a SYN's, say); the
	// header is 20 bytes without them.
	QuotedOptions []layers.TCPOption
	// QuotedTCP is how much of the quoted TCP header is quoted: 0 for all
	// of it, 8 for RFC 792's "first 64 bits".
	QuotedTCP int
	Data      []byte // bytes after the quoted header: what a covert sender adds
}

// Len is the error's IPv4 length: 20 + 8 + 20 + the quoted TCP bytes + Data.
func (e ICMPError) Len() int { return 48 + e.quoted() + len(e.Data) }

// quoted is how many bytes of the quoted TCP header e holds.
func (e ICMPError) quoted() int {
	if e.QuotedTCP != 0 {
		return e.QuotedTCP
	}
	n := 20
	for _, o := range e.QuotedOptions {
		switch o.OptionType {
		case layers.TCPOptionKindEndList, layers.TCPOptionKindNop:
			n++
		default:
			n += 2 + len(o.OptionData)
		}
	}
	return (n + 3) / 4 * 4
}

// SendICMPFromInet sends e from the inet namespace to the NAT's public
// address, as a router beyond the NAT would about the client's segment:
// the quoted segment goes from the NAT's public address and the flow's
// translated port to the server.
func (c *RawTCP) SendICMPFromInet(e ICMPError) error {
	if err := c.openInet(); err != nil {
		return err
	}
	nat := netip.MustParseAddr(NATPublic)
	quoted, err := tcpPacket(nat, c.dst, c.natPort, c.dport, c.ISN+1, func(t *layers.TCP) { t.ACK, t.Ack = true, c.rcvNxt }, nil, WithOptions(e.QuotedOptions...))
	if err != nil {
		return err
	}
	pkt, err := icmpPacket(c.dst, nat, e, quoted)
	if err != nil {
		return err
	}
	return sendIPv4(c.inet, pkt)
}

// SendICMPFromClient sends e from the client namespace to the server, as
// the client (or a router before the NAT) would about the server's segment.
func (c *RawTCP) SendICMPFromClient(e ICMPError) error {
	quoted, err := tcpPacket(c.dst, c.src, c.dport, c.sport, c.rcvNxt, func(t *layers.TCP) { t.ACK, t.Ack = true, c.ISN+1 }, nil, WithOptions(e.QuotedOptions...))
	if err != nil {
		return err
	}
	pkt, err := icmpPacket(c.src, c.dst, e, quoted)
	if err != nil {
		return err
	}
	return sendIPv4(c.send, pkt)
}

// icmpPacket lays out an IPv4 ICMP error from src to dst quoting segment
// (an IPv4 packet with a 20-byte header and a TCP segment without payload)
// as e says.
func icmpPacket(src, dst netip.Addr, e ICMPError, segment []byte) ([]byte, error) {
	if n := e.quoted(); n < 1 || 20+n > len(segment) {
		return nil, fmt.Errorf("cannot quote %d bytes of a TCP header from a %d-byte segment", n, len(segment))
	}
	body := append(append([]byte(nil), segment[:20+e.quoted()]...), e.Data...)
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(e.Type, e.Code), Id: uint16(e.Rest >> 16), Seq: uint16(e.Rest)}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, icmp, gopacket.Payload(body)); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// openInet opens the raw socket in inet and finds the flow's translated
// port, once.
func (c *RawTCP) openInet() error {
	if c.inet > 0 {
		return nil
	}
	port, err := c.l.NATPort(ClientAddr, c.SrcPort(), c.dst.String(), int(c.dport))
	if err != nil {
		return err
	}
	c.natPort = uint16(port)
	return c.l.Inet.Do(func() error {
		var err error
		c.inet, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
		return err
	})
}

var replyDport = regexp.MustCompile(`src=\S+ dst=\S+ sport=\d+ dport=\d+ .*src=\S+ dst=\S+ sport=\d+ dport=(\d+)`)

// NATPort returns the source port the NAT gave a TCP flow from src:sport to
// dst:dport (MASQUERADE keeps the client's port unless it is taken), as the
// NAT's conntrack table has it.
func (l *Lab) NATPort(src string, sport int, dst string, dport int) (int, error) {
	out, err := Exec(context.Background(), l.NAT, "conntrack", "-L", "-p", "tcp",
		"--orig-src", src, "--orig-port-src", strconv.Itoa(sport), "--orig-dst", dst, "--orig-port-dst", strconv.Itoa(dport))
	if err != nil {
		return 0, fmt.Errorf("conntrack -L: %v: %s", err, out)
	}
	m := replyDport.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("no conntrack entry for %s:%d -> %s:%d: %s", src, sport, dst, dport, out)
	}
	return strconv.Atoi(string(m[1]))
}
