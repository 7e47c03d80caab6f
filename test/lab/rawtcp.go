package lab

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"
)

// RawTCP is a hand-made TCP client in the client namespace: it sends
// segments exactly as a test lays them out (any order, overlapping, with a
// bad checksum, a short TTL or any TCP options) and reads what comes back.
// The client's own TCP stack is told to keep out of it: its resets for this
// port are dropped by an OUTPUT rule in the client namespace.
//
// It can also speak for the flow's other end and for routers on the way:
// SendFromServer sends a segment from the inet namespace as the server
// would, and SendICMPFromInet and SendICMPFromClient send ICMP errors that
// quote the flow's real addresses and ports, from either side.
type RawTCP struct {
	l            *Lab
	send, recv   int // raw sockets: IPPROTO_RAW to send, IPPROTO_TCP to read
	src, dst     netip.Addr
	sport, dport uint16
	ISN          uint32
	rcvNxt       uint32

	inet    int    // IPPROTO_RAW socket in inet, opened by the first send from there
	natPort uint16 // the client's port as the NAT translated it, found then too
}

// Segment options.
type SegOpt func(*segment)

type segment struct {
	ttl         uint8
	badChecksum bool
	options     []layers.TCPOption
}

// WithTTL sends the segment with this IP TTL.
func WithTTL(ttl uint8) SegOpt { return func(s *segment) { s.ttl = ttl } }

// WithBadChecksum sends the segment with a wrong TCP checksum.
func WithBadChecksum() SegOpt { return func(s *segment) { s.badChecksum = true } }

// WithOptions sends the segment with these TCP options, in this order. The
// length byte of each is set from its data (so a timestamp option given 36
// bytes of data goes out with length 38, as a covert sender would lay it
// out), and the header is padded with zeros to a multiple of 4 bytes.
func WithOptions(opts ...layers.TCPOption) SegOpt {
	return func(s *segment) { s.options = append(s.options, opts...) }
}

// TimestampOptions are the options of a Linux segment after the handshake:
// NOP, NOP, timestamps (RFC 7323 Appendix A's layout), with these values.
func TimestampOptions(tsval, tsecr uint32) []layers.TCPOption {
	ts := make([]byte, 8)
	binary.BigEndian.PutUint32(ts, tsval)
	binary.BigEndian.PutUint32(ts[4:], tsecr)
	return []layers.TCPOption{
		{OptionType: layers.TCPOptionKindNop},
		{OptionType: layers.TCPOptionKindNop},
		{OptionType: layers.TCPOptionKindTimestamps, OptionData: ts},
	}
}

// NewRawTCP prepares a raw client from the client namespace to dst:dport.
func (l *Lab) NewRawTCP(dst string, dport uint16) (*RawTCP, error) {
	c := &RawTCP{
		l: l, src: netip.MustParseAddr(ClientAddr), dst: netip.MustParseAddr(dst),
		sport: uint16(40000 + rand.IntN(20000)), dport: dport, ISN: rand.Uint32(),
	}
	err := l.Client.Do(func() error {
		var err error
		if c.send, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW); err != nil {
			return err
		}
		if c.recv, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_TCP); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("raw sockets: %w", err)
	}
	l.onClose(c.Close)
	rule := []string{"OUTPUT", "-p", "tcp", "--sport", strconv.Itoa(int(c.sport)), "--tcp-flags", "RST", "RST", "-j", "DROP"}
	if out, err := Exec(context.Background(), l.Client, "iptables", append([]string{"-A"}, rule...)...); err != nil {
		return nil, fmt.Errorf("client OUTPUT rule: %v: %s", err, out)
	}
	return c, nil
}

// Close closes the sockets.
func (c *RawTCP) Close() error {
	if c.send > 0 {
		unix.Close(c.send)
		unix.Close(c.recv)
		c.send, c.recv = 0, 0
	}
	if c.inet > 0 {
		unix.Close(c.inet)
		c.inet = 0
	}
	return nil
}

// SrcPort is the client's port.
func (c *RawTCP) SrcPort() int { return int(c.sport) }

func (c *RawTCP) write(seq uint32, flags func(*layers.TCP), payload []byte, opts ...SegOpt) error {
	pkt, err := tcpPacket(c.src, c.dst, c.sport, c.dport, seq, flags, payload, opts...)
	if err != nil {
		return err
	}
	return sendIPv4(c.send, pkt)
}

// tcpPacket lays out one IPv4 packet carrying a TCP segment.
func tcpPacket(src, dst netip.Addr, sport, dport uint16, seq uint32, flags func(*layers.TCP), payload []byte, opts ...SegOpt) ([]byte, error) {
	s := segment{ttl: 64}
	for _, o := range opts {
		o(&s)
	}
	ip := &layers.IPv4{Version: 4, TTL: s.ttl, Protocol: layers.IPProtocolTCP, SrcIP: src.AsSlice(), DstIP: dst.AsSlice(), Id: uint16(rand.Uint32())}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), Seq: seq, Window: 64240, Options: s.options}
	flags(tcp)
	tcp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, tcp, gopacket.Payload(payload)); err != nil {
		return nil, err
	}
	pkt := buf.Bytes()
	if s.badChecksum {
		pkt[20+16] ^= 0x5a // the TCP checksum field
	}
	return pkt, nil
}

