package replay

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/egressd/egressd/internal/pcapgen"
)

// allowedFlow returns the IPv4 packets of one TLS flow to an allowed name:
// SYN, SYN-ACK, ACK, the ClientHello.
func allowedFlow(t testing.TB) [][]byte {
	t.Helper()
	c, s := ap(client, clientPort()), ap(server, 443)
	h := hello(t, "allowed.example.test")
	return [][]byte{
		pcapgen.TCP(c, s, 1, 100, 0, pcapgen.SYN, nil),
		pcapgen.TCP(s, c, 1, 900, 101, pcapgen.SYN|pcapgen.ACK, nil),
		pcapgen.TCP(c, s, 2, 101, 901, pcapgen.ACK, nil),
		pcapgen.TCP(c, s, 3, 101, 901, pcapgen.ACK|pcapgen.PSH, h),
	}
}

// classic writes a pcap file by hand, for link types and byte orders
// pcapgo's writer does not produce.
func classic(link uint32, big bool, frames [][]byte) []byte { return classicSnap(link, big, frames, 0) }

// classicSnap is classic with each frame cut to snap bytes (0: whole), as
// tcpdump -s writes them.
func classicSnap(link uint32, big bool, frames [][]byte, snap int) []byte {
	var order binary.AppendByteOrder = binary.LittleEndian
	if big {
		order = binary.BigEndian
	}
	b := order.AppendUint32(nil, 0xa1b2c3d4) // microseconds
	b = order.AppendUint16(b, 2)
	b = order.AppendUint16(b, 4)
	b = append(b, make([]byte, 8)...)
	b = order.AppendUint32(b, 65535)
	b = order.AppendUint32(b, link)
	ts := start
	for _, f := range frames {
		n := len(f)
		if snap > 0 {
			n = min(n, snap)
		}
		b = order.AppendUint32(b, uint32(ts.Unix()))
		b = order.AppendUint32(b, uint32(ts.Nanosecond()/1000))
		b = order.AppendUint32(b, uint32(n))
		b = order.AppendUint32(b, uint32(len(f)))
		b = append(b, f[:n]...)
		ts = ts.Add(time.Millisecond)
	}
	return b
}

func wrap(prefix []byte, packets [][]byte) [][]byte {
	var out [][]byte
	for _, p := range packets {
		out = append(out, append(append([]byte(nil), prefix...), p...))
	}
	return out
}

var (
	ethHeader  = []byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00}
	vlanHeader = []byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x81, 0x00, 0x00, 0x07, 0x08, 0x00}
	qinqHeader = []byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x88, 0xa8, 0x00, 0x07, 0x81, 0x00, 0x00, 0x09, 0x08, 0x00}
	sllHeader  = []byte{0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00}
	sll2Header = []byte{0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0}
)

