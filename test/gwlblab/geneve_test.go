package gwlblab

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/inetsum"
	"github.com/egressd/egressd/pkg/gwlb"
	"github.com/egressd/egressd/test/lab"
)

func udpKey(src string, sport int) gwlb.Key {
	return gwlb.Key{Src: netip.MustParseAddr(src).As4(), Dst: netip.MustParseAddr(lab.CIDRAddr).As4(),
		SrcPort: uint16(sport), DstPort: lab.UDPEchoPort, Proto: 17}
}

// TestCookie: a reply carries the flow's header byte for byte (the fake
// refuses any other), for clients behind either endpoint; a 5-tuple
// reused after the load balancer forgot it gets a new cookie, and the
// target answers under the new one from its next packet on; a reply
// forged with the old cookie is refused and never reaches the client.
// One-arm: the echo sees the client's own address.
func TestCookie(t *testing.T) {
	g := start(t, "one-arm", 2, lab.GWLBTargetOptions{})
	for _, src := range []string{lab.ClientAddr, lab.GWLBClientB} {
		if got, err := udpFrom(g, src, 40001, []byte("hello "+src), 3*time.Second); err != nil || string(got) != "hello "+src {
			t.Fatalf("UDP echo from %s: %q %v", src, got, err)
		}
	}
	if srcs := g.UDP.Sources(); !slices.Contains(srcs, lab.ClientAddr+":40001") || !slices.Contains(srcs, lab.GWLBClientB+":40001") {
		t.Errorf("one-arm: the echo saw %v, want the clients' own addresses (untranslated)", srcs)
	}
	k := udpKey(lab.ClientAddr, 40001)
	target, cookie, ok := g.Fake.FlowOf(k)
	if !ok {
		t.Fatal("the fake has no flow")
	}
	noRefusals(t, g)

	// The load balancer forgets the flow: same 5-tuple, new cookie.
	g.Fake.ForgetFlows()
	if got, err := udpFrom(g, lab.ClientAddr, 40001, []byte("again"), 3*time.Second); err != nil || string(got) != "again" {
		t.Fatalf("the reused 5-tuple: %q %v (refusals %v)", got, err, g.Fake.Rejects())
	}
	target2, cookie2, _ := g.Fake.FlowOf(k)
	if cookie2 == cookie || target2 != target {
		t.Fatalf("cookie %08x -> %08x, target %d -> %d: want a new cookie on the same target", cookie, cookie2, target, target2)
	}
	noRefusals(t, g)

	// A reply under the old cookie, from the right address and port: the
	// load balancer drops it silently.
	pc, err := g.Client.ListenPacket("udp4", lab.ClientAddr+":40001")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	hdr := gwlb.AppendHeader(nil, gwlb.Header{Proto: gwlb.ProtoIPv4, Endpoint: lab.EndpointA, Attachment: 0x11, Cookie: cookie})
	forged := append(hdr, ipv4UDP(netip.MustParseAddr(lab.CIDRAddr).As4(), netip.MustParseAddr(lab.ClientAddr).As4(), lab.UDPEchoPort, 40001, []byte("forged"))...)
	sport := flowPort(t, g, k)
	tn := g.Targets[target2].NS
	fc, err := tn.ListenPacket("udp4", net.JoinHostPort(g.Targets[target2].Addr, fmt.Sprint(sport)))
	if err != nil {
		t.Fatal(err)
	}
	before := g.Fake.Stats.RejectHeader.Load()
	fc.WriteTo(forged, &net.UDPAddr{IP: net.ParseIP(lab.GWLBFake), Port: gwlb.Port})
	fc.Close()
	pc.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 100)
	if n, _, err := pc.ReadFrom(buf); err == nil {
		t.Errorf("the client got %q under a stale cookie", buf[:n])
	}
	if g.Fake.Stats.RejectHeader.Load() != before+1 {
		t.Errorf("the fake did not refuse the stale cookie (refusals %v)", g.Fake.Rejects())
	}
}

// flowPort is the fake's source port for the flow of k: what a target
// must reply from.
func flowPort(t *testing.T, g *lab.GWLBLab, k gwlb.Key) uint16 {
	t.Helper()
	p, ok := g.Fake.FlowPort(k)
	if !ok {
		t.Fatal("no flow")
	}
	return p
}

func ipv4UDP(src, dst [4]byte, sport, dport uint16, payload []byte) []byte {
	p := make([]byte, 28+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:4], uint16(len(p)))
	p[8], p[9] = 64, 17
	copy(p[12:16], src[:])
	copy(p[16:20], dst[:])
	binary.BigEndian.PutUint16(p[10:12], ^inetsum.Sum(p[:20], 0))
	binary.BigEndian.PutUint16(p[20:22], sport)
	binary.BigEndian.PutUint16(p[22:24], dport)
	binary.BigEndian.PutUint16(p[24:26], uint16(8+len(payload)))
	copy(p[28:], payload)
	binary.BigEndian.PutUint16(p[26:28], ^inetsum.Sum(p[20:], inetsum.Pseudo(src, dst, 17, 8+len(payload))))
	return p
}

