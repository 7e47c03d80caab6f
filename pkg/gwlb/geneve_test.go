package gwlb

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/egressd/egressd/internal/inetsum"
)

// awsHeader is a header as the load balancer sends it (grouped hex):
// base header (Opt Len 8 words, protocol IPv4, VNI 0), then class 0x0108
// type 1 len 2 (endpoint), type 2 len 2 (attachment), type 3 len 1
// (cookie).
const awsHeader = "0800 0800 00000000" +
	" 0108 01 02 0a1b2c3d4e5f6071" +
	" 0108 02 02 0000000000000123" +
	" 0108 03 01 cafe0001"

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ipv4UDP is a minimal IPv4/UDP packet of n bytes in all (n >= 28).
func ipv4UDP(n int, src, dst [4]byte, sport, dport uint16) []byte {
	p := make([]byte, n)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:4], uint16(n))
	p[8], p[9] = 64, 17
	copy(p[12:16], src[:])
	copy(p[16:20], dst[:])
	binary.BigEndian.PutUint16(p[20:22], sport)
	binary.BigEndian.PutUint16(p[22:24], dport)
	binary.BigEndian.PutUint16(p[24:26], uint16(n-20))
	binary.BigEndian.PutUint16(p[10:12], ^inetsum.Sum(p[:20], 0))
	return p
}

func ipv6Packet(payload int) []byte {
	p := make([]byte, 40+payload)
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:6], uint16(payload))
	p[6], p[7] = 17, 64
	return p
}

var (
	client = [4]byte{198, 18, 1, 2}
	server = [4]byte{203, 0, 113, 10}
)

func TestParseAWSHeader(t *testing.T) {
	b := append(unhex(t, awsHeader), ipv4UDP(28, client, server, 40000, 443)...)
	h, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	want := Header{Len: HeaderLen, Proto: ProtoIPv4, Endpoint: 0x0a1b2c3d4e5f6071, Attachment: 0x123, Cookie: 0xcafe0001}
	if diff := cmp.Diff(want, h); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
	if err := CheckInner(h, b[h.Len:]); err != nil {
		t.Errorf("CheckInner: %v", err)
	}
	// The builder writes the same bytes.
	if got := AppendHeader(nil, want); !bytes.Equal(got, b[:HeaderLen]) {
		t.Errorf("AppendHeader = %x, want %x", got, b[:HeaderLen])
	}
	if Overhead != 68 {
		t.Errorf("Overhead = %d, want 68 (AWS's figure)", Overhead)
	}
}