func TestLinkLayersAndFormats(t *testing.T) {
	pol := mustPolicy(t, testPolicy)
	ng := func(t *testing.T, lt layers.LinkType, frames [][]byte) []byte {
		var buf bytes.Buffer
		w, err := pcapgo.NewNgWriter(&buf, lt)
		must(t, err)
		for i, f := range frames {
			must(t, w.WritePacket(gopacket.CaptureInfo{Timestamp: start.Add(time.Duration(i) * time.Millisecond), CaptureLength: len(f), Length: len(f)}, f))
		}
		must(t, w.Flush())
		return buf.Bytes()
	}
	for _, tc := range []struct {
		name   string
		format Format
		file   func(t *testing.T) []byte
	}{
		{"pcap, Ethernet, little-endian", FormatPcap, func(t *testing.T) []byte { return classic(1, false, wrap(ethHeader, allowedFlow(t))) }},
		{"pcap, Ethernet, big-endian", FormatPcap, func(t *testing.T) []byte { return classic(1, true, wrap(ethHeader, allowedFlow(t))) }},
		{"pcap, 802.1Q tag", FormatPcap, func(t *testing.T) []byte { return classic(1, false, wrap(vlanHeader, allowedFlow(t))) }},
		{"pcap, 802.1ad + 802.1Q tags", FormatPcap, func(t *testing.T) []byte { return classic(1, false, wrap(qinqHeader, allowedFlow(t))) }},
		{"pcap, Linux cooked (tcpdump -i any)", FormatPcap, func(t *testing.T) []byte { return classic(113, false, wrap(sllHeader, allowedFlow(t))) }},
		{"pcap, Linux cooked v2", FormatPcap, func(t *testing.T) []byte { return classic(276, false, wrap(sll2Header, allowedFlow(t))) }},
		{"pcap, raw IP (101)", FormatPcap, func(t *testing.T) []byte { return classic(101, false, allowedFlow(t)) }},
		{"pcap, raw IP (DLT 12)", FormatPcap, func(t *testing.T) []byte { return classic(12, false, allowedFlow(t)) }},
		{"pcap, IPv4 (228)", FormatPcap, func(t *testing.T) []byte { return classic(228, false, allowedFlow(t)) }},
		{"pcap, BSD loopback (Null)", FormatPcap, func(t *testing.T) []byte { return classic(0, false, wrap([]byte{2, 0, 0, 0}, allowedFlow(t))) }},
		{"pcap, OpenBSD loopback (Loop)", FormatPcap, func(t *testing.T) []byte { return classic(108, false, wrap([]byte{0, 0, 0, 2}, allowedFlow(t))) }},
		{"pcapng, Ethernet", FormatPcapNG, func(t *testing.T) []byte { return ng(t, layers.LinkTypeEthernet, wrap(ethHeader, allowedFlow(t))) }},
		{"pcapng, Linux cooked", FormatPcapNG, func(t *testing.T) []byte { return ng(t, layers.LinkTypeLinuxSLL, wrap(sllHeader, allowedFlow(t))) }},
		{"pcapng, two interfaces of different link types", FormatPcapNG, func(t *testing.T) []byte {
			var buf bytes.Buffer
			w, err := pcapgo.NewNgWriter(&buf, layers.LinkTypeEthernet)
			must(t, err)
			sll, err := w.AddInterface(pcapgo.NgInterface{Name: "any", LinkType: layers.LinkTypeLinuxSLL, SnapLength: 262144})
			must(t, err)
			for i, p := range allowedFlow(t) {
				ci := gopacket.CaptureInfo{Timestamp: start.Add(time.Duration(i) * time.Millisecond)}
				f := append(append([]byte(nil), ethHeader...), p...)
				if i%2 == 1 {
					ci.InterfaceIndex, f = sll, append(append([]byte(nil), sllHeader...), p...)
				}
				ci.CaptureLength, ci.Length = len(f), len(f)
				must(t, w.WritePacket(ci, f))
			}
			must(t, w.Flush())
			return buf.Bytes()
		}},
		{"gzipped pcap", FormatPcap, func(t *testing.T) []byte {
			var buf bytes.Buffer
			z := gzip.NewWriter(&buf)
			z.Write(classic(1, false, wrap(ethHeader, allowedFlow(t))))
			must(t, z.Close())
			return buf.Bytes()
		}},
		{"gzipped pcapng", FormatPcapNG, func(t *testing.T) []byte {
			var buf bytes.Buffer
			z := gzip.NewWriter(&buf)
			z.Write(ng(t, layers.LinkTypeEthernet, wrap(ethHeader, allowedFlow(t))))
			must(t, z.Close())
			return buf.Bytes()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lines, sum := replayBytes(t, tc.file(t), pol, nil, Options{})
			want := []want{{Dst: "203.0.113.10", Dport: 443, Name: "allowed.example.test", NameFrom: "sni", Verdict: "allow", Rule: "web", Reason: "rule", DNSCheck: "skipped"}}
			if d := cmp.Diff(want, brief(lines)); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
			if sum.Format != tc.format || sum.Packets != 4 || sum.NotIPv4 != 0 {
				t.Errorf("summary: %+v", sum)
			}
		})
	}
}

func TestInputErrors(t *testing.T) {
	pol := mustPolicy(t, testPolicy)
	flow := wrap(ethHeader, allowedFlow(t))
	whole := classic(1, false, flow)
	for _, tc := range []struct {
		name    string
		in      []byte
		wantErr error  // nil: replayed, with a summary
		errText string // when wantErr is nil but an error is expected
		check   func(t *testing.T, s *Summary)
	}{
		{name: "empty", in: nil, wantErr: ErrFormat},
		{name: "text", in: []byte("hello, this is not a capture\n"), wantErr: ErrFormat},
		{name: "pcap header only", in: whole[:24], check: func(t *testing.T, s *Summary) {
			if s.Packets != 0 || s.Flows != 0 {
				t.Errorf("%+v", s)
			}
		}},
		{name: "cut inside the last packet", in: whole[:len(whole)-10], check: func(t *testing.T, s *Summary) {
			if !s.TruncatedEnd || s.Packets != 3 {
				t.Errorf("%+v", s)
			}
		}},
		{name: "an unsupported link type", in: classic(105, false, flow), errText: "link type 105 is not supported"},
		{name: "a link type past 255", in: classic(257, false, flow), errText: "not supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			sum, err := Run(bytes.NewReader(tc.in), &out, pol, nil, Options{})
			switch {
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("error %v, want %v", err, tc.wantErr)
				}
			case tc.errText != "":
				if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.errText)) {
					t.Fatalf("error %v, want one saying %q", err, tc.errText)
				}
			case err != nil:
				t.Fatalf("error %v", err)
			}
			if tc.check != nil {
				tc.check(t, sum)
			}
		})
	}
}

