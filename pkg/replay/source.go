package replay

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// Format is the kind of input replay reads.
type Format uint8

const (
	FormatPcap   Format = iota + 1 // libpcap capture file (microsecond or nanosecond)
	FormatPcapNG                   // pcapng capture file
	FormatLog                      // egressd's decision log (JSON lines)
)

func (f Format) String() string {
	switch f {
	case FormatPcap:
		return "pcap"
	case FormatPcapNG:
		return "pcapng"
	case FormatLog:
		return "decision log"
	}
	return fmt.Sprintf("unknown(%d)", uint8(f))
}

// ErrFormat means the input is neither a capture (pcap, pcapng, either
// gzipped) nor a decision log.
var ErrFormat = errors.New("not a pcap or pcapng capture, nor a decision log (JSON lines)")

// maxSnap bounds the bytes read for one packet: tcpdump's largest snap
// length. A file that claims more is read as if it said this, so a forged
// length costs at most this much memory.
const maxSnap = 262144

// detect reads the input's first bytes without consuming them. A gzipped
// input is unwrapped once (captures are often kept compressed).
func detect(br *bufio.Reader) (Format, *bufio.Reader, error) {
	head, _ := br.Peek(4)
	if len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return 0, nil, fmt.Errorf("gzip: %w", err)
		}
		br = bufio.NewReaderSize(zr, 1<<16)
		head, _ = br.Peek(4)
	}
	if len(head) == 4 {
		switch binary.LittleEndian.Uint32(head) {
		case 0xa1b2c3d4, 0xd4c3b2a1, 0xa1b23c4d, 0x4d3cb2a1:
			return FormatPcap, br, nil
		case 0x0a0d0d0a:
			return FormatPcapNG, br, nil
		}
	}
	// A decision log: JSON objects, one a line (possibly after blank
	// lines). Peek far enough to skip leading whitespace.
	for n := 1; n <= 4096; n *= 2 {
		b, err := br.Peek(n)
		if t := bytes.TrimLeft(b, " \t\r\n"); len(t) > 0 {
			if t[0] == '{' {
				return FormatLog, br, nil
			}
			break
		}
		if err != nil {
			break
		}
	}
	return 0, nil, ErrFormat
}

// frame is one captured link-layer frame. data is valid until the next
// call to next.
type frame struct {
	data []byte
	ts   time.Time
	link layers.LinkType
}

// frameReader reads a capture's frames.
type frameReader interface {
	next() (frame, error)
}

// pcapReader reads classic pcap through pcapgo.
type pcapReader struct {
	r    *pcapgo.Reader
	link layers.LinkType
}

func newPcapReader(br *bufio.Reader) (*pcapReader, error) {
	// pcapgo keeps the link type in a byte: read it from the header.
	var link layers.LinkType
	if h, err := br.Peek(24); err == nil {
		order := binary.ByteOrder(binary.LittleEndian)
		if h[0] == 0xa1 {
			order = binary.BigEndian
		}
		link = normalizeLink(order.Uint32(h[20:24]) & 0xffff) // the high bits say FCS
	}
	r, err := pcapgo.NewReader(br)
	if err != nil {
		return nil, fmt.Errorf("pcap header: %w", err)
	}
	// The reader sizes its one buffer from the snap length and refuses a
	// packet longer than it: keep both within maxSnap whatever the file
	// says (0 and absurd values are seen in the wild).
	if s := r.Snaplen(); s == 0 || s > maxSnap {
		r.SetSnaplen(maxSnap)
	}
	if !linkSupported(link) {
		return nil, fmt.Errorf("link type %d is not supported; replay reads %s", link, supportedLinks)
	}
	return &pcapReader{r: r, link: link}, nil
}

func (p *pcapReader) next() (f frame, err error) {
	defer recoverInto(&err)
	data, ci, err := p.r.ZeroCopyReadPacketData()
	if err != nil {
		return frame{}, err
	}
	return frame{data: data, ts: ci.Timestamp, link: p.link}, nil
}

// ngReader reads pcapng through pcapgo, behind ngGuard, which refuses the
// blocks pcapgo would mishandle.
type ngReader struct {
	r *pcapgo.NgReader
}

func newNgReader(br *bufio.Reader) (r *ngReader, err error) {
	defer recoverInto(&err)
	ng, err := pcapgo.NewNgReader(&ngGuard{r: br}, pcapgo.NgReaderOptions{
		// Each packet carries its interface's link type: a capture on
		// several interfaces may mix Ethernet and cooked frames.
		WantMixedLinkType:  true,
		SkipUnknownVersion: true,
	})
	if err != nil {
		return nil, fmt.Errorf("pcapng header: %w", err)
	}
	return &ngReader{r: ng}, nil
}

