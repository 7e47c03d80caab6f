// Package pcapgen writes synthetic captures: Ethernet frames carrying IPv4
// TCP connections (handshake, client and server segments, FIN or RST) and
// UDP datagrams, with correct checksums unless asked otherwise. Replay's
// tests and its throughput generator (test/pcapgen) build their captures
// with it. It writes files only; it opens no socket.
package pcapgen

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/egressd/egressd/internal/inetsum"
)

// Emitter takes the IPv4 packets a Conn writes.
type Emitter interface {
	Frame(ip []byte) error
}

// Collector is an Emitter that keeps copies of the packets.
type Collector [][]byte

// Frame appends a copy of ip.
func (c *Collector) Frame(ip []byte) error {
	*c = append(*c, append([]byte(nil), ip...))
	return nil
}

// Writer writes frames to a pcap file with a clock of its own.
type Writer struct {
	w    *pcapgo.Writer
	Now  time.Time // the next frame's timestamp
	Step time.Duration
	buf  []byte
	ipID uint16
	Snap int // bytes of each frame written (0: all), to imitate tcpdump -s
}

// NewWriter writes a pcap header (Ethernet, nanosecond timestamps) and
// returns a Writer whose frames start at start, step apart.
func NewWriter(w io.Writer, start time.Time) (*Writer, error) {
	pw := pcapgo.NewWriterNanos(w)
	if err := pw.WriteFileHeader(262144, layers.LinkTypeEthernet); err != nil {
		return nil, err
	}
	return &Writer{w: pw, Now: start, Step: 10 * time.Microsecond}, nil
}

// Advance moves the clock.
func (w *Writer) Advance(d time.Duration) { w.Now = w.Now.Add(d) }

// Frame writes an IPv4 packet in an Ethernet frame at the clock's time
// and advances the clock by Step.
func (w *Writer) Frame(ip []byte) error {
	w.buf = append(w.buf[:0],
		0x02, 0, 0, 0, 0, 2, // destination MAC
		0x02, 0, 0, 0, 0, 1, // source MAC
		0x08, 0x00) // IPv4
	w.buf = append(w.buf, ip...)
	data := w.buf
	if w.Snap > 0 && len(data) > w.Snap {
		data = data[:w.Snap]
	}
	ci := captureInfo(w.Now, len(data), len(w.buf))
	w.Now = w.Now.Add(w.Step)
	return w.w.WritePacket(ci, data)
}

// Flags are TCP flags.
type Flags uint8

const (
	FIN Flags = 0x01
	SYN Flags = 0x02
	RST Flags = 0x04
	PSH Flags = 0x08
	ACK Flags = 0x10
)

// IPv4 builds an IPv4 header (20 bytes, DF, TTL 64) around a transport
// segment. frag is the flags-and-offset field (0: a whole datagram).
func IPv4(src, dst netip.Addr, proto uint8, id uint16, frag uint16, payload []byte) []byte {
	b := make([]byte, 20, 20+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:4], uint16(20+len(payload)))
	binary.BigEndian.PutUint16(b[4:6], id)
	binary.BigEndian.PutUint16(b[6:8], frag)
	b[8], b[9] = 64, proto
	s, d := src.As4(), dst.As4()
	copy(b[12:16], s[:])
	copy(b[16:20], d[:])
	binary.BigEndian.PutUint16(b[10:12], ^inetsum.Sum(b, 0))
	return append(b, payload...)
}

// TCP builds an IPv4 TCP segment with a correct checksum.
func TCP(src, dst netip.AddrPort, id uint16, seq, ack uint32, fl Flags, payload []byte) []byte {
	seg := make([]byte, 20, 20+len(payload))
	binary.BigEndian.PutUint16(seg[0:2], src.Port())
	binary.BigEndian.PutUint16(seg[2:4], dst.Port())
	binary.BigEndian.PutUint32(seg[4:8], seq)
	binary.BigEndian.PutUint32(seg[8:12], ack)
	seg[12], seg[13] = 5<<4, byte(fl)
	binary.BigEndian.PutUint16(seg[14:16], 64240)
	seg = append(seg, payload...)
	binary.BigEndian.PutUint16(seg[16:18], ^inetsum.Sum(seg, inetsum.Pseudo(src.Addr().As4(), dst.Addr().As4(), 6, len(seg))))
	return IPv4(src.Addr(), dst.Addr(), 6, id, 0x4000, seg)
}

// UDP builds an IPv4 UDP datagram with a correct checksum.
func UDP(src, dst netip.AddrPort, id uint16, payload []byte) []byte {
	seg := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(seg[0:2], src.Port())
	binary.BigEndian.PutUint16(seg[2:4], dst.Port())
	binary.BigEndian.PutUint16(seg[4:6], uint16(8+len(payload)))
	seg = append(seg, payload...)
	c := ^inetsum.Sum(seg, inetsum.Pseudo(src.Addr().As4(), dst.Addr().As4(), 17, len(seg)))
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(seg[6:8], c)
	return IPv4(src.Addr(), dst.Addr(), 17, id, 0x4000, seg)
}

