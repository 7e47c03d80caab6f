package gwlb

import (
	"bytes"
	"io"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/egressd/egressd/internal/inetsum"
)

func pathFor(cookie uint32, lbPort uint16) *Path {
	p := &Path{LB: [4]byte{198, 18, 2, 1}, Local: [4]byte{198, 18, 2, 11}, LBPort: lbPort, LocalPort: Port, Endpoint: 0xa}
	h := AppendHeader(nil, Header{Proto: ProtoIPv4, Endpoint: 0xa, Attachment: 0xb, Cookie: cookie})
	p.HeaderLen = uint8(copy(p.Header[:], h))
	return p
}

func TestCacheLearnLookup(t *testing.T) {
	c := NewCache(4, 350*time.Second, 120*time.Second)
	k := Key{Src: client, Dst: server, SrcPort: 40000, DstPort: 443, Proto: 6}
	var got Path
	if c.Lookup(k, &got) {
		t.Fatal("found a flow never learnt: an appliance cannot start flows")
	}
	now := time.Now().UnixNano()
	if !c.Learn(k, pathFor(1, 5000), now) {
		t.Fatal("Learn refused")
	}
	// The same direction (one-arm) and the reverse (two-arm's replies).
	for _, q := range []Key{k, k.Reverse()} {
		if !c.Lookup(q, &got) || got != *pathFor(1, 5000) {
			t.Errorf("Lookup(%v) = %v", q, got)
		}
	}
	// A reused 5-tuple with a new cookie and source port: the next packet
	// in replaces the path, the old cookie is never sent again.
	c.Learn(k, pathFor(2, 5001), now+1)
	if !c.Lookup(k.Reverse(), &got) || !bytes.Equal(got.Bytes(), pathFor(2, 5001).Bytes()) || got.LBPort != 5001 {
		t.Errorf("after a new cookie: %x port %d", got.Bytes(), got.LBPort)
	}
	if c.Len() != 1 {
		t.Errorf("Len = %d, want 1", c.Len())
	}
	// Each direction that comes in is its own entry; the own one wins.
	c.Learn(k.Reverse(), pathFor(3, 5002), now+2)
	if c.Lookup(k.Reverse(), &got); got.LBPort != 5002 {
		t.Errorf("reverse's own path: port %d, want 5002", got.LBPort)
	}
}

func TestCacheBoundAndExpiry(t *testing.T) {
	c := NewCache(2, 350*time.Second, 120*time.Second)
	now := time.Now().UnixNano()
	tcp := Key{Src: client, Dst: server, SrcPort: 1, DstPort: 443, Proto: 6}
	udp := Key{Src: client, Dst: server, SrcPort: 1, DstPort: 443, Proto: 17}
	other := Key{Src: client, Dst: server, SrcPort: 2, DstPort: 443, Proto: 17}
	c.Learn(tcp, pathFor(1, 1), now)
	c.Learn(udp, pathFor(2, 1), now)
	if c.Learn(other, pathFor(3, 1), now) {
		t.Fatal("learnt past the bound")
	}
	if c.Full() != 1 {
		t.Errorf("Full = %d, want 1", c.Full())
	}
	// After 200 s the UDP flow is gone (120 s), the TCP flow stays (350 s).
	if n := c.Expire(now + int64(200*time.Second)); n != 1 {
		t.Errorf("Expire forgot %d, want 1", n)
	}
	var p Path
	if c.Lookup(udp, &p) || !c.Lookup(tcp, &p) {
		t.Error("wrong flow expired")
	}
	// Its entry is free again.
	if !c.Learn(other, pathFor(3, 1), now) {
		t.Error("a freed entry was not reused")
	}
	if n := c.Expire(now + int64(time.Hour)); n != 2 || c.Len() != 0 {
		t.Errorf("Expire forgot %d, Len %d", n, c.Len())
	}
}

func TestCacheConcurrent(t *testing.T) {
	c := NewCache(1024, time.Minute, time.Minute)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var p Path
			for i := range 2000 {
				k := Key{Src: client, Dst: server, SrcPort: uint16(i % 300), DstPort: uint16(w), Proto: 17}
				c.Learn(k, pathFor(uint32(i), uint16(w)), int64(i))
				c.Lookup(k.Reverse(), &p)
				if i%500 == 0 {
					c.Expire(int64(i))
				}
			}
		}()
	}
	wg.Wait()
}

func TestCacheAllocs(t *testing.T) {
	c := NewCache(64, time.Minute, time.Minute)
	k := Key{Src: client, Dst: server, SrcPort: 40000, DstPort: 443, Proto: 6}
	p1, p2 := pathFor(1, 5000), pathFor(2, 5000)
	var got Path
	i := 0
	n := testing.AllocsPerRun(200, func() {
		i++
		p := p1
		if i%2 == 0 {
			p = p2
		}
		c.Learn(k, p, int64(i))
		c.Lookup(k.Reverse(), &got)
		if i%10 == 0 {
			c.Expire(int64(i) + int64(time.Hour)) // forget it: the next Learn inserts again
		}
	})
	if n != 0 {
		t.Errorf("Learn, Lookup, Expire: %v allocations, want 0", n)
	}
}

