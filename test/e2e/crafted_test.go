package e2e

import (
	"crypto/tls"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/test/lab"
)

func rawClient(t *testing.T, s *setup, dst string, port uint16) *lab.RawTCP {
	t.Helper()
	c, err := s.NewRawTCP(dst, port)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Handshake(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	return c
}

func bySport(port int) func(lab.Decision) bool {
	return func(d lab.Decision) bool { return d.Sport == port }
}

// TestReassembly: a hello cut into segments sent out of order, with a
// retransmission, is read whole; overlapping segments that disagree are
// denied as malformed. Both with the SYN queued (the lab's policy decides
// some SYNs on 443) and with it only logged (namePolicy decides none
// there): either way the stream is read from the true ISN.
func TestReassembly(t *testing.T) {
	for _, pc := range []struct{ name, policy, synSet string }{
		{"SYN queued", labPolicy, "80"},
		{"SYN logged", namePolicy, "80 443"},
	} {
		t.Run(pc.name, func(t *testing.T) {
			s := start(t, pc.policy, lab.Rules{}, lab.EgressdOptions{})
			waitSYNSet(t, s, strings.Fields(pc.synSet)...)
			testReassembly(t, s)
		})
	}
}

func testReassembly(t *testing.T, s *setup) {
	hello := clientHello(t, &tls.Config{ServerName: "allowed.example.test"})
	t.Run("out of order with a retransmission", func(t *testing.T) {
		c := rawClient(t, s, lab.ServerAddr, 443)
		q := len(hello) / 4
		parts := [][2]int{{2 * q, 3 * q}, {0, q}, {3 * q, len(hello)}, {0, q}, {q, 2 * q}}
		for _, p := range parts {
			must(t, c.Send(p[0], hello[p[0]:p[1]]))
			time.Sleep(20 * time.Millisecond)
		}
		d, err := s.E.WaitDecision(bySport(c.SrcPort()), 5*time.Second)
		if err != nil || d.Verdict != "allow" || d.Name != "allowed.example.test" {
			t.Fatalf("decision %s: %v", d, err)
		}
		if r := c.Wait(time.Second); r.Payload == 0 || r.RST {
			t.Fatalf("the server did not answer the reassembled hello: %+v", r)
		}
		if !slices.Contains(s.Servers.SNIs(), "allowed.example.test") {
			t.Errorf("the server did not read the hello: SNIs %q", s.Servers.SNIs())
		}
	})

	t.Run("overlap that disagrees", func(t *testing.T) {
		c := rawClient(t, s, lab.ServerAddr, 443)
		must(t, c.Send(0, hello[:100]))
		lie := append([]byte(nil), hello[50:150]...)
		lie[10] ^= 0xff // byte 60 of the stream, already sent differently
		must(t, c.Send(50, lie))
		must(t, c.SendAll(150, hello[150:]))
		d, err := s.E.WaitDecision(bySport(c.SrcPort()), 5*time.Second)
		if err != nil || d.Verdict != "deny" || d.Reason != "malformed" {
			t.Fatalf("decision %s: %v", d, err)
		}
		if r := c.Wait(time.Second); !r.RST || r.Payload != 0 {
			t.Fatalf("want a reset and no byte from the server: %+v", r)
		}
	})
}

// TestPacketsThatWouldNotArrive: a packet the server would discard cannot
// decide a flow. A bad checksum is INVALID to conntrack and dropped before
// the queue; a mid-stream packet without a handshake likewise; a short TTL
// is raised to 64, so what egressd reads is what the server gets.
func TestPacketsThatWouldNotArrive(t *testing.T) {
	s := start(t, labPolicy, lab.Rules{}, lab.EgressdOptions{})
	allowed := clientHello(t, &tls.Config{ServerName: "allowed.example.test"})
	denied := clientHello(t, &tls.Config{ServerName: "denied.example.test"})

	t.Run("bad checksum", func(t *testing.T) {
		c := rawClient(t, s, lab.ServerAddr, 443)
		must(t, c.SendAll(0, allowed, lab.WithBadChecksum()))
		if d, err := s.E.WaitDecision(bySport(c.SrcPort()), 700*time.Millisecond); err == nil {
			t.Fatalf("a segment with a bad checksum decided the flow: %s", d)
		}
		must(t, c.SendAll(0, denied))
		d, err := s.E.WaitDecision(bySport(c.SrcPort()), 5*time.Second)
		if err != nil || d.Verdict != "deny" || d.Name != "denied.example.test" {
			t.Fatalf("decision %s: %v", d, err)
		}
	})

	t.Run("no handshake", func(t *testing.T) {
		c, err := s.NewRawTCP(lab.ServerAddr, 443)
		if err != nil {
			t.Fatal(err)
		}
		before := s.Servers.Accepted(lab.ServerAddr + ":443")
		must(t, c.SendNoHandshake(allowed[:lab.MSS]))
		if d, err := s.E.WaitDecision(bySport(c.SrcPort()), 700*time.Millisecond); err == nil {
			t.Fatalf("a mid-stream segment reached the engine: %s", d)
		}
		if after := s.Servers.Accepted(lab.ServerAddr + ":443"); after != before {
			t.Errorf("the server accepted a connection from a mid-stream segment")
		}
	})

	t.Run("short TTL", func(t *testing.T) {
		capture, err := s.StartCapture(s.Inet, "i0", "tcp port 443 and src host "+lab.NATPublic)
		if err != nil {
			t.Fatal(err)
		}
		c := rawClient(t, s, lab.ServerAddr, 443)
		// A hello meant to expire before the server, then the real one at
		// the same bytes: the first reaches the server after all, so the
		// second is a retransmission the server discards.
		must(t, c.SendAll(0, allowed, lab.WithTTL(2)))
		d, err := s.E.WaitDecision(bySport(c.SrcPort()), 5*time.Second)
		if err != nil || d.Verdict != "allow" {
			t.Fatalf("decision %s: %v", d, err)
		}
		must(t, c.SendAll(0, denied))
		c.Wait(500 * time.Millisecond)
		pkts, err := capture.Stop()
		if err != nil {
			t.Fatal(err)
		}
		seen := 0
		for _, p := range pkts {
			if p.SrcPort == c.SrcPort() && p.Payload > 0 {
				seen++
				if p.TTL != 63 {
					t.Errorf("a flow-head packet reached the server with TTL %d, want 63 (64 set by the NAT, minus its hop)", p.TTL)
				}
			}
		}
		if seen == 0 {
			t.Fatal("the capture saw no payload of the flow")
		}
		if snis := s.Servers.SNIs(); slices.Contains(snis, "denied.example.test") {
			t.Errorf("the server read the denied name: %q", snis)
		}
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
