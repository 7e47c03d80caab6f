package e2e

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/egressd/egressd/test/lab"
)

// TestQUIC: HTTP/3 through egressd, with quic-go on both ends. The name is
// read from the client's Initial packets (decrypted with keys derived from
// its own connection ID); a denied flow's datagrams are dropped, so the
// client gets no byte back.
func TestQUIC(t *testing.T) {
	s := start(t, labPolicy, lab.Rules{}, lab.EgressdOptions{})
	if err := s.StartQUIC(); err != nil {
		t.Fatal(err)
	}
	for _, v := range []int{1, 2} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		body, err := s.H3Get(ctx, "allowed.example.test", lab.ServerAddr, v)
		cancel()
		if err != nil || body != lab.Body("allowed.example.test", lab.ServerAddr+":443") {
			t.Fatalf("QUIC v%d to an allowed name: %q, %v", v, body, err)
		}
	}
	d, err := s.E.WaitDecision(func(d lab.Decision) bool { return d.Proto == "udp" && d.Name == "allowed.example.test" }, 5*time.Second)
	if err != nil || d.Verdict != "allow" || d.NameFrom != "quic" || d.Dport != 443 || d.Rule != "lab-web" {
		t.Fatalf("allow line %s: %v", d, err)
	}

	before := s.Servers.Accepted(lab.ServerAddr + ":443/udp")
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
	_, err = s.H3Get(ctx, "denied.example.test", lab.ServerAddr, 1)
	cancel()
	if err == nil {
		t.Fatal("QUIC to a denied name succeeded")
	}
	d, err = s.E.WaitDecision(func(d lab.Decision) bool { return d.Proto == "udp" && d.Name == "denied.example.test" }, 5*time.Second)
	if err != nil || d.Verdict != "deny" || d.NameFrom != "quic" || d.Rule != "lab-deny" {
		t.Fatalf("deny line %s: %v", d, err)
	}
	if after := s.Servers.Accepted(lab.ServerAddr + ":443/udp"); after != before {
		t.Errorf("the QUIC server read a hello from a denied flow")
	}

	// Random bytes to UDP 443: neither QUIC nor anything else with a name.
	pc, err := s.Client.ListenPacket("udp", lab.ClientAddr+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	junk := make([]byte, 1200)
	for i := range junk {
		junk[i] = byte(i*7 + 3)
	}
	if _, err := pc.WriteTo(junk, &net.UDPAddr{IP: net.ParseIP(lab.ServerAddr), Port: 443}); err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	d, err = s.E.WaitDecision(func(d lab.Decision) bool { return d.Proto == "udp" && d.Sport == port }, 5*time.Second)
	if err != nil || d.Verdict != "deny" || d.Reason != "not-tls-or-http" {
		t.Fatalf("junk line %s: %v", d, err)
	}
}