// Fragment splits a datagram built by IPv4 into fragments carrying at
// most size bytes of its payload each (size a multiple of 8).
func Fragment(dg []byte, size int) [][]byte {
	src, dst := netip.AddrFrom4([4]byte(dg[12:16])), netip.AddrFrom4([4]byte(dg[16:20]))
	id := binary.BigEndian.Uint16(dg[4:6])
	payload := dg[20:]
	var out [][]byte
	for off := 0; off < len(payload); off += size {
		end := min(off+size, len(payload))
		ff := uint16(off / 8)
		if end < len(payload) {
			ff |= 0x2000 // more fragments
		}
		out = append(out, IPv4(src, dst, dg[9], id, ff, payload[off:end]))
	}
	return out
}

// Conn is one TCP connection written to an Emitter.
type Conn struct {
	out              Emitter
	Client, Server   netip.AddrPort
	cseq, sseq       uint32
	clientID, servID uint16
}

// NewConn starts a connection (nothing is written yet); n varies its
// initial sequence numbers and IP ids.
func NewConn(out Emitter, client, server netip.AddrPort, n uint16) *Conn {
	return &Conn{out: out, Client: client, Server: server, cseq: 1000 + uint32(n)*7919, sseq: 5000, clientID: n, servID: n * 3}
}

// TCPConn starts a connection written to w.
func (w *Writer) TCPConn(client, server netip.AddrPort) *Conn {
	w.ipID++
	return NewConn(w, client, server, w.ipID)
}

func (c *Conn) client(fl Flags, payload []byte) error {
	c.clientID++
	var ack uint32
	if fl&ACK != 0 {
		ack = c.sseq
	}
	p := TCP(c.Client, c.Server, c.clientID, c.cseq, ack, fl, payload)
	c.cseq += uint32(len(payload))
	if fl&(SYN|FIN) != 0 {
		c.cseq++
	}
	return c.out.Frame(p)
}

func (c *Conn) server(fl Flags, payload []byte) error {
	c.servID++
	p := TCP(c.Server, c.Client, c.servID, c.sseq, c.cseq, fl, payload)
	c.sseq += uint32(len(payload))
	if fl&(SYN|FIN) != 0 {
		c.sseq++
	}
	return c.out.Frame(p)
}

// Handshake writes SYN, SYN-ACK and ACK.
func (c *Conn) Handshake() error {
	return errors.Join(c.client(SYN, nil), c.server(SYN|ACK, nil), c.client(ACK, nil))
}

// SYN writes the client's SYN only.
func (c *Conn) SYN() error { return c.client(SYN, nil) }

// Send writes client payload in segments of at most mss bytes (0: one).
func (c *Conn) Send(payload []byte, mss int) error {
	for len(payload) > 0 {
		n := len(payload)
		if mss > 0 {
			n = min(n, mss)
		}
		if err := c.client(ACK|PSH, payload[:n]); err != nil {
			return err
		}
		payload = payload[n:]
	}
	return nil
}

// Reply writes n bytes of server payload in 1448-byte segments, with the
// client's ACK every second segment, as a download looks.
func (c *Conn) Reply(n int) error {
	seg := make([]byte, 1448)
	for i := 0; n > 0; i++ {
		k := min(n, len(seg))
		if err := c.server(ACK, seg[:k]); err != nil {
			return err
		}
		n -= k
		if i%2 == 1 || n == 0 {
			if err := c.client(ACK, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// Close writes FIN from both sides and the last ACK.
func (c *Conn) Close() error {
	return errors.Join(c.client(FIN|ACK, nil), c.server(FIN|ACK, nil), c.client(ACK, nil))
}

// Reset writes a RST from the server (what a REJECT looks like to the
// client).
func (c *Conn) Reset() error { return c.server(RST|ACK, nil) }

var (
	helloMu    sync.Mutex
	helloCache = map[string][]byte{}
)

// ClientHello returns the first TLS record Go's crypto/tls sends for name
// ("" for a hello without SNI). Hellos are cached per name.
func ClientHello(name string) ([]byte, error) {
	helloMu.Lock()
	defer helloMu.Unlock()
	if h, ok := helloCache[name]; ok {
		return h, nil
	}
	c, s := net.Pipe()
	defer s.Close()
	go func() {
		tls.Client(c, &tls.Config{ServerName: name, InsecureSkipVerify: true}).Handshake()
		c.Close()
	}()
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(s, hdr); err != nil {
		return nil, err
	}
	body := make([]byte, binary.BigEndian.Uint16(hdr[3:5]))
	if _, err := io.ReadFull(s, body); err != nil {
		return nil, err
	}
	h := append(hdr, body...)
	helloCache[name] = h
	return h, nil
}

func captureInfo(ts time.Time, caplen, length int) gopacket.CaptureInfo {
	return gopacket.CaptureInfo{Timestamp: ts, CaptureLength: caplen, Length: length}
}
