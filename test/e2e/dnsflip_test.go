package e2e

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/test/lab"
)

// Names whose answers flip within their TTL, as the VPC resolver's fleet of
// caches can give: per query (each query gets what the one before did not)
// and per period of the server's clock.
const flipPolicy = `
version: 1
default: deny
rules:
  - {name: flip, domains: [perquery.flip.test, perperiod.flip.test, stale.flip.test, moved.flip.test], ports: [443], action: allow}
`

var flipAddrs = []netip.Addr{netip.MustParseAddr(lab.ServerAddr), netip.MustParseAddr(lab.OtherAddr)}

// resolveAndConnect is a client that resolves name (its own query to the
// lab's resolver), waits, and connects to the first address it got with
// the name in its hello. It returns the decision and the address.
func resolveAndConnect(t *testing.T, s *setup, name string, wait time.Duration) (lab.Decision, string) {
	t.Helper()
	addrs, err := s.DNS.Lookup(name, dns.TypeA)
	if err != nil || len(addrs) == 0 {
		t.Fatalf("the client's lookup of %s: %v %v", name, addrs, err)
	}
	time.Sleep(wait)
	addr := addrs[0].String()
	c := dial(t, s, net.JoinHostPort(addr, "443"))
	tc := tls.Client(c, &tls.Config{ServerName: name, RootCAs: s.CA.Pool})
	tc.SetDeadline(time.Now().Add(8 * time.Second))
	tc.Handshake()
	d, err := s.E.WaitDecision(byConn(c), 8*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return d, addr
}

// TestDNSFlipNoFalseDenies: 200 clients each resolve a flipping name and
// connect at once to the address they were given, and a few connect ten
// seconds after their answer's TTL ran out (a client's own cache): none may
// be denied. An address the name never had stays denied.
func TestDNSFlipNoFalseDenies(t *testing.T) {
	s := start(t, flipPolicy, lab.Rules{}, lab.EgressdOptions{})
	s.DNS.SetFlip("perquery.flip.test", 60, 0, flipAddrs...)
	s.DNS.SetFlip("perperiod.flip.test", 60, 300*time.Millisecond, flipAddrs...)
	s.DNS.SetFlip("stale.flip.test", 5, 3*time.Second, flipAddrs...)

	var mu sync.Mutex
	var falseDenies []string
	var grace int
	check := func(d lab.Decision, addr string) {
		mu.Lock()
		defer mu.Unlock()
		if d.Verdict != "allow" {
			falseDenies = append(falseDenies, fmt.Sprintf("%s at %s: %s", d.Name, addr, d.Raw))
		}
		if d.DNSCheck == "grace" {
			grace++
		}
	}
	// Clients that keep their answer 10 s past its TTL (5 s, the
	// resolver's floor too), started first, in parallel with the rest.
	var late sync.WaitGroup
	for i := 0; i < 4; i++ {
		late.Add(1)
		go func() {
			defer late.Done()
			check(resolveAndConnect(t, s, "stale.flip.test", 15*time.Second))
		}()
		time.Sleep(700 * time.Millisecond)
	}
	// 200 clients connecting at once, ten at a time.
	names := []string{"perquery.flip.test", "perperiod.flip.test"}
	for batch := 0; batch < 20; batch++ {
		var wg sync.WaitGroup
		for i := 0; i < 10; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				check(resolveAndConnect(t, s, names[(batch*10+i)%2], 0))
			}()
		}
		wg.Wait()
	}
	late.Wait()
	t.Logf("204 connections: %d false denies, %d allowed through grace", len(falseDenies), grace)
	for _, fd := range falseDenies {
		t.Errorf("false deny: %s", fd)
	}
	if grace == 0 {
		t.Errorf("no client connected after its TTL was allowed through grace: the late clients did not test it")
	}

	// An address the name never had: denied.
	d, err := tlsHandshake(t, s, lab.BannerAddr+":443", "perquery.flip.test")
	if err == nil || d.Verdict != "deny" || d.Reason != "dns-mismatch" {
		t.Fatalf("an address the name never had: handshake %v, decision %s", err, d)
	}
}

// TestDNSGraceEnds: an address that left the name is still verified within
// verify_dns.grace after its TTL, and denied once the grace has passed.
func TestDNSGraceEnds(t *testing.T) {
	s := start(t, flipPolicy, lab.Rules{}, lab.EgressdOptions{Env: []string{"EGRESSD_VERIFY_DNS_GRACE=4s"}})
	s.DNS.SetAddrs("moved.flip.test", 5, flipAddrs[0])
	if d, _ := tlsHandshake(t, s, lab.ServerAddr+":443", "moved.flip.test"); d.Verdict != "allow" {
		t.Fatalf("before the move: %s", d)
	}
	moved := time.Now()
	s.DNS.SetAddrs("moved.flip.test", 5, flipAddrs[1])
	// egressd's answer (TTL 5 s) ends within 5 s of the move; the old
	// address is in grace for 4 s after that.
	time.Sleep(time.Until(moved.Add(6 * time.Second)))
	if d, _ := tlsHandshake(t, s, lab.ServerAddr+":443", "moved.flip.test"); d.Verdict != "allow" || d.DNSCheck != "grace" {
		t.Fatalf("within the grace: %s", d)
	}
	time.Sleep(time.Until(moved.Add(10*time.Second + 500*time.Millisecond)))
	d, err := tlsHandshake(t, s, lab.ServerAddr+":443", "moved.flip.test")
	if err == nil || d.Verdict != "deny" || d.Reason != "dns-mismatch" {
		t.Fatalf("past the grace: handshake %v, decision %s", err, d)
	}
	if d, _ := tlsHandshake(t, s, lab.OtherAddr+":443", "moved.flip.test"); d.Verdict != "allow" {
		t.Fatalf("the new address: %s", d)
	}
}
