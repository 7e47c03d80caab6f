package engine

import (
	"net/netip"
	"testing"
	"time"

	"github.com/egressd/egressd/pkg/policy"
)

var (
	attacker = netip.MustParseAddr("10.0.1.66")
	victim   = netip.MustParseAddr("10.0.2.7")
)

func (h *harness) tcpFrom(src, dst netip.Addr, dport uint16) *tcpFlow {
	f := h.tcp(dst, dport)
	f.src = src
	return f
}

// TestFlowTableFairShare: one source fills the flow table with bare SYNs;
// another source's flows still get in, each taking the room of the
// flooder's oldest flow; the flooder's next flow is refused; and a flow
// the policy decides on its first packet never needs the table.
func TestFlowTableFairShare(t *testing.T) {
	h := newHarness(t, labPolicy, func(c *Config) { c.MaxFlows = 8 })
	var flood []*tcpFlow
	for i := 0; i < 8; i++ {
		f := h.tcpFrom(attacker, server, 443)
		h.wantPassed(f.syn())
		flood = append(flood, f)
	}
	h.wantVerdict(h.tcpFrom(attacker, server, 443).syn(), policy.Deny) // over its share of a full table
	if n := h.e.Stats().Limited(LimitFlows); n != 1 {
		t.Fatalf("Limited(flows) = %d", n)
	}
	// The victim's SYN gets in: the flooder's oldest flow is denied.
	v := h.tcpFrom(victim, server, 443)
	h.wantPassed(v.syn())
	if c := h.rec.concluded[flood[0].sport]; c != policy.Deny {
		t.Fatalf("the flooder's oldest flow was not denied (%v)", c)
	}
	if n := h.e.Stats().Limited(LimitEvicted); n != 1 {
		t.Fatalf("Limited(evicted) = %d", n)
	}
	h.wantVerdict(v.send(clientHello(t, "allowed.example.test")), policy.Allow)
	// A CIDR-allowed flow is decided on its SYN whatever the table holds.
	h.wantVerdict(h.tcpFrom(victim, netip.MustParseAddr("198.51.100.9"), 22).syn(), policy.Allow)
	// The victim keeps getting in up to its share (half the table: 4).
	for i := 0; i < 4; i++ {
		h.wantPassed(h.tcpFrom(victim, server, 443).syn())
	}
	h.wantVerdict(h.tcpFrom(victim, server, 443).syn(), policy.Deny)
	// Evicted: the first victim SYN's room, and three of the four after
	// (the first fit the room its decided flow left).
	top := h.e.TopLimited(5)
	if len(top[LimitFlows]) != 2 || len(top[LimitEvicted]) != 1 || top[LimitEvicted][0] != (SourceCount{attacker, 4}) {
		t.Errorf("top sources: %+v", top)
	}
	if again := h.e.TopLimited(5); len(again) != 0 {
		t.Errorf("the window did not start again: %+v", again)
	}
}

// TestHeldPoolFairShare: a source whose flows hold packets fills the held
// pool; another source's held packets still fit, the flooder's oldest
// flows denied for them; the pool never holds more than its cap.
func TestHeldPoolFairShare(t *testing.T) {
	h := newHarness(t, labPolicy, func(c *Config) { c.MaxHeldTotal = 10; c.MaxHeld = 64 })
	hello := clientHello(t, "allowed.example.test")
	for i := 0; i < 3; i++ {
		f := h.tcpFrom(attacker, server, 443)
		f.syn()
		for j := 0; j < 4; j++ {
			f.send(hello[:1]) // the same byte again and again: held
			f.offset = 0
		}
	}
	if used := h.s.pools.used[ResHeld]; used > 10 {
		t.Fatalf("held pool %d over its cap 10", used)
	}
	v := h.tcpFrom(victim, server, 443)
	v.syn()
	a := v.send(hello[:100])
	b := v.send(hello[100:200])
	h.wantHeld(a)
	h.wantHeld(b)
	h.wantVerdict(v.send(hello[200:]), policy.Allow)
	h.wantVerdict(a, policy.Allow)
	if h.e.Stats().Limited(LimitHeld) == 0 || h.s.pools.used[ResHeld] > 10 {
		t.Errorf("held limits %d, pool %d", h.e.Stats().Limited(LimitHeld), h.s.pools.used[ResHeld])
	}
}

// TestVerifyRatePerSource: a source past its lookups per second is denied
// limit; another source's lookup still runs; the bucket refills.
func TestVerifyRatePerSource(t *testing.T) {
	v := &fakeVerifier{known: map[string]netip.Addr{}, release: make(chan struct{})}
	close(v.release)
	h := newHarness(t, labPolicy, func(c *Config) { c.Verifier = v; c.VerifyRate = 1; c.VerifyBurst = 2 })
	send := func(src netip.Addr, name string) {
		f := h.tcpFrom(src, server, 443)
		f.syn()
		f.send(clientHello(t, name))
		h.e.verifyWG.Wait()
	}
	send(attacker, "a.api.example.test")
	send(attacker, "b.api.example.test")
	send(attacker, "c.api.example.test")
	if n := h.e.Stats().Limited(LimitVerifyRate); n != 1 {
		t.Fatalf("Limited(dns_rate) = %d after 3 lookups with a burst of 2", n)
	}
	if v.calls != 2 {
		t.Fatalf("%d lookups, want 2", v.calls)
	}
	send(victim, "d.api.example.test")
	if v.calls != 3 {
		t.Fatalf("the other source's lookup did not run")
	}
	h.clock.Add(time.Second)
	send(attacker, "e.api.example.test")
	if v.calls != 4 {
		t.Fatalf("the bucket did not refill")
	}
}