// TestParseRefuses: the adversarial cases, each with the error it must
// give. None may panic, and none may yield a header.
func TestParseRefuses(t *testing.T) {
	valid := unhex(t, awsHeader)
	mod := func(f func(b []byte) []byte) []byte {
		return f(append([]byte(nil), valid...))
	}
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"base header cut", valid[:7], ErrTruncated},
		// Opt Len says 8 words, the datagram holds fewer.
		{"options cut", valid[:HeaderLen-1], ErrTruncated},
		{"option length lies past the options", mod(func(b []byte) []byte { b[8+3] = 0x1f; return b }), ErrOptions},
		{"opt len too short for its options", mod(func(b []byte) []byte { b[0] = 0x07; return b }), ErrOptions},
		{"version 1 (RFC 8926 3.4: drop)", mod(func(b []byte) []byte { b[0] |= 0x40; return b }), ErrVersion},
		{"OAM bit", mod(func(b []byte) []byte { b[1] |= 0x80; return b }), ErrOAM},
		{"protocol Ethernet (0x6558)", mod(func(b []byte) []byte { b[2], b[3] = 0x65, 0x58; return b }), ErrProtocol},
		{"protocol ARP", mod(func(b []byte) []byte { b[2], b[3] = 0x08, 0x06; return b }), ErrProtocol},
		{"no cookie", mod(func(b []byte) []byte { b[0] = 0x06; return b[:HeaderLen-8] }), ErrMissing},
		{"no endpoint", mod(func(b []byte) []byte { b[0] = 0x05; return append(b[:8], b[20:]...) }), ErrMissing},
		{"cookie replaced by an unknown non-critical option", mod(func(b []byte) []byte { b[HeaderLen-8+2] = 0x7f; return b }), ErrMissing},
		{"unknown critical option of AWS's class", mod(func(b []byte) []byte { b[1] |= 0x40; b[HeaderLen-8+2] = 0x84; return b }), ErrCritical},
		{"unknown critical option of another class", mod(func(b []byte) []byte {
			b[1] |= 0x40
			b[HeaderLen-8], b[HeaderLen-8+1], b[HeaderLen-8+2] = 0x01, 0x02, 0x80
			return b
		}), ErrCritical},
		{"critical option without the C bit", mod(func(b []byte) []byte { b[HeaderLen-8+2] = 0x84; return b }), ErrCritical},
		{"C bit without a critical option", mod(func(b []byte) []byte { b[1] |= 0x40; return b }), ErrOptions},
		{"two cookies", mod(func(b []byte) []byte {
			b[0] = 0x0a
			return append(b, 0x01, 0x08, 0x03, 0x01, 0xde, 0xad, 0xbe, 0xef)
		}), ErrOptions},
		{"cookie of 8 bytes", mod(func(b []byte) []byte {
			b[0] = 0x09
			b[HeaderLen-8+3] = 0x02
			return append(b, 0, 0, 0, 0)
		}), ErrOptions},
		{"endpoint of 4 bytes", unhex(t, "0700 0800 00000000 0108 01 01 0a1b2c3d 0108 02 02 0000000000000123 0108 03 01 cafe0001"), ErrOptions},
		{"longer than egressd echoes", mod(func(b []byte) []byte {
			b[0] = 0x3f // 252 bytes of options
			return append(b, make([]byte, 252-32)...)
		}), ErrTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := Parse(tt.b)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Parse = %v, %v; want %v", h, err, tt.want)
			}
			if h != (Header{}) {
				t.Errorf("a refused header came back non-zero: %v", h)
			}
		})
	}
}

func TestParseSkipsNonCriticalOptions(t *testing.T) {
	// An OVN option (class 0x0102, type 0x00, 4 bytes) before AWS's.
	b := unhex(t, "0a00 0800 00000000 0102 00 01 00000001"+awsHeader[len("0800 0800 00000000"):])
	h, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if h.Len != HeaderLen+8 || h.Cookie != 0xcafe0001 {
		t.Errorf("got %v", h)
	}
}