// TestMTU: an inner packet of 8,500 bytes crosses the load balancer and a
// target both ways; one of 8,501 is dropped by the load balancer, without
// an ICMP error; and TCP, whose clients would send 8,961-byte segments on
// a 9001-byte link, works because the target clamps the MSS to 8,460.
func TestMTU(t *testing.T) {
	for _, mode := range []string{"one-arm", "two-arm"} {
		t.Run(mode, func(t *testing.T) {
			g := start(t, mode, 2, lab.GWLBTargetOptions{})
			big := bytes.Repeat([]byte("x"), gwlb.MaxInner-28)
			if got, err := udpFrom(g, lab.ClientAddr, 40002, big, 3*time.Second); err != nil || len(got) != len(big) {
				t.Fatalf("an 8500-byte packet: got %d bytes back, %v", len(got), err)
			}
			before := g.Fake.Stats.Oversize.Load()
			if got, err := udpFrom(g, lab.ClientAddr, 40003, append(big, 'y'), time.Second); err == nil {
				t.Errorf("an 8501-byte packet came back: %d bytes", len(got))
			}
			if slices.Contains(g.UDP.Sizes(), len(big)+1) {
				t.Error("an 8501-byte packet reached the server")
			}
			if g.Fake.Stats.Oversize.Load() != before+1 {
				t.Errorf("the fake dropped %d oversize packets, want 1", g.Fake.Stats.Oversize.Load()-before)
			}

			c, err := g.Client.DialContext(ctxT(t, 10*time.Second), "tcp", net.JoinHostPort(lab.CIDRAddr, "22"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			data := make([]byte, 1<<20)
			rand.Read(data)
			go c.Write(data)
			got := make([]byte, len(data))
			if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, data) {
				t.Errorf("1 MiB over TCP through the GENEVE path: %v", err)
			}
			noRefusals(t, g)
		})
	}
}

// TestIPv6Dropped: egressd does not filter IPv6, so IPv6 inside GENEVE is
// dropped by the GENEVE path (counted) and never forwarded, and the rules
// behind it would drop it too: ip6tables FORWARD jumps first to a chain
// that drops everything, and gwlb0 has IPv6 off.
func TestIPv6Dropped(t *testing.T) {
	g := start(t, "one-arm", 2, lab.GWLBTargetOptions{})
	src, dst := netip.MustParseAddr("::ffff:"+lab.ClientAddr).As16(), netip.MustParseAddr("::ffff:"+lab.ServerAddr).As16()
	v6 := make([]byte, 48)
	v6[0] = 0x60
	binary.BigEndian.PutUint16(v6[4:6], 8)
	v6[6], v6[7] = 17, 64
	copy(v6[8:24], src[:])
	copy(v6[24:40], dst[:])
	binary.BigEndian.PutUint16(v6[40:42], 40004)
	binary.BigEndian.PutUint16(v6[42:44], 443)
	binary.BigEndian.PutUint16(v6[44:46], 8)
	accepted := g.Fake.Stats.Accepted.Load()
	for i := range g.Targets {
		g.Fake.Inject(0, i, gwlb.ProtoIPv6, v6)
	}
	for i, tg := range g.Targets {
		deadline := time.Now().Add(3 * time.Second)
		for {
			n, err := g.Metric(i, `egressd_gwlb_dropped_total{reason="ipv6"}`)
			if err == nil && n == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("target %d: ipv6 drops %v (%v), want 1", i, n, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		out, err := lab.Exec(ctxT(t, 5*time.Second), tg.NS, "ip6tables", "-w", "-S")
		if err != nil {
			t.Fatal(err)
		}
		rules := string(out)
		if !strings.Contains(rules, "-A FORWARD -j EGRESSD\n") || !strings.Contains(rules, "-A EGRESSD -j DROP\n") ||
			strings.Index(rules, "-A FORWARD") != strings.Index(rules, "-A FORWARD -j EGRESSD") {
			t.Errorf("target %d: ip6tables FORWARD does not drop everything first:\n%s", i, rules)
		}
		if b, err := os.ReadFile("/proc/sys/net/ipv6/conf/all/forwarding"); err == nil && strings.TrimSpace(string(b)) != "0" {
			t.Logf("the host forwards IPv6 (the namespaces have their own setting)")
		}
		off, err := lab.Exec(ctxT(t, 5*time.Second), tg.NS, "sysctl", "-n", "net.ipv6.conf.gwlb0.disable_ipv6")
		if err != nil || strings.TrimSpace(string(off)) != "1" {
			t.Errorf("target %d: gwlb0 disable_ipv6 = %q %v, want 1", i, off, err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if g.Fake.Stats.Accepted.Load() != accepted {
		t.Error("a target sent something back for an IPv6 packet")
	}
}
