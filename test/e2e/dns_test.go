package e2e

import (
	"context"
	"crypto/tls"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/test/lab"
)

// dnsPolicy adds rules whose names the resolver must tie to addresses.
const dnsPolicy = labRules + `
  - {name: rotating, domains: [rotating.example.test], ports: [443], action: allow}
  - {name: wild, domains: ["*.wild.example.test"], ports: [443], action: allow}
` + labTests

func tlsHandshake(t *testing.T, s *setup, addr, name string) (lab.Decision, error) {
	t.Helper()
	c := dial(t, s, addr)
	tc := tls.Client(c, &tls.Config{ServerName: name, RootCAs: s.CA.Pool})
	tc.SetDeadline(time.Now().Add(8 * time.Second))
	err := tc.Handshake()
	d, werr := s.E.WaitDecision(byConn(c), 8*time.Second)
	if werr != nil {
		t.Fatal(werr)
	}
	return d, err
}

// TestDNSVerification: a name is trusted only where DNS says it lives.
func TestDNSVerification(t *testing.T) {
	s := start(t, dnsPolicy, lab.Rules{}, lab.EgressdOptions{})

	t.Run("allowed SNI at its own address", func(t *testing.T) {
		d, err := tlsHandshake(t, s, lab.ServerAddr+":443", "allowed.example.test")
		if err != nil || d.Verdict != "allow" || d.DNSCheck != "verified" {
			t.Fatalf("handshake %v, decision %s", err, d)
		}
	})
	t.Run("allowed SNI sent to another server", func(t *testing.T) {
		d, err := tlsHandshake(t, s, lab.OtherAddr+":443", "allowed.example.test")
		if err == nil || d.Verdict != "deny" || d.Reason != "dns-mismatch" || d.Name != "allowed.example.test" {
			t.Fatalf("handshake %v, decision %s", err, d)
		}
	})
	t.Run("HTTP Host spoofed to another server", func(t *testing.T) {
		c := dial(t, s, lab.OtherAddr+":80")
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: allowed.example.test\r\n\r\n")
		d, err := s.E.WaitDecision(byConn(c), 5*time.Second)
		if err != nil || d.Verdict != "deny" || d.Reason != "dns-mismatch" || d.NameFrom != "host" {
			t.Fatalf("decision %s: %v", d, err)
		}
		wantReset(t, c)
	})
	t.Run("name by address on a port without a name", func(t *testing.T) {
		c := dial(t, s, lab.ServerAddr+":22") // ssh.allowed.test resolves here
		d, err := s.E.WaitDecision(byConn(c), 5*time.Second)
		if err != nil || d.Verdict != "allow" || d.NameFrom != "dns" || d.Name != "ssh.allowed.test" || d.Rule != "lab-ssh-by-name" {
			t.Fatalf("decision %s: %v", d, err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "x")
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatalf("echo on the allowed port-22 flow: %v", err)
		}
		// Another address: no literal name of the rule resolves there.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := s.Client.DialContext(ctx, "tcp", lab.CIDRAddr+":23"); err == nil {
			t.Fatal("port 23 to an unlisted address connected")
		}
	})
	t.Run("round-robin answers rotating every second", func(t *testing.T) {
		// The name's answer changes every second, as behind a DNS load
		// balancer with TTL 1. The client resolves, then connects to what
		// it got; egressd must verify both the new address (asking again
		// on a miss) and the one of the second before (kept until its TTL).
		addrs := []netip.Addr{netip.MustParseAddr(lab.ServerAddr), netip.MustParseAddr(lab.OtherAddr)}
		flip := func(i int) { s.DNS.SetAddrs("rotating.example.test", 1, addrs[i%2]) }
		flip(0)
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 1; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(time.Second):
					flip(i)
				}
			}
		}()
		defer func() { close(stop); <-done }()
		var previous netip.Addr
		for i := 0; i < 8; i++ {
			current := resolveA(t, s, "rotating.example.test")
			for _, a := range []netip.Addr{current, previous} {
				if !a.IsValid() {
					continue
				}
				d, err := tlsHandshake(t, s, a.String()+":443", "rotating.example.test")
				if err != nil || d.Verdict != "allow" {
					t.Fatalf("round %d, to %s (current %s): handshake %v, decision %s", i, a, current, err, d)
				}
			}
			previous = current
			time.Sleep(500 * time.Millisecond)
		}
	})
	t.Run("resolver down", func(t *testing.T) {
		s.DNS.SetAddrs("a.wild.example.test", lab.DefaultTTL, netip.MustParseAddr(lab.ServerAddr))
		s.DNS.SetDrop(true) // the resolver stops answering
		defer s.DNS.SetDrop(false)
		d, err := tlsHandshake(t, s, lab.ServerAddr+":443", "a.wild.example.test")
		if err == nil || d.Verdict != "deny" || d.Reason != "dns-error" {
			t.Fatalf("handshake %v, decision %s", err, d)
		}
	})
	t.Run("resolver fails (SERVFAIL)", func(t *testing.T) {
		s.DNS.SetAddrs("b.wild.example.test", lab.DefaultTTL, netip.MustParseAddr(lab.ServerAddr))
		s.DNS.SetServFail(true)
		defer s.DNS.SetServFail(false)
		d, err := tlsHandshake(t, s, lab.ServerAddr+":443", "b.wild.example.test")
		if err == nil || d.Verdict != "deny" || d.Reason != "dns-error" {
			t.Fatalf("handshake %v, decision %s", err, d)
		}
	})
	t.Run("a name under a wildcard, resolved on demand", func(t *testing.T) {
		s.DNS.SetAddrs("c.wild.example.test", lab.DefaultTTL, netip.MustParseAddr(lab.ServerAddr))
		d, err := tlsHandshake(t, s, lab.ServerAddr+":443", "c.wild.example.test")
		if err != nil || d.Verdict != "allow" || d.Rule != "wild" {
			t.Fatalf("handshake %v, decision %s", err, d)
		}
	})
}

// TestVerifyDNSDisabled: with verify_dns off, names are taken on trust,
// and the decision line says so.
func TestVerifyDNSDisabled(t *testing.T) {
	s := start(t, labPolicy, lab.Rules{}, lab.EgressdOptions{Env: []string{"EGRESSD_VERIFY_DNS_ENABLED=false"}})
	d, err := tlsHandshake(t, s, lab.OtherAddr+":443", "allowed.example.test")
	if err != nil || d.Verdict != "allow" || d.DNSCheck != "trusted" {
		t.Fatalf("handshake %v, decision %s", err, d)
	}
	if !strings.Contains(s.E.Logs(), "verify_dns is disabled") {
		t.Errorf("no log line says names are taken on trust:\n%s", s.E.Logs())
	}

}

// resolveA asks the lab's DNS server for name's A record, as a client
// would before connecting.
func resolveA(t *testing.T, s *setup, name string) netip.Addr {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	q, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.DNS.Exchange(context.Background(), "", q)
	if err != nil {
		t.Fatal(err)
	}
	var r dns.Msg
	if err := r.Unpack(resp); err != nil {
		t.Fatal(err)
	}
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			addr, _ := netip.AddrFromSlice(a.A.To4())
			return addr
		}
	}
	t.Fatalf("no A record for %s", name)
	return netip.Addr{}
}
