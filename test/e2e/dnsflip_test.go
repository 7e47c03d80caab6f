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
//
// The literal names are watched: egressd refreshes them every half TTL.
// late.stale.flip.test is under a wildcard, so it is not: egressd knows of
// it only what flows taught it, and a client's copy of an answer can
// outlive egressd's (a watched name flipping within its TTL keeps every
// address fresh in egressd's cache, leaving nothing for grace to do).
const flipPolicy = `
version: 1
default: deny
rules:
  - {name: flip, domains: [perquery.flip.test, perperiod.flip.test, "*.stale.flip.test", moved.flip.test], ports: [443], action: allow}
`

// helloTimeout is hello.timeout, the lab's default: no decision may take
// longer.
const helloTimeout = 3 * time.Second

var flipAddrs = []netip.Addr{netip.MustParseAddr(lab.ServerAddr), netip.MustParseAddr(lab.OtherAddr)}

// waitAsked waits until egressd has asked the lab's resolver for A and
// AAAA of each of names since the test set their records, before any
// client does: the refresher asks for a watched name at egressd's start,
// which may have come before the records, and then holds that NXDOMAIN
// for the negative TTL (5 s), asking again after half of it. (A fresh
// NXDOMAIN denies whenever the flow began, by design: a random label
// under a wildcard costs one lookup. It is not what these tests are
// about.)
func waitAsked(t *testing.T, s *setup, names ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, name := range names {
		for s.DNS.Served(name, dns.TypeA) == 0 || s.DNS.Served(name, dns.TypeAAAA) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("egressd did not ask for %s within 10s of its records being set", name)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// The answers were sent; they reach egressd's cache within a
	// millisecond, and a client's hello takes longer than that.
	time.Sleep(50 * time.Millisecond)
}

// resolveAndConnect is a client that resolves name (its own query to the
// lab's resolver) and connects at once to the first address it got with
// the name in its hello. It returns the decision and the address.
func resolveAndConnect(t *testing.T, s *setup, name string) (lab.Decision, string) {
	t.Helper()
	addrs, err := s.DNS.Lookup(name, dns.TypeA)
	if err != nil || len(addrs) == 0 {
		t.Fatalf("the client's lookup of %s: %v %v", name, addrs, err)
	}
	return connect(t, s, name, addrs[0].String())
}

// connect connects to addr with name in the hello and returns the
// decision and addr.
func connect(t *testing.T, s *setup, name, addr string) (lab.Decision, string) {
	t.Helper()
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
// connect at once to the address they were given, and a few connect once
// at once and again ten seconds after their answer's TTL ran out (a
// client's own cache, as the JVM keeps one): none may be denied, none may
// wait for its decision as long as hello.timeout. An address the name
// never had stays denied.
func TestDNSFlipNoFalseDenies(t *testing.T) {
	const late = "late.stale.flip.test"
	s := start(t, flipPolicy, lab.Rules{}, lab.EgressdOptions{})
	s.DNS.SetFlip("perquery.flip.test", 60, 0, flipAddrs...)
	s.DNS.SetFlip("perperiod.flip.test", 60, 300*time.Millisecond, flipAddrs...)
	s.DNS.SetFlip(late, 5, 3*time.Second, flipAddrs...)
	waitAsked(t, s, "perquery.flip.test", "perperiod.flip.test")

	var mu sync.Mutex
	var falseDenies []string
	var conns, grace int
	var worst lab.Decision
	check := func(d lab.Decision, addr string) {
		mu.Lock()
		defer mu.Unlock()
		conns++
		if d.Verdict != "allow" {
			falseDenies = append(falseDenies, fmt.Sprintf("%s at %s: %s", d.Name, addr, d.Raw))
		}
		if d.DNSCheck == "grace" {
			grace++
		}
		if d.LatencyUS > worst.LatencyUS {
			worst = d
		}
	}
	// Clients that keep their answer 10 s past its TTL (5 s, the
	// resolver's floor too), started first, in parallel with the rest:
	// the connection at once teaches egressd the address, which has
	// expired in its cache by the second one (the name flipped since).
	var lates sync.WaitGroup
	for i := 0; i < 4; i++ {
		lates.Add(1)
		go func() {
			defer lates.Done()
			d, addr := resolveAndConnect(t, s, late)
			check(d, addr)
			time.Sleep(15 * time.Second)
			check(connect(t, s, late, addr))
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
				check(resolveAndConnect(t, s, names[(batch*10+i)%2]))
			}()
		}
		wg.Wait()
	}
	lates.Wait()
	t.Logf("%d connections: %d false denies, %d allowed through grace; the slowest decision took %v: %s",
		conns, len(falseDenies), grace, time.Duration(worst.LatencyUS)*time.Microsecond, worst.Raw)
	for _, fd := range falseDenies {
		t.Errorf("false deny: %s", fd)
	}
	if grace == 0 {
		t.Errorf("no client connected after its TTL was allowed through grace: the late clients did not test it")
	}
	if time.Duration(worst.LatencyUS)*time.Microsecond >= helloTimeout {
		t.Errorf("a decision took as long as hello.timeout (%v): %s", helloTimeout, worst.Raw)
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
	waitAsked(t, s, "moved.flip.test")
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
