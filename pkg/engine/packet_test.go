package engine

import (
	"errors"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/egressd/egressd/pkg/policy"
)

// ipPacket serialises an IPv4 packet with a TCP or UDP header and payload.
func ipPacket(t testing.TB, transport gopacket.SerializableLayer, payload []byte, mutate func(*layers.IPv4)) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, SrcIP: client.AsSlice(), DstIP: server.AsSlice()}
	switch l := transport.(type) {
	case *layers.TCP:
		ip.Protocol = layers.IPProtocolTCP
		l.SetNetworkLayerForChecksum(ip)
	case *layers.UDP:
		ip.Protocol = layers.IPProtocolUDP
		l.SetNetworkLayerForChecksum(ip)
	}
	if mutate != nil {
		mutate(ip)
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, transport, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestDecode(t *testing.T) {
	d := NewDecoder()
	hello := []byte("\x16\x03\x01 a hello")
	tcp := ipPacket(t, &layers.TCP{SrcPort: 40000, DstPort: 443, Seq: 1000, SYN: false, ACK: true, PSH: true, DataOffset: 5}, hello, nil)
	var p Packet
	if err := d.Decode(tcp, &p); err != nil {
		t.Fatal(err)
	}
	if p.Proto != policy.TCP || p.Src != client || p.Dst != server || p.SrcPort != 40000 || p.DstPort != 443 ||
		p.Seq != 1000 || !p.ACK || p.SYN || string(p.Payload) != string(hello) || p.Truncated {
		t.Errorf("TCP decoded as %+v", p)
	}
	udp := ipPacket(t, &layers.UDP{SrcPort: 5000, DstPort: 443}, []byte("datagram"), nil)
	if err := d.Decode(udp, &p); err != nil || p.Proto != policy.UDP || string(p.Payload) != "datagram" || p.Seq != 0 {
		t.Errorf("UDP decoded as %+v, %v", p, err)
	}
	// The queue's copy range cut the packet: headers read, payload partial.
	if err := d.Decode(tcp[:len(tcp)-4], &p); err != nil || !p.Truncated || p.DstPort != 443 {
		t.Errorf("a truncated packet decoded as %+v, %v", p, err)
	}
	frag := ipPacket(t, &layers.TCP{SrcPort: 1, DstPort: 443, DataOffset: 5}, hello, func(ip *layers.IPv4) { ip.Flags = layers.IPv4MoreFragments })
	if err := d.Decode(frag, &p); !errors.Is(err, ErrFragment) {
		t.Errorf("a fragment: %v", err)
	}
	icmp := ipPacket(t, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0)}, nil, func(ip *layers.IPv4) { ip.Protocol = layers.IPProtocolICMPv4 })
	if err := d.Decode(icmp, &p); !errors.Is(err, ErrNotTransport) {
		t.Errorf("ICMP: %v", err)
	}
	if err := d.Decode([]byte{0x60, 0, 0, 0}, &p); !errors.Is(err, ErrNotIPv4) {
		t.Errorf("IPv6: %v", err)
	}
	if n := testing.AllocsPerRun(100, func() { d.Decode(tcp, &p) }); n != 0 {
		t.Errorf("Decode allocates %v times per packet", n)
	}
}

// TestTruncatedFlowHead: a packet cut by the queue's copy range (a large
// GRO or GSO packet) is read as far as it goes: a head complete within the
// copied part is decided; one that goes on past the cut is denied.
func TestTruncatedFlowHead(t *testing.T) {
	h := newHarness(t, labPolicy, nil)
	f := h.tcp(server, 443)
	f.syn()
	p := f.packet(false, f.isn+1, clientHello(t, "allowed.example.test")[:300])
	p.Truncated = true
	h.s.Handle(p)
	h.wantVerdict(p.ID, policy.Deny)
	h.wantLine("deny", "", "limit", "", "none")

	f = h.tcp(server, 80)
	f.syn()
	p = f.packet(false, f.isn+1, []byte("POST /upload HTTP/1.1\r\nHost: allowed.example.test\r\nContent-Length: 100000\r\n\r\nbody bytes, cut"))
	p.Truncated = true
	h.s.Handle(p)
	h.wantVerdict(p.ID, policy.Allow)
	h.wantLine("allow", "web", "rule", "allowed.example.test", "host")
}

// FuzzDecode: whatever the queue hands over, Decode returns a packet or an
// error, never panics, and a decoded payload lies within the input.
func FuzzDecode(f *testing.F) {
	f.Add(ipPacket(f, &layers.TCP{SrcPort: 40000, DstPort: 443, Seq: 7, SYN: true, DataOffset: 5}, nil, nil))               // a SYN
	f.Add(ipPacket(f, &layers.TCP{SrcPort: 40000, DstPort: 443, ACK: true, DataOffset: 5}, []byte("\x16\x03\x01..."), nil)) // data
	f.Add(ipPacket(f, &layers.UDP{SrcPort: 5353, DstPort: 443}, []byte("quic?"), nil))                                      // a datagram
	f.Add([]byte{0x45, 0, 0, 20, 0, 0, 0x20, 0, 64, 6, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8})                                       // a bare fragment
	f.Add([]byte{0x4f, 0, 0xff, 0xff})                                                                                      // options longer than the packet
	d := NewDecoder()
	f.Fuzz(func(t *testing.T, data []byte) {
		var p Packet
		if err := d.Decode(data, &p); err != nil {
			return
		}
		if len(p.Payload) > len(data) {
			t.Fatalf("payload of %d bytes from %d bytes of input", len(p.Payload), len(data))
		}
	})
}