// TestIPLayer: fragments are reassembled, checksums are checked only when
// asked, and a snap length that cut the hello is said on the line.
func TestIPLayer(t *testing.T) {
	pol := mustPolicy(t, testPolicy)
	helloSegment := func(t *testing.T) (syn, data []byte) {
		c, s := ap(client, clientPort()), ap(server, 443)
		return pcapgen.TCP(c, s, 1, 100, 0, pcapgen.SYN, nil),
			pcapgen.TCP(c, s, 7, 101, 901, pcapgen.ACK|pcapgen.PSH, hello(t, "allowed.example.test"))
	}
	allowed := []want{{Dst: "203.0.113.10", Dport: 443, Name: "allowed.example.test", NameFrom: "sni", Verdict: "allow", Rule: "web", Reason: "rule", DNSCheck: "skipped"}}
	for _, tc := range []struct {
		name    string
		opts    Options
		packets func(t *testing.T) [][]byte
		snap    int
		want    []want
		check   func(t *testing.T, s *Summary)
	}{{
		name: "fragments, out of order, reassembled",
		packets: func(t *testing.T) [][]byte {
			syn, data := helloSegment(t)
			data[6] &^= 0x40 // clear DF to fragment it
			fr := pcapgen.Fragment(data, 512)
			if len(fr) < 3 {
				t.Fatalf("%d fragments", len(fr))
			}
			return append([][]byte{syn, fr[len(fr)-1]}, fr[:len(fr)-1]...)
		},
		opts: Options{VerifyChecksums: true},
		want: allowed,
		check: func(t *testing.T, s *Summary) {
			if s.Fragments < 3 || s.Reassembled != 1 || s.FragmentsDropped != 0 {
				t.Errorf("%+v", s.Counts)
			}
		},
	}, {
		name: "a fragment lost: the hello never arrives",
		packets: func(t *testing.T) [][]byte {
			syn, data := helloSegment(t)
			data[6] &^= 0x40
			fr := pcapgen.Fragment(data, 512)
			return append([][]byte{syn}, fr[1:]...)
		},
		want: []want{{Dst: "203.0.113.10", Dport: 443, NameFrom: "none", Replay: "capture-ended"}},
		check: func(t *testing.T, s *Summary) {
			if s.Reassembled != 0 {
				t.Errorf("%+v", s.Counts)
			}
		},
	}, {
		name: "a bad TCP checksum passes by default (offloaded checksums)",
		packets: func(t *testing.T) [][]byte {
			syn, data := helloSegment(t)
			data[36] ^= 0xff
			return [][]byte{syn, data}
		},
		want: allowed,
	}, {
		name: "a bad TCP checksum is dropped with --verify-checksums",
		opts: Options{VerifyChecksums: true},
		packets: func(t *testing.T) [][]byte {
			syn, data := helloSegment(t)
			data[36] ^= 0xff
			return [][]byte{syn, data}
		},
		want: []want{{Dst: "203.0.113.10", Dport: 443, NameFrom: "none", Replay: "capture-ended"}},
		check: func(t *testing.T, s *Summary) {
			if s.BadChecksum != 1 {
				t.Errorf("%+v", s.Counts)
			}
		},
	}, {
		name: "a bad IPv4 header checksum is dropped with --verify-checksums",
		opts: Options{VerifyChecksums: true},
		packets: func(t *testing.T) [][]byte {
			syn, data := helloSegment(t)
			syn[10] ^= 0xff
			return [][]byte{syn, data}
		},
		// Without its SYN the flow is midstream.
		want: []want{{Dst: "203.0.113.10", Dport: 443, NameFrom: "none", Replay: "midstream"}},
	}, {
		name: "a snap length that cut the hello",
		snap: 96,
		packets: func(t *testing.T) [][]byte {
			syn, data := helloSegment(t)
			return [][]byte{syn, data}
		},
		want: []want{{Dst: "203.0.113.10", Dport: 443, NameFrom: "none", Replay: "truncated"}},
		check: func(t *testing.T, s *Summary) {
			if s.Cut != 1 || s.Truncated != 1 {
				t.Errorf("%+v", s)
			}
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			in := classicSnap(1, false, wrap(ethHeader, tc.packets(t)), tc.snap)
			lines, sum := replayBytes(t, in, pol, nil, tc.opts)
			if d := cmp.Diff(tc.want, brief(lines)); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
			if tc.check != nil {
				tc.check(t, sum)
			}
		})
	}
}