func (n *ngReader) next() (f frame, err error) {
	defer recoverInto(&err)
	data, ci, err := n.r.ZeroCopyReadPacketData()
	if err != nil {
		return frame{}, err
	}
	lt, _ := ci.AncillaryData[0].(layers.LinkType)
	return frame{data: data, ts: ci.Timestamp, link: lt}, nil
}

// errReader is a panic in the capture reader (third-party code), turned
// into an error: a crafted file must not crash replay.
var errReader = errors.New("malformed capture (the reader failed)")

func recoverInto(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%w: %v", errReader, r)
	}
}

// Link types replay decodes, beyond gopacket's names. gopacket v1.1.19
// keeps a link type in a byte, so the readers map the file's value into
// that byte first (normalizeLink).
const (
	linkTypeLinuxSLL2 layers.LinkType = 20  // LINKTYPE_LINUX_SLL2 (276); 20 is unassigned
	linkTypeOther     layers.LinkType = 147 // LINKTYPE_USER0: any type past 255
	linkTypeRawBSD    layers.LinkType = 12  // DLT_RAW as some systems number it in files
	linkTypeRawAlt    layers.LinkType = 14
)

// normalizeLink maps a file's link type to the byte gopacket keeps.
func normalizeLink(v uint32) layers.LinkType {
	switch {
	case v == 276:
		return linkTypeLinuxSLL2
	case v == uint32(linkTypeLinuxSLL2) || v > 255:
		return linkTypeOther
	}
	return layers.LinkType(v)
}

const supportedLinks = "Ethernet (with VLAN tags), Linux cooked (SLL, SLL2), raw IP, BSD loopback"

func linkSupported(lt layers.LinkType) bool {
	switch lt {
	case layers.LinkTypeEthernet, layers.LinkTypeLinuxSLL, linkTypeLinuxSLL2, layers.LinkTypeRaw,
		linkTypeRawBSD, linkTypeRawAlt, layers.LinkTypeIPv4, layers.LinkTypeNull, layers.LinkTypeLoop:
		return true
	}
	return false
}

const etherTypeIPv4 = 0x0800

// ipv4Of returns the IPv4 packet a frame carries: ok is false for frames
// of other protocols (ARP, IPv6) and for link types replay does not read.
func ipv4Of(lt layers.LinkType, b []byte) (ip []byte, ok bool) {
	switch lt {
	case layers.LinkTypeEthernet:
		if len(b) < 14 {
			return nil, false
		}
		et, off := binary.BigEndian.Uint16(b[12:14]), 14
		// 802.1Q, 802.1ad and the older QinQ tag: up to two.
		for i := 0; i < 2 && (et == 0x8100 || et == 0x88a8 || et == 0x9100); i++ {
			if len(b) < off+4 {
				return nil, false
			}
			et, off = binary.BigEndian.Uint16(b[off+2:off+4]), off+4
		}
		if et != etherTypeIPv4 {
			return nil, false
		}
		return b[off:], true
	case layers.LinkTypeLinuxSLL: // 16-byte header, protocol last
		if len(b) < 16 || binary.BigEndian.Uint16(b[14:16]) != etherTypeIPv4 {
			return nil, false
		}
		return b[16:], true
	case linkTypeLinuxSLL2: // 20-byte header, protocol first
		if len(b) < 20 || binary.BigEndian.Uint16(b[0:2]) != etherTypeIPv4 {
			return nil, false
		}
		return b[20:], true
	case layers.LinkTypeRaw, linkTypeRawBSD, linkTypeRawAlt, layers.LinkTypeIPv4:
		if len(b) < 1 || b[0]>>4 != 4 {
			return nil, false
		}
		return b, true
	case layers.LinkTypeNull, layers.LinkTypeLoop:
		// A 4-byte address family, in the writer's byte order (Null) or
		// network order (Loop); AF_INET is 2 everywhere.
		if len(b) < 4 || (binary.LittleEndian.Uint32(b) != 2 && binary.BigEndian.Uint32(b) != 2) {
			return nil, false
		}
		return b[4:], true
	}
	return nil, false
}

// Detect tells a capture from a decision log by its first bytes, without
// consuming them (a gzipped input is unwrapped first): read the input on
// from the returned reader. It is how Run tells them apart.
func Detect(r io.Reader) (Format, io.Reader, error) {
	f, br, err := detect(bufio.NewReaderSize(r, 1<<16))
	if err != nil {
		return 0, nil, err
	}
	return f, br, nil
}