// sendIPv4 sends a whole IPv4 packet (header included) on a raw socket, to
// the destination its header names.
func sendIPv4(fd int, pkt []byte) error {
	sa := &unix.SockaddrInet4{Addr: [4]byte(pkt[16:20])}
	return unix.Sendto(fd, pkt, 0, sa)
}

// Handshake sends the SYN (laid out with opts), waits for the SYN-ACK and
// acknowledges it.
func (c *RawTCP) Handshake(timeout time.Duration, opts ...SegOpt) error {
	if err := c.write(c.ISN, func(t *layers.TCP) { t.SYN = true }, nil, opts...); err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		tcp, _, err := c.read(time.Until(deadline))
		if err != nil {
			return err
		}
		if tcp.SYN && tcp.ACK && tcp.Ack == c.ISN+1 {
			c.rcvNxt = tcp.Seq + 1
			return c.write(c.ISN+1, func(t *layers.TCP) { t.ACK = true; t.Ack = c.rcvNxt }, nil)
		}
		if tcp.RST {
			return errors.New("reset during the handshake")
		}
	}
	return errors.New("no SYN-ACK")
}

// SYNWithPayload sends a SYN that carries payload (as TCP Fast Open does,
// or a crafter), and waits for nothing.
func (c *RawTCP) SYNWithPayload(payload []byte) error {
	return c.write(c.ISN, func(t *layers.TCP) { t.SYN = true }, payload)
}

// Send sends payload at stream offset off (0 is the first byte after the
// SYN), as one segment with PSH and ACK; it must fit the MTU (see SendAll).
func (c *RawTCP) Send(off int, payload []byte, opts ...SegOpt) error {
	if len(payload) > MSS {
		return fmt.Errorf("%d bytes do not fit one segment; use SendAll", len(payload))
	}
	return c.write(c.ISN+1+uint32(off), func(t *layers.TCP) { t.ACK, t.PSH, t.Ack = true, true, c.rcvNxt }, payload, opts...)
}

// MSS is the most payload Send puts in one segment (the lab's MTU is 1500).
const MSS = 1400

// SendAll sends payload at stream offset off in MSS-sized segments, in order.
func (c *RawTCP) SendAll(off int, payload []byte, opts ...SegOpt) error {
	for len(payload) > 0 {
		n := min(len(payload), MSS)
		if err := c.Send(off, payload[:n], opts...); err != nil {
			return err
		}
		off += n
		payload = payload[n:]
	}
	return nil
}

// SendACK sends a segment without payload that acknowledges what the
// server sent (a pure ACK), laid out with opts.
func (c *RawTCP) SendACK(opts ...SegOpt) error {
	return c.write(c.ISN+1, func(t *layers.TCP) { t.ACK, t.Ack = true, c.rcvNxt }, nil, opts...)
}

// SendNoHandshake sends a data segment for a connection that never had a
// handshake (a mid-stream packet).
func (c *RawTCP) SendNoHandshake(payload []byte) error {
	return c.write(c.ISN+1, func(t *layers.TCP) { t.ACK, t.PSH, t.Ack = true, true, 12345 }, payload)
}

// Reply is what came back from the server within a wait.
type Reply struct {
	RST     bool
	Payload int // bytes of payload received
}

// Wait collects what the server sends for d.
func (c *RawTCP) Wait(d time.Duration) Reply {
	var r Reply
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		tcp, n, err := c.read(time.Until(deadline))
		if err != nil {
			break
		}
		r.RST = r.RST || tcp.RST
		r.Payload += n
	}
	return r
}

// read returns the next TCP segment for this connection.
func (c *RawTCP) read(timeout time.Duration) (*layers.TCP, int, error) {
	buf := make([]byte, 65536)
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil, 0, errors.New("timeout")
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		unix.SetsockoptTimeval(c.recv, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		n, _, err := unix.Recvfrom(c.recv, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			return nil, 0, err
		}
		pkt := buf[:n]
		if len(pkt) < 20 {
			continue
		}
		ihl := int(pkt[0]&0xf) * 4
		if len(pkt) < ihl+20 || !net.IP(pkt[12:16]).Equal(c.dst.AsSlice()) {
			continue
		}
		var tcp layers.TCP
		if err := tcp.DecodeFromBytes(pkt[ihl:], gopacket.NilDecodeFeedback); err != nil {
			continue
		}
		if uint16(tcp.DstPort) != c.sport || uint16(tcp.SrcPort) != c.dport {
			continue
		}
		total := int(binary.BigEndian.Uint16(pkt[2:4]))
		return &tcp, total - ihl - int(tcp.DataOffset)*4, nil
	}
}