func TestCheckInner(t *testing.T) {
	h4 := Header{Proto: ProtoIPv4}
	h6 := Header{Proto: ProtoIPv6}
	short := ipv4UDP(100, client, server, 1, 2)
	binary.BigEndian.PutUint16(short[2:4], 90)
	options := ipv4UDP(100, client, server, 1, 2)
	options[0] = 0x4f // IHL 60
	tests := []struct {
		name string
		h    Header
		p    []byte
		want error
	}{
		{"IPv4 of 8500 bytes", h4, ipv4UDP(MaxInner, client, server, 1, 2), nil},
		{"IPv4 of 8501 bytes", h4, ipv4UDP(MaxInner+1, client, server, 1, 2), ErrOversize},
		{"IPv6", h6, ipv6Packet(20), nil},
		{"IPv6 labelled IPv4", h4, ipv6Packet(20), ErrProtocol},
		{"IPv4 labelled IPv6", h6, ipv4UDP(40, client, server, 1, 2), ErrProtocol},
		{"empty", h4, nil, ErrInner},
		{"IPv4 header cut", h4, ipv4UDP(40, client, server, 1, 2)[:12], ErrInner},
		{"total length shorter than the packet", h4, short, ErrInner},
		{"IHL past the packet", h4, options[:40], ErrInner},
		{"IHL under 5", h4, func() []byte { p := ipv4UDP(40, client, server, 1, 2); p[0] = 0x44; return p }(), ErrInner},
		{"IPv6 payload length lies", h6, ipv6Packet(20)[:50], ErrInner},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := CheckInner(tt.h, tt.p); !errors.Is(err, tt.want) {
				t.Errorf("CheckInner = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestKeyOf(t *testing.T) {
	p := ipv4UDP(40, client, server, 40000, 443)
	k, ok := KeyOf(p)
	want := Key{Src: client, Dst: server, SrcPort: 40000, DstPort: 443, Proto: 17}
	if !ok || k != want {
		t.Fatalf("KeyOf = %v %v, want %v", k, ok, want)
	}
	if r := k.Reverse(); r.Src != server || r.SrcPort != 443 || r.Reverse() != k {
		t.Errorf("Reverse = %v", r)
	}
	// A fragment after the first has no ports: the 3-tuple.
	binary.BigEndian.PutUint16(p[6:8], 100)
	if k, ok := KeyOf(p); !ok || k.SrcPort != 0 || k.DstPort != 0 {
		t.Errorf("non-first fragment: %v %v", k, ok)
	}
	icmp := ipv4UDP(28, client, server, 1, 2)
	icmp[9] = 1
	if k, ok := KeyOf(icmp); !ok || k.SrcPort != 0 || k.Proto != 1 {
		t.Errorf("ICMP: %v %v", k, ok)
	}
	for _, bad := range [][]byte{nil, p[:19], ipv6Packet(10), p[:22]} {
		binary.BigEndian.PutUint16(p[6:8], 0)
		if _, ok := KeyOf(bad); ok {
			t.Errorf("KeyOf(%x) ok", bad)
		}
	}
}

// FuzzParse: whatever the bytes, Parse and CheckInner do not panic; a
// header Parse accepts lies within the input, has all three options, and
// rebuilt by AppendHeader parses to the same fields.
func FuzzParse(f *testing.F) {
	aws := unhex(f, awsHeader)
	// The load balancer's header over IPv4/UDP and over IPv6.
	f.Add(append(append([]byte(nil), aws...), ipv4UDP(28, client, server, 1, 443)...))
	v6 := append([]byte(nil), aws...)
	v6[2], v6[3] = 0x86, 0xdd
	f.Add(append(v6, ipv6Packet(8)...))
	// RFC 8926 section 3.4's base header alone (Opt Len 0), and with the
	// O and C bits (sections 3.4 and 3.5.1).
	f.Add(unhex(f, "0000 0800 00000000"))
	f.Add(unhex(f, "00c0 0800 00000000"))
	// An option of another class (section 3.5), then AWS's.
	f.Add(unhex(f, "0a00 0800 00000000 0102 00 01 00000001"+awsHeader[len("0800 0800 00000000"):]))
	// A critical option, an option length past the end, a truncation.
	f.Add(unhex(f, "0240 0800 00000000 ffff 80 01 00000000"))
	f.Add(unhex(f, "0100 0800 00000000 0108 03 1f"))
	f.Add(aws[:20])
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := Parse(b)
		if err != nil {
			return
		}
		if h.Len < HeaderLen || h.Len > len(b) || h.Len > MaxHeader {
			t.Fatalf("accepted a header of %d bytes from %d", h.Len, len(b))
		}
		_ = CheckInner(h, b[h.Len:])
		_, _ = KeyOf(b[h.Len:])
		again, err := Parse(AppendHeader(nil, h))
		h.Len = HeaderLen
		if err != nil || again != h {
			t.Fatalf("round trip: %v %v, want %v", again, err, h)
		}
	})
}

func TestParseAllocs(t *testing.T) {
	b := append(unhex(t, awsHeader), ipv4UDP(1400, client, server, 40000, 443)...)
	n := testing.AllocsPerRun(100, func() {
		h, err := Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := CheckInner(h, b[h.Len:]); err != nil {
			t.Fatal(err)
		}
		if _, ok := KeyOf(b[h.Len:]); !ok {
			t.Fatal("no key")
		}
	})
	if n != 0 {
		t.Errorf("Parse, CheckInner, KeyOf: %v allocations per packet, want 0", n)
	}
}

func BenchmarkParse(b *testing.B) {
	pkt := append(unhex(b, awsHeader), ipv4UDP(1400, client, server, 40000, 443)...)
	b.ReportAllocs()
	for range b.N {
		h, _ := Parse(pkt)
		_ = CheckInner(h, pkt[h.Len:])
		_, _ = KeyOf(pkt[h.Len:])
	}
}