// TestEncap: the datagram Encap builds decodes (gopacket) as IPv4/UDP to
// and from the right addresses and ports, with valid checksums, the
// GENEVE header byte for byte, and the inner packet untouched.
func TestEncap(t *testing.T) {
	inner := ipv4UDP(1000, client, server, 40000, 443)
	p := pathFor(0xcafe0001, 51234)
	buf := make([]byte, Headroom+MaxInner)
	copy(buf[Headroom:], inner)
	pkt := Encap(buf, len(inner), p.Bytes(), p.Reply(7))
	if len(pkt) != len(inner)+Overhead {
		t.Fatalf("datagram of %d bytes, want %d", len(pkt), len(inner)+Overhead)
	}
	dec := gopacket.NewPacket(pkt, layers.LayerTypeIPv4, gopacket.Default)
	ip, _ := dec.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	udp, _ := dec.Layer(layers.LayerTypeUDP).(*layers.UDP)
	if ip == nil || udp == nil {
		t.Fatalf("not IPv4/UDP: %v", dec)
	}
	if !ip.SrcIP.Equal(p.Local[:]) || !ip.DstIP.Equal(p.LB[:]) {
		t.Errorf("addresses %v -> %v, want swapped: %v -> %v", ip.SrcIP, ip.DstIP, p.Local, p.LB)
	}
	if udp.SrcPort != 51234 || udp.DstPort != Port {
		t.Errorf("ports %d -> %d, want the load balancer's source port kept: 51234 -> 6081", udp.SrcPort, udp.DstPort)
	}
	if inetsum.Sum(pkt[:20], 0) != 0xffff {
		t.Error("bad IPv4 header checksum")
	}
	if inetsum.Sum(pkt[20:], inetsum.Pseudo(p.Local, p.LB, 17, len(pkt)-20)) != 0xffff {
		t.Error("bad UDP checksum")
	}
	if !bytes.Equal(pkt[28:28+HeaderLen], p.Bytes()) || !bytes.Equal(pkt[Overhead:], inner) {
		t.Error("GENEVE header or inner packet changed")
	}
	// gopacket's own GENEVE decoder agrees with Parse.
	g, _ := dec.Layer(layers.LayerTypeGeneve).(*layers.Geneve)
	h, err := Parse(pkt[28:])
	if g == nil || err != nil || len(g.Options) != 3 || h.Cookie != 0xcafe0001 || g.Protocol != layers.EthernetTypeIPv4 {
		t.Errorf("gopacket %+v, Parse %v %v", g, h, err)
	}
	if n := testing.AllocsPerRun(100, func() { Encap(buf, len(inner), p.Bytes(), p.Reply(7)) }); n != 0 {
		t.Errorf("Encap: %v allocations", n)
	}
}

func BenchmarkCache(b *testing.B) {
	c := NewCache(65536, time.Minute, time.Minute)
	k := Key{Src: client, Dst: server, SrcPort: 40000, DstPort: 443, Proto: 6}
	p := pathFor(1, 5000)
	var got Path
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		c.Learn(k, p, int64(i))
		c.Lookup(k.Reverse(), &got)
	}
}

func BenchmarkEncap(b *testing.B) {
	for _, size := range []int{64, 1500, MaxInner} {
		b.Run(byteSize(size), func(b *testing.B) {
			inner := ipv4UDP(size, client, server, 40000, 443)
			p := pathFor(1, 5000)
			buf := make([]byte, Headroom+MaxInner)
			copy(buf[Headroom:], inner)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for range b.N {
				Encap(buf, size, p.Bytes(), p.Reply(1))
			}
		})
	}
}

func byteSize(n int) string {
	return map[int]string{64: "64B", 1500: "1500B", MaxInner: "8500B"}[n]
}

// TestDecapAllocs: the whole inbound path of a packet (parse, checks,
// learning its path, the write to the device) allocates nothing.
func TestDecapAllocs(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	go io.Copy(io.Discard, r)
	h := &Handler{cfg: Config{Listen: netip.MustParseAddrPort("0.0.0.0:6081")}, cache: NewCache(16, time.Minute, time.Minute)}
	payload := append(AppendHeader(nil, Header{Proto: ProtoIPv4, Endpoint: 1, Attachment: 2, Cookie: 3}), ipv4UDP(1400, client, server, 1, 2)...)
	var path Path
	n := testing.AllocsPerRun(100, func() {
		h.decap(payload, [4]byte{198, 18, 2, 1}, 5000, [4]byte{198, 18, 2, 11}, 1, w, &path)
	})
	if n != 0 || h.stats.Decapsulated.Load() == 0 {
		t.Errorf("decap: %v allocations per packet (decapsulated %d), want 0", n, h.stats.Decapsulated.Load())
	}
}
